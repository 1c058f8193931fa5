#pragma once
// Internal: iteration over a broadcast of up to three contiguous operands into a contiguous output.
// Dims are coalesced first, so [M, N] + [M, N] is one flat loop and [M, N] + [N] is M rows of a
// contiguous inner loop; the kernels dispatch on the inner strides (0 or 1) so every inner loop vectorises.
#include <array>
#include <cstdint>

#include "../core/parallel.hpp"
#include "../core/shape.hpp"

namespace unroll::detail {

struct BroadcastPlan {
  static constexpr int kMaxOperands = 4;  // up to three inputs and the output
  int rank = 0;                           ///< after coalescing; the last dim is the inner loop
  int operands = 0;
  // Only entries below `rank` / `operands` are meaningful; left uninitialised on purpose (zero-filling
  // these ~600 bytes was a visible share of a small op's cost).
  std::array<std::int64_t, Shape::kMaxDims> size;
  std::array<std::array<std::int64_t, Shape::kMaxDims>, kMaxOperands> stride;  ///< 0 where broadcast
  std::int64_t rows() const;                                                   ///< number of inner loops
  std::int64_t inner() const { return rank ? size[rank - 1] : 1; }
};

/// `out` must be the broadcast of the operand shapes.
BroadcastPlan make_plan(const Shape& out, std::initializer_list<const Shape*> operands);

/// Calls row(offsets, n, inner_strides) for every inner loop; offsets/inner_strides index the operands.
/// Rows run in parallel when the total work exceeds the elementwise grain.
template <class Row>
void for_each_row(const BroadcastPlan& p, Row&& row) {
  const std::int64_t inner = p.inner(), rows = p.rows();
  std::array<std::int64_t, BroadcastPlan::kMaxOperands> inner_stride{};
  for (int k = 0; k < p.operands; ++k) inner_stride[k] = p.rank ? p.stride[k][p.rank - 1] : 0;
  auto run = [&](std::int64_t r0, std::int64_t r1) {
    std::array<std::int64_t, Shape::kMaxDims> idx{};
    std::int64_t rem = r0;  // unravel r0 over the outer dims
    for (int d = p.rank - 2; d >= 0; --d) {
      idx[d] = rem % p.size[d];
      rem /= p.size[d];
    }
    for (std::int64_t r = r0; r < r1; ++r) {
      std::array<std::int64_t, BroadcastPlan::kMaxOperands> off{};
      for (int k = 0; k < p.operands; ++k)
        for (int d = 0; d + 1 < p.rank; ++d) off[k] += idx[d] * p.stride[k][d];
      row(off, inner, inner_stride);
      for (int d = p.rank - 2; d >= 0; --d) {
        if (++idx[d] < p.size[d]) break;
        idx[d] = 0;
      }
    }
  };
  if (rows == 1) {  // one long inner loop: split it instead
    parallel_for(inner, kElementwiseGrain, [&](std::int64_t b, std::int64_t e) {
      std::array<std::int64_t, BroadcastPlan::kMaxOperands> off{};
      for (int k = 0; k < p.operands; ++k) off[k] = b * inner_stride[k];
      row(off, e - b, inner_stride);
    });
  } else {
    parallel_for(rows, std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(inner, 1)), run);
  }
}

}  // namespace unroll::detail
