#pragma once
// Convolution over time: the depthwise causal conv1d that Griffin/Hawk and Mamba-style blocks apply before
// their recurrence (each channel filtered on its own, each step seeing only itself and earlier steps).
#include "../core/tensor.hpp"

namespace unroll {

/// x [T, B, C], weight [C, K], bias [C] (or undefined) -> [T, B, C]:
/// y[t, b, c] = bias[c] + sum_{k < K} weight[c, k] x[t - (K - 1) + k, b, c], with x = 0 before t = 0, so
/// weight[c, K - 1] multiplies the current step. This is PyTorch's F.conv1d(x.permute(1, 2, 0),
/// weight.unsqueeze(1), bias, padding=K-1, groups=C)[..., :T] permuted back to [T, B, C].
/// Backward: dx[s] = sum_k w[k] g[s + K - 1 - k], dw[c, k] = sum_{t, b} g[t] x[t - (K - 1) + k], db = sum g.
Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias = {});

}  // namespace unroll
