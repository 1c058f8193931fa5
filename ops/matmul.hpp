#pragma once
// Matrix products through BLAS (or the inline kernel for tiny products); backward passes transpose
// flags to gemm and accumulates straight into the gradient buffers — no transpose is ever materialised.
#include "../core/tensor.hpp"

namespace unroll {

/// [M, K] x [K, N] -> [M, N];  [B, M, K] x [B, K, N] -> [B, M, N];  [B, M, K] x [K, N] -> [B, M, N].
/// Backward: dA = g B^T, dB = A^T g (summed over the batch for a shared 2-D B).
Tensor matmul(const Tensor& a, const Tensor& b);

}  // namespace unroll
