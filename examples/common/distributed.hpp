#pragma once
// An example program's place in a data-parallel job (dist/, over MPI). Started by mpirun with several processes
// (or given --distributed), the program joins the job: every rank loads the same data and computes its slice of
// every batch (dist::DataParallel: same global batch, gradients summed over the ranks, bit-identical parameters
// everywhere); only rank 0 prints, writes metrics, plots and checkpoints; a rank that fails ends every rank with
// one message naming it. Started alone, it is the single process it always was, without touching MPI. Built
// without MPI (UNROLL_WITH_MPI=OFF), mpirun-started copies run as independent single processes: --distributed
// then says so and stops.
//
//   examples::Job& job = examples::join_job(kProgram, o.distributed);
//   job.agree([&] { /* setup that could fail on one rank only: reading the data, ... */ });
//   job.attach(model.parameters(), shards);          // every rank now holds rank 0's parameters
//   double loss = job.backward(B, loss_fn, {.shards = shards});
//   if (job.is_root()) write_metrics(...);
//   job.save_checkpoint(path, checkpoint);           // rank 0 writes, every rank waits
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <unroll/autograd/shard.hpp>
#include <unroll/core/checkpoint.hpp>

namespace unroll::examples {

class Job {
 public:
  ~Job();
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  /// True when this process is one of several ranks of an MPI job.
  bool active() const { return size_ > 1; }
  int rank() const { return rank_; }
  int world_size() const { return size_; }
  bool is_root() const { return rank_ == 0; }

  /// Runs fn on every rank and stops every rank (dist::RankError, reported once by guarded_main) if any threw.
  /// In a single process: fn().
  void agree(const std::function<void()>& fn) const;
  /// From now on backward() sums these parameters' gradients over the ranks; rank 0's values are broadcast now.
  void attach(const std::vector<Tensor>& params, int shards_per_rank);
  /// The global batch's forward and backward: autograd::sharded_backward in a single process; across ranks each
  /// computes its slice (options.shards per rank) and the gradients are summed (dist::DataParallel::backward).
  /// loss_fn sees global rows either way. Returns the global batch's mean loss.
  double backward(std::int64_t batch, const std::function<Tensor(const autograd::Shard&)>& loss_fn,
                  const autograd::ShardOptions& options);
  /// Rows [begin, end) of a global batch that this rank computes ([0, batch) in a single process).
  std::pair<std::int64_t, std::int64_t> slice(std::int64_t batch) const;
  /// The share of the last backward() spent summing gradients over the ranks (0 in a single process).
  double last_reduce_seconds() const;
  /// Sums the tensors over the ranks, in place and bit-identically on every rank; nothing in a single process.
  /// (To assemble per-rank rows into the whole batch's: each rank fills its rows of a zero tensor.)
  void sum_over_ranks(std::vector<Tensor>& tensors) const;
  /// The threads a rank should use when the user did not say: this machine's cores shared among the job's
  /// ranks on it (Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE), at least 1; num_threads() in a single process.
  int default_threads() const;
  /// Across ranks: a UsageError on every rank unless every rank's `fingerprint` of `what` (e.g. its copy of the
  /// data) equals rank 0's, naming the ranks that differ. Nothing in a single process.
  void check_same(std::uint64_t fingerprint, std::string_view what) const;
  /// Rank 0 runs `before` (a check with the program's own message) and reads the checkpoint, then sends it to
  /// every rank (dist::load_checkpoint); in a single process, both here.
  Checkpoint load_checkpoint(const std::string& path, const std::function<void()>& before) const;
  /// Rank 0 writes the checkpoint (atomically); every rank returns once it is complete.
  void save_checkpoint(const std::string& path, const Checkpoint& checkpoint) const;

  // For guarded_main: how this job reports an error that ended `program`, and its exit code. nullopt when the
  // job is not active (the usual single-process report applies).
  std::optional<int> report(std::string_view program, const std::exception_ptr& error, int code,
                            const std::string& message) const;

 private:
  friend Job& join_job(std::string_view program, bool requested);
  Job() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0;
  int size_ = 1;
  std::string program_;  ///< for messages
};

/// The process's Job, made on the first call: an MPI rank when started by mpirun with more than one process
/// (Open MPI's OMPI_COMM_WORLD_SIZE) or when `requested` (--distributed); otherwise a single process. On a
/// rank other than 0, stdout is discarded from here on (progress and results are rank 0's to print).
/// UsageError when `requested` but this build has no MPI.
Job& join_job(std::string_view program, bool requested);
/// The Job made by join_job, or null.
Job* current_job();
/// Whether this build can run under MPI (examples/common linked with unroll::dist).
bool have_mpi();

}  // namespace unroll::examples
