#include "context.hpp"

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace unroll::dist {
namespace {
int g_contexts = 0;         // live Contexts in this process
bool g_we_initialised = false;

// An MPI call that failed: MPI's own error text (the communicator's handler returns codes: see Context()).
void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(fmt::format("dist: {} failed; got MPI error {}: {}", what, rc, std::string(text, static_cast<std::size_t>(len))));
}

MPI_Datatype mpi_type(const char* op, Dtype d) {
  switch (d) {
    case Dtype::float32: return MPI_FLOAT;
    case Dtype::float64: return MPI_DOUBLE;
    case Dtype::int64: return MPI_INT64_T;
    default: break;
  }
  throw DtypeError(fmt::format("{}: unsupported dtype; got {}, expected float32, float64 or int64", op, d));
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
    case ReduceOp::mean: return MPI_SUM;
    case ReduceOp::max: return MPI_MAX;
    case ReduceOp::min: return MPI_MIN;
  }
  return MPI_SUM;
}

int as_int(std::int64_t n, const char* op) {
  UNROLL_CHECK(n <= INT_MAX, ValueError, "{}: too many elements for one MPI call; got {}, expected at most {}", op, n,
               INT_MAX);
  return static_cast<int>(n);
}

// out[k] = in[0][k] op in[1][k] op ... in rank order (the deterministic reduction of one rank's chunk).
template <class T>
void reduce_in_rank_order(const T* in, std::int64_t chunk, int ranks, ReduceOp op, T* out) {
  for (std::int64_t k = 0; k < chunk; ++k) out[k] = in[k];
  for (int r = 1; r < ranks; ++r) {
    const T* src = in + r * chunk;
    switch (op) {
      case ReduceOp::sum:
      case ReduceOp::mean:
        for (std::int64_t k = 0; k < chunk; ++k) out[k] += src[k];
        break;
      case ReduceOp::max:
        for (std::int64_t k = 0; k < chunk; ++k) out[k] = std::max(out[k], src[k]);
        break;
      case ReduceOp::min:
        for (std::int64_t k = 0; k < chunk; ++k) out[k] = std::min(out[k], src[k]);
        break;
    }
  }
}

// A fingerprint of the tensors' shapes and dtypes, equal on two ranks exactly when their lists agree
// (up to hash collisions, which would need a deliberately crafted shape list).
std::uint64_t layout_hash(std::span<const Tensor> tensors) {
  std::uint64_t h = 1469598103934665603ULL;  // FNV-1a over (count, dtype, rank, dims...)
  auto mix = [&](std::uint64_t v) {
    for (int b = 0; b < 8; ++b) h = (h ^ ((v >> (8 * b)) & 0xff)) * 1099511628211ULL;
  };
  mix(tensors.size());
  for (const Tensor& t : tensors) {
    mix(t.defined() ? 1 : 0);
    if (!t.defined()) continue;
    mix(static_cast<std::uint64_t>(t.dtype()));
    mix(static_cast<std::uint64_t>(t.dim()));
    for (int d = 0; d < t.dim(); ++d) mix(static_cast<std::uint64_t>(t.shape()[d]));
  }
  return h;
}
}  // namespace

Context::Context() : uncaught_(std::uncaught_exceptions()) {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  UNROLL_CHECK(!finalised, StateError,
               "dist::Context: MPI has been finalised; got a Context made after the last one was destroyed, expected "
               "one Context (or nested ones) for the whole program (MPI can be initialised once per process)");
  if (!initialised) {
    int provided = 0;
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    g_we_initialised = true;
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      throw StateError(fmt::format("dist::Context: this MPI gives thread level {}, expected at least "
                                   "MPI_THREAD_FUNNELED (the calling thread makes MPI calls while worker threads run)",
                                   provided));
    }
    // Errors come back as codes (check_mpi turns them into exceptions) instead of aborting the job silently.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ++g_contexts;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
}

Context::~Context() {
  if (std::uncaught_exceptions() > uncaught_ && size_ > 1) {
    // Unwinding past this Context: the peers may be inside a collective that this rank will never join.
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  if (--g_contexts == 0 && g_we_initialised) {
    int finalised = 0;
    MPI_Finalized(&finalised);
    if (!finalised) MPI_Finalize();
    g_we_initialised = false;
  }
}

void Context::barrier() const { check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

std::vector<std::uint64_t> Context::all_gather(std::uint64_t value) const {
  std::vector<std::uint64_t> all(static_cast<std::size_t>(size_));
  check_mpi(MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD), "MPI_Allgather");
  return all;
}

namespace {
// ShapeError on every rank when the tensors' shapes or dtypes differ between ranks (compared with `root`).
void check_same_layout(const Context& ctx, const char* op, std::span<const Tensor> tensors, int root) {
  const std::vector<std::uint64_t> all = ctx.all_gather(layout_hash(tensors));
  for (int r = 0; r < ctx.world_size(); ++r)
    UNROLL_CHECK(all[static_cast<std::size_t>(r)] == all[static_cast<std::size_t>(root)], ShapeError,
                 "{}: the ranks' tensors differ; got rank {}'s shapes or dtypes different from rank {}'s ({} tensors "
                 "here), expected the same tensors on every rank",
                 op, r, root, tensors.size());
}
}  // namespace

void Context::broadcast_(std::span<Tensor> tensors, int root) const {
  UNROLL_CHECK(root >= 0 && root < size_, ValueError, "broadcast_: no such root rank; got {}, expected 0 <= root < {}",
               root, size_);
  // The layouts first (a collective every rank reaches): a check that failed on one rank only would leave
  // the others waiting; after it, the tensors are alike everywhere, so the checks below fail on every rank.
  if (size_ > 1) check_same_layout(*this, "broadcast_", tensors, root);
  for (const Tensor& t : tensors) {
    UNROLL_CHECK(t.defined(), ValueError, "broadcast_: undefined tensor; got an undefined tensor, expected a tensor");
    mpi_type("broadcast_", t.dtype());
  }
  if (size_ == 1) return;
  for (Tensor& t : tensors) {
    if (t.numel() == 0) continue;
    check_mpi(MPI_Bcast(t.raw(), as_int(t.numel(), "broadcast_"), mpi_type("broadcast_", t.dtype()), root,
                        MPI_COMM_WORLD),
              "MPI_Bcast");
  }
}

void Context::broadcast_(std::string& bytes, int root) const {
  // Its length first (the others' are unknown to them: the maximum is the root's), then the bytes as int64 words.
  std::uint64_t size = rank_ == root ? bytes.size() : 0;
  all_reduce_buffer(&size, 1, Dtype::int64, {.op = ReduceOp::max, .deterministic = true});
  Tensor words[] = {Tensor::empty({static_cast<std::int64_t>(size / 8 + 1)}, Dtype::int64)};
  if (rank_ == root) std::memcpy(words[0].raw(), bytes.data(), size);
  broadcast_(words, root);
  bytes.assign(static_cast<const char*>(words[0].raw()), size);
}

void Context::all_reduce_buffer(void* data, std::int64_t count, Dtype dtype, ReduceOptions o) const {
  const MPI_Datatype type = mpi_type("all_reduce_", dtype);
  UNROLL_CHECK(o.op != ReduceOp::mean || is_floating(dtype), DtypeError,
               "all_reduce_: mean needs a floating dtype; got {}, expected float32 or float64", dtype);
  const std::size_t elem = dtype_size(dtype);
  // Slices of at most 2^28 elements: every count and displacement below fits MPI's int.
  constexpr std::int64_t kSlice = std::int64_t{1} << 28;
  for (std::int64_t begin = 0; size_ > 1 && begin < count; begin += kSlice) {
    const std::int64_t n = std::min(kSlice, count - begin);
    unsigned char* slice = static_cast<unsigned char*>(data) + static_cast<std::size_t>(begin) * elem;
    if (!o.deterministic) {
      check_mpi(MPI_Allreduce(MPI_IN_PLACE, slice, as_int(n, "all_reduce_"), type, mpi_op(o.op), MPI_COMM_WORLD),
                "MPI_Allreduce");
      continue;
    }
    // Rank j owns chunk j: every rank sends it its piece (all-to-all), j reduces the pieces in rank order,
    // then every rank gathers the reduced chunks. Same result on every rank, whatever MPI's algorithms.
    const auto ranks = static_cast<std::size_t>(size_);
    std::vector<int> counts(ranks), displs(ranks), recv_counts(ranks), recv_displs(ranks);
    std::int64_t at = 0;
    for (std::size_t j = 0; j < ranks; ++j) {
      counts[j] = as_int(n / size_ + (static_cast<std::int64_t>(j) < n % size_ ? 1 : 0), "all_reduce_");
      displs[j] = as_int(at, "all_reduce_");
      at += counts[j];
    }
    const int mine = counts[static_cast<std::size_t>(rank_)];
    for (std::size_t i = 0; i < ranks; ++i)
      recv_counts[i] = mine, recv_displs[i] = as_int(static_cast<std::int64_t>(i) * mine, "all_reduce_");
    std::vector<unsigned char> pieces(static_cast<std::size_t>(mine) * ranks * elem);
    check_mpi(MPI_Alltoallv(slice, counts.data(), displs.data(), type, pieces.data(), recv_counts.data(),
                            recv_displs.data(), type, MPI_COMM_WORLD),
              "MPI_Alltoallv");
    void* own = slice + static_cast<std::size_t>(displs[static_cast<std::size_t>(rank_)]) * elem;
    dispatch(dtype, [&]<class T>(T*) {
      reduce_in_rank_order(reinterpret_cast<const T*>(pieces.data()), mine, size_, o.op, static_cast<T*>(own));
    });
    check_mpi(MPI_Allgatherv(MPI_IN_PLACE, 0, type, slice, counts.data(), displs.data(), type, MPI_COMM_WORLD),
              "MPI_Allgatherv");
  }
  if (o.op == ReduceOp::mean && size_ > 1)
    dispatch(dtype, [&]<class T>(T*) {
      if constexpr (std::is_floating_point_v<T>) {
        T* p = static_cast<T*>(data);
        const T ranks = static_cast<T>(size_);
        for (std::int64_t k = 0; k < count; ++k) p[k] /= ranks;
      }
    });
}

void Context::all_reduce_(std::span<Tensor> tensors, ReduceOptions o) const {
  if (size_ > 1) check_same_layout(*this, "all_reduce_", tensors, 0);  // first: see broadcast_
  for (const Tensor& t : tensors) {
    UNROLL_CHECK(t.defined(), ValueError, "all_reduce_: undefined tensor; got an undefined tensor, expected a tensor");
    mpi_type("all_reduce_", t.dtype());
  }
  // One packed buffer per dtype: a model of many small tensors makes one call per dtype, not one per tensor.
  for (Dtype d : {Dtype::float32, Dtype::float64, Dtype::int64}) {
    std::int64_t total = 0;
    for (const Tensor& t : tensors)
      if (t.dtype() == d) total += t.numel();
    if (total == 0) continue;
    const std::size_t elem = dtype_size(d);
    std::vector<unsigned char> buf(static_cast<std::size_t>(total) * elem);
    std::size_t at = 0;
    for (const Tensor& t : tensors)
      if (t.dtype() == d) {
        std::memcpy(buf.data() + at, t.raw(), static_cast<std::size_t>(t.numel()) * elem);
        at += static_cast<std::size_t>(t.numel()) * elem;
      }
    all_reduce_buffer(buf.data(), total, d, o);
    at = 0;
    for (Tensor& t : tensors)
      if (t.dtype() == d) {
        std::memcpy(t.raw(), buf.data() + at, static_cast<std::size_t>(t.numel()) * elem);
        at += static_cast<std::size_t>(t.numel()) * elem;
      }
  }
}

void Context::agree(unroll::detail::FunctionRef<void()> fn) const {
  std::exception_ptr error;
  std::string message;
  try {
    fn();
  } catch (const std::exception& e) {
    error = std::current_exception();
    message = e.what();
  } catch (...) {
    error = std::current_exception();
    message = "an exception that is not a std::exception";
  }
  // Each rank's message length (0: it succeeded) and error code, then the lowest failing rank's message to
  // everyone. (A world of one throws the same RankError: the caller's handling does not depend on its size.)
  int code = error ? 1 : 0;
  if (error && error_code) try {  // the caller's classifier must not keep this rank from the gather below
      code = error_code(error);
    } catch (...) {
      code = 1;
    }
  const std::vector<std::uint64_t> codes = all_gather(static_cast<std::uint64_t>(static_cast<std::uint32_t>(code)));
  const std::vector<std::uint64_t> lengths = all_gather(error ? message.size() + 1 : 0);
  int failed = -1, others = 0;
  for (int r = 0; r < size_; ++r)
    if (lengths[static_cast<std::size_t>(r)] > 0) (failed < 0 ? failed = r : ++others);
  if (failed < 0) return;
  std::string text(lengths[static_cast<std::size_t>(failed)], '\0');
  if (rank_ == failed) std::memcpy(text.data(), message.c_str(), text.size());
  check_mpi(MPI_Bcast(text.data(), as_int(static_cast<std::int64_t>(text.size()), "agree"), MPI_CHAR, failed,
                      MPI_COMM_WORLD),
            "MPI_Bcast");
  text.pop_back();  // the terminating NUL
  throw RankError(fmt::format("rank {} of {}: {}{}", failed, size_, text,
                              others > 0 ? fmt::format(" (and {} more rank(s) failed)", others) : std::string()),
                  failed, rank_ == failed ? error : nullptr,
                  static_cast<int>(static_cast<std::uint32_t>(codes[static_cast<std::size_t>(failed)])));
}

void Context::abort(int code, const std::string& message) const {
  if (!message.empty()) std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this is for the compiler
}

}  // namespace unroll::dist
