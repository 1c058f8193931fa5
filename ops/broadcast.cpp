#include "broadcast.hpp"

namespace unroll::detail {

std::int64_t BroadcastPlan::rows() const {
  std::int64_t r = 1;
  for (int d = 0; d + 1 < rank; ++d) r *= size[d];
  return r;
}

BroadcastPlan make_plan(const Shape& out, std::initializer_list<const Shape*> operands) {
  BroadcastPlan p;
  p.operands = static_cast<int>(operands.size());
  // Strides of each operand in the output's index space (0 where it broadcasts), size-1 output dims dropped.
  std::array<std::array<std::int64_t, Shape::kMaxDims>, BroadcastPlan::kMaxOperands> full;  // set below for d < rank
  int k = 0;
  for (const Shape* s : operands) {
    std::int64_t stride = 1;
    for (int d = out.dim() - 1; d >= 0; --d) {
      const int ds = d - (out.dim() - s->dim());
      const std::int64_t size = ds >= 0 ? (*s)[ds] : 1;
      full[k][d] = size == 1 ? 0 : stride;
      stride *= size;
    }
    ++k;
  }
  for (int d = 0; d < out.dim(); ++d) {
    if (out[d] == 1) continue;
    // Merge into the previous kept dim when every operand is laid out contiguously across the two.
    bool merge = p.rank > 0;
    for (int o = 0; o < p.operands && merge; ++o) merge = p.stride[o][p.rank - 1] == full[o][d] * out[d];
    if (merge) {
      p.size[p.rank - 1] *= out[d];
      for (int o = 0; o < p.operands; ++o) p.stride[o][p.rank - 1] = full[o][d];
    } else {
      p.size[p.rank] = out[d];
      for (int o = 0; o < p.operands; ++o) p.stride[o][p.rank] = full[o][d];
      ++p.rank;
    }
  }
  if (p.rank == 0) {  // a scalar or all-ones shape: one element
    p.rank = 1;
    p.size[0] = 1;
    for (int o = 0; o < p.operands; ++o) p.stride[o][0] = 0;
  }
  return p;
}

}  // namespace unroll::detail
