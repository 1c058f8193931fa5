#pragma once
// Small dtype-generic kernels that the engine itself needs (core cannot call ops).
#include "tensor.hpp"

namespace unroll::detail {
/// dst += src (same shape and dtype, both contiguous).
void accumulate(Tensor& dst, const Tensor& src);
}  // namespace unroll::detail
