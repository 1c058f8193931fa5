#pragma once
// The affine map of a Linear layer as one op: y = x W^T + b with W stored [out, in] (PyTorch's layout).
// The transpose is a gemm flag, never a copy, and the bias is added in the same pass.
#include "../core/tensor.hpp"

namespace unroll {

/// x [..., in], weight [out, in], bias [out] (or undefined) -> [..., out].
/// Backward: dx = g W, dW = g^T x (rows of x flattened), db = sum of g's rows.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = {});

namespace detail {
/// out[r, :] (+)= bias for every row of a [rows, n] buffer (assign when `assign`, else add).
void add_bias_rows(Tensor& out, const Tensor& bias, bool assign);
/// acc[n] (+)= sum over rows of g [rows, n] (assign when `assign`).
void sum_rows_into(Tensor& acc, const Tensor& g, bool assign);
}  // namespace detail

}  // namespace unroll
