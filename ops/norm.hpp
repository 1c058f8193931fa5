#pragma once
// Layer normalisation as one op (mean and variance per row in one pass, backward by hand).
#include <cstdint>

#include "../core/tensor.hpp"

namespace unroll {

/// Normalises over the last `norm_dims` dims of x: y = (x - mean) / sqrt(var + eps) * weight + bias, with the
/// biased variance (as PyTorch). weight and bias (optional) have the shape of those trailing dims.
/// Backward, per row with x^ the normalised input and g' = g * weight:
///   dx = rstd (g' - mean(g') - x^ mean(g' x^)),  dweight = sum_rows(g x^),  dbias = sum_rows(g).
Tensor layer_norm(const Tensor& x, int norm_dims, const Tensor& weight = {}, const Tensor& bias = {},
                  double eps = 1e-5);

}  // namespace unroll
