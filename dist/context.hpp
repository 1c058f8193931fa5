#pragma once
// Processes: the MPI world a data-parallel job runs in (Open MPI from Debian; optional component, CMake option
// UNROLL_WITH_MPI, target unroll::dist). Threads inside a process stay as they are (autograd::sharded_backward);
// processes — on one machine or many — add a second level.
//
//   dist::Context ctx;                      // MPI_Init_thread; a program not started by mpirun is a world of 1
//   ctx.broadcast_(params, 0);              // every rank starts from rank 0's values
//   ctx.all_reduce_(grads);                 // every rank gets the sum, bit-identical on all ranks
//   ctx.agree([&] { load_my_part(); });     // a rank that throws stops every rank with its message
//
// Collectives act on unroll tensors of float32, float64 or int64 (contiguous, as every tensor is). Every rank
// must call the same collectives in the same order with tensors of the same shapes; shapes are compared first
// where a mismatch would otherwise corrupt memory or hang (broadcast_, all_reduce_), and refused with a
// ShapeError naming the ranks.
//
// Failures: MPI has no exceptions. A rank that throws between collectives would leave its peers waiting in the
// next one for ever, so code that may throw on one rank only (reading a file, a step's forward and backward)
// runs inside agree(): afterwards every rank knows whether any failed, and all throw the same RankError naming
// the lowest failing rank and its message. A Context destroyed while an exception unwinds calls MPI_Abort (the
// peers may be waiting), so an error that escapes anyway still ends the whole job instead of hanging it.
#include <cstdint>
#include <exception>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "../core/parallel.hpp"
#include "../core/tensor.hpp"

namespace unroll::dist {

enum class ReduceOp { sum, mean, max, min };

struct ReduceOptions {
  ReduceOp op = ReduceOp::sum;
  /// Bit-identical on every rank and from run to run: each rank sums (or maxes) one chunk of the elements,
  /// in rank order 0, 1, 2, ..., then the chunks are gathered (an all-to-all and an all-gather: the same bytes
  /// per rank as a ring all-reduce, 2 (N-1)/N of the buffer). false: MPI_Allreduce, whose summation order is
  /// MPI's choice (it may differ between runs and, for some algorithms, between ranks).
  bool deterministic = true;
};

/// A rank failed inside Context::agree(): thrown on every rank, with the same message
/// "rank R of N: <the failing rank's message>".
class RankError : public Error {
 public:
  RankError(const std::string& message, int failed_rank, std::exception_ptr original, int code)
      : Error(message), failed_rank_(failed_rank), original_(std::move(original)), code_(code) {}
  /// The rank whose exception this is (the lowest, when several failed).
  int failed_rank() const { return failed_rank_; }
  /// That rank's own exception, on that rank; null on the others.
  std::exception_ptr original() const { return original_; }
  /// What Context::error_code said of that exception on that rank (1 without one): e.g. the exit code every
  /// rank of a program should end with.
  int code() const { return code_; }

 private:
  int failed_rank_;
  std::exception_ptr original_;
  int code_;
};

class Context {
 public:
  /// Initialises MPI (MPI_Init_thread with MPI_THREAD_FUNNELED: only the thread that made the Context calls
  /// MPI) unless it already is; nested Contexts share it. A program not launched by mpirun runs as a world of
  /// one (Open MPI's singleton mode), where every collective is a copy or nothing.
  Context();
  /// MPI_Finalize when the last Context goes; MPI_Abort instead while an exception unwinds.
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return size_; }
  bool is_root() const { return rank_ == 0; }

  void barrier() const;
  /// Every tensor takes `root`'s values. Shapes and dtypes must agree on all ranks (ShapeError naming the first
  /// rank that differs, on every rank).
  void broadcast_(std::span<Tensor> tensors, int root = 0) const;
  /// `bytes` takes `root`'s contents on every rank (any length; for layouts, names and other text).
  void broadcast_(std::string& bytes, int root = 0) const;
  /// Every tensor becomes the reduction over ranks of its values (see ReduceOptions). Shapes and dtypes must
  /// agree; mean needs a floating dtype. Tensors of one dtype are reduced together in one buffer.
  void all_reduce_(std::span<Tensor> tensors, ReduceOptions options = {}) const;
  /// Reduces `count` elements at `data` in place (the packed form all_reduce_ and dist::DataParallel use).
  void all_reduce_buffer(void* data, std::int64_t count, Dtype dtype, ReduceOptions options = {}) const;
  /// Gathers one value from every rank, in rank order.
  std::vector<std::uint64_t> all_gather(std::uint64_t value) const;

  /// Runs fn, then tells every rank whether any rank's fn threw. If one did, every rank throws RankError
  /// "rank R of N: <message>" for the lowest failing rank R (the others' count is added). A collective: every
  /// rank must call it.
  void agree(unroll::detail::FunctionRef<void()> fn) const;

  /// Classifies a failing rank's exception for RankError::code() (an exit code, say); every rank learns it.
  std::function<int(const std::exception_ptr&)> error_code;

  /// Ends the whole job now (MPI_Abort) with `code`, after printing `message` (if not empty) to stderr.
  [[noreturn]] void abort(int code, const std::string& message = {}) const;

 private:
  int rank_ = 0;
  int size_ = 1;
  int uncaught_ = 0;  ///< std::uncaught_exceptions() at construction
};

}  // namespace unroll::dist
