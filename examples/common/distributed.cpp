#include "distributed.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include <fmt/format.h>

#include "cli.hpp"
#include "error.hpp"

#include <unroll/core/parallel.hpp>

#ifdef UNROLL_EXAMPLES_MPI
#include <unroll/dist/checkpoint.hpp>
#include <unroll/dist/data_parallel.hpp>
#endif

namespace unroll::examples {

struct Job::Impl {
#ifdef UNROLL_EXAMPLES_MPI
  std::unique_ptr<dist::Context> ctx;
  std::unique_ptr<dist::DataParallel> dp;
#endif
};

namespace {
std::unique_ptr<Job> g_job;  // destroyed after main returns: MPI_Finalize once every rank is done

// Open MPI tells a process it was started by mpirun, and how many ranks there are.
int launched_ranks() {
  const char* n = std::getenv("OMPI_COMM_WORLD_SIZE");
  return n != nullptr ? std::atoi(n) : 0;
}
}  // namespace

bool have_mpi() {
#ifdef UNROLL_EXAMPLES_MPI
  return true;
#else
  return false;
#endif
}

Job* current_job() { return g_job.get(); }

Job::~Job() = default;

Job& join_job([[maybe_unused]] std::string_view program, bool requested) {
  if (g_job) return *g_job;
  g_job.reset(new Job());
  g_job->impl_ = std::make_unique<Job::Impl>();
  g_job->program_ = std::string(program);
  // Without MPI in this build, copies started by mpirun run as independent single processes (said once).
  if (!have_mpi() && !requested && launched_ranks() > 1)
    std::fprintf(stderr, "%.*s: started by mpirun, but this build has no MPI: each copy runs alone\n",
                 static_cast<int>(program.size()), program.data());
  const bool join = requested || (have_mpi() && launched_ranks() > 1);
  if (!join) return *g_job;
#ifdef UNROLL_EXAMPLES_MPI
  Job& job = *g_job;
  job.impl_->ctx = std::make_unique<dist::Context>();
  job.rank_ = job.impl_->ctx->rank();
  job.size_ = job.impl_->ctx->world_size();
  // Every rank learns the failing rank's exit code, so that all end alike.
  job.impl_->ctx->error_code = [](const std::exception_ptr& e) { return exit_code_of(e); };
  if (job.rank_ != 0) (void)std::freopen("/dev/null", "w", stdout);
  return job;
#else
  throw UsageError(fmt::format("{}: --distributed needs a build with MPI; got one without (UNROLL_WITH_MPI=OFF), "
                               "expected apt-get install libopenmpi-dev openmpi-bin and a rebuild",
                               program));
#endif
}

void Job::agree(const std::function<void()>& fn) const {
#ifdef UNROLL_EXAMPLES_MPI
  if (impl_->ctx) return impl_->ctx->agree(fn);
#endif
  fn();
}

void Job::attach(const std::vector<Tensor>& params, int shards_per_rank) {
#ifdef UNROLL_EXAMPLES_MPI
  if (impl_->ctx)
    impl_->dp = std::make_unique<dist::DataParallel>(*impl_->ctx, params,
                                                     dist::DataParallelOptions{.shards = shards_per_rank});
#else
  (void)params, (void)shards_per_rank;
#endif
}

double Job::backward(std::int64_t batch, const std::function<Tensor(const autograd::Shard&)>& loss_fn,
                     const autograd::ShardOptions& options) {
#ifdef UNROLL_EXAMPLES_MPI
  if (impl_->dp) return impl_->dp->backward(batch, loss_fn, options.seed);
#endif
  return autograd::sharded_backward(batch, loss_fn, options);
}

std::pair<std::int64_t, std::int64_t> Job::slice(std::int64_t batch) const {
#ifdef UNROLL_EXAMPLES_MPI
  if (impl_->dp) return impl_->dp->slice(batch);
#endif
  return {0, batch};
}

double Job::last_reduce_seconds() const {
#ifdef UNROLL_EXAMPLES_MPI
  if (impl_->dp) return impl_->dp->last_stats().reduce_seconds;
#endif
  return 0;
}

void Job::sum_over_ranks(std::vector<Tensor>& tensors) const {
#ifdef UNROLL_EXAMPLES_MPI
  if (impl_->ctx && active()) impl_->ctx->all_reduce_(tensors);
#else
  (void)tensors;
#endif
}

int Job::default_threads() const {
  if (!active()) return num_threads();
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int here = local != nullptr ? std::max(1, std::atoi(local)) : 1;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / here);
}

void Job::check_same(std::uint64_t fingerprint, std::string_view what) const {
#ifdef UNROLL_EXAMPLES_MPI
  if (!impl_->ctx || !active()) return;
  const std::vector<std::uint64_t> all = impl_->ctx->all_gather(fingerprint);  // the same on every rank
  std::vector<int> differ;
  for (int r = 1; r < size_; ++r)
    if (all[static_cast<std::size_t>(r)] != all[0]) differ.push_back(r);
  UNROLL_CHECK(differ.empty(), examples::UsageError,
               "{}: the ranks' {} differ; got rank(s) {} with other contents than rank 0's, expected the same file "
               "on every machine",
               program_, what, fmt::join(differ, ", "));
#else
  (void)fingerprint, (void)what;
#endif
}

Checkpoint Job::load_checkpoint(const std::string& path, const std::function<void()>& before) const {
#ifdef UNROLL_EXAMPLES_MPI
  if (impl_->ctx) return dist::load_checkpoint(*impl_->ctx, path, before);
#endif
  if (before) before();
  return unroll::load_checkpoint(path);
}

void Job::save_checkpoint(const std::string& path, const Checkpoint& checkpoint) const {
#ifdef UNROLL_EXAMPLES_MPI
  if (impl_->ctx) return dist::save_checkpoint(*impl_->ctx, path, checkpoint);
#endif
  unroll::save_checkpoint(path, checkpoint);
}

std::optional<int> Job::report(std::string_view program, const std::exception_ptr& error, int code,
                               const std::string& message) const {
#ifdef UNROLL_EXAMPLES_MPI
  if (!impl_->ctx) return std::nullopt;
  try {
    std::rethrow_exception(error);
  } catch (const dist::RankError& e) {  // (also in a world of one: --distributed without mpirun)
    // Every rank has it; the failing rank prints it (its text names the rank), all end with its code.
    if (e.failed_rank() == rank_)
      fmt::print(stderr, "{}{}\n", e.code() == 1 ? fmt::format("{}: internal error: ", program) : std::string(),
                 e.what());
    return e.code();
  } catch (...) {
  }
  if (!active()) return std::nullopt;
  // Not agreed: an error every rank met alike (a bad flag, a global loss that diverged) — or, rarely, one of this
  // rank alone (the programs agree on their data reading). Rank 0 reports it; the job ends here, since a peer
  // may be waiting in a collective this rank will not join. The others wait a moment first, so that rank 0's
  // message is out before an abort ends it.
  if (rank_ == 0) {
    fmt::print(stderr, "{}\n", message);
  } else {
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  std::fflush(stdout);
  std::fflush(stderr);
  impl_->ctx->abort(code);
#else
  (void)program, (void)error, (void)code, (void)message;
  return std::nullopt;
#endif
}

}  // namespace unroll::examples
