#pragma once
// Internal kernels shared by several op families (not recorded, no checks beyond what is stated).
#include "../core/tensor.hpp"

namespace unroll::detail {
/// Sum over dim `d`, keeping it with size 1.
Tensor sum_dim_keep(const Tensor& x, int d);
/// New uninitialised tensor shaped like x.
inline Tensor empty_like(const Tensor& x) { return Tensor::empty(x.shape(), x.dtype()); }
}  // namespace unroll::detail
