#pragma once
// Internal: a tape's deferred weight-gradient rows (GradSink::add_rows_product). A leaf's gradient pᵀq over
// few rows (linear's dW = dYᵀX for one step's batch) is not computed at once: the rows of p and q are copied
// into a per-leaf buffer, and ONE GEMM over up to kChunkRows of them runs when the buffer is full and at the
// end of backward — the T small per-step weight gradients of an unrolled loop become a few large products
// (docs/DESIGN.md, "The tape"). Only leaves qualify: an intermediate's gradient must be complete before its
// node runs, while a leaf's gradient is only ever added to during backward, so running products early is exact.
#include <cstdint>
#include <vector>

#include "../core/tensor.hpp"

namespace unroll::autograd {
class LeafGrads;  // autograd/tape.hpp
}  // namespace unroll::autograd

namespace unroll::detail {
using autograd::LeafGrads;

/// Bytes of deferred weight-gradient rows one tape may hold: a bound on the memory deferral adds (past it,
/// products run early). A variable so tests can lower it.
inline std::size_t kDeferredBytesLimit = std::size_t{256} << 20;

/// One tape's deferred rows, one buffer per leaf. `collect` (see Tape::collect_leaf_grads) is where the
/// products go: that LeafGrads' slots, or the leaves' `.grad` when null.
class DeferredRows {
 public:
  DeferredRows() = default;
  ~DeferredRows() { drop(); }
  DeferredRows(const DeferredRows&) = delete;
  DeferredRows& operator=(const DeferredRows&) = delete;

  /// Whether a leaf's product over `rows` rows of `bytes` (p and q together) is worth deferring.
  static bool wanted(std::int64_t rows, std::size_t bytes);
  /// Appends p [m, a] and q [m, b] (contiguous, the leaf's dtype, wanted()) to the leaf's rows; a full
  /// buffer's product runs first. With q_offset > 0 or q narrower than the leaf, q holds columns
  /// [q_offset, q_offset + b) of the leaf's [a, width] rows (the rest of each stored row is zero).
  void add(detail::LeafMeta& leaf, const Tensor& p, const Tensor& q, LeafGrads* collect, std::int64_t q_offset = 0);
  /// Runs every leaf's rows (one GEMM each into its gradient), then drops the buffers.
  void flush(LeafGrads* collect);
  /// Drops every buffer without running it (a cleared tape, a failed backward).
  void drop();

 private:
  // p [cap, a] and q [cap, b], rows [0, rows) filled.
  struct LeafRows {
    detail::LeafMeta* leaf;  ///< retained
    Tensor p, q;
    std::int64_t rows = 0;
  };
  // Adds the filled rows' product pᵀq to the leaf's gradient and empties them.
  void run(LeafRows& d, LeafGrads* collect);

  std::vector<LeafRows> leaves_;  ///< in the order their first rows arrived
  std::size_t bytes_ = 0;         ///< of their buffers
};

/// Rows of a tensor read as a matrix [leading dims folded, last dim].
inline std::int64_t rows_of(const Tensor& t) { return t.shape().numel(0, t.dim() - 1); }
/// C [a, b] = pᵀq (+ C when accumulating), p [rows, a] and q [rows, b] contiguous. With c_offset, or C wider
/// than q, the product goes to columns [c_offset, c_offset + b) of C.
void rows_product(const Tensor& p, const Tensor& q, bool accumulate, Tensor& c, std::int64_t c_offset = 0);
/// Makes a gradient buffer safe to write into: never through storage someone else holds (it is copied
/// first); an undefined one becomes a new buffer, zeros if asked. True when that new buffer is
/// uninitialised (the caller must write it, e.g. beta = 0).
bool make_writable(Tensor& dst, const Shape& shape, Dtype dtype, bool zero_fill);
}  // namespace unroll::detail
