#pragma once
// Reductions and normalisations over dimensions, and the running (cumulative) ones along a dim.
#include <cstdint>
#include <vector>

#include "../core/tensor.hpp"

namespace unroll {

/// Sum of all elements -> 0-d.  Backward: dx = g broadcast.
Tensor sum(const Tensor& x);
/// Sum over `dims` (negative counts from the end); keepdim keeps them with size 1.
Tensor sum(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim = false);
/// Mean of all elements -> 0-d.
Tensor mean(const Tensor& x);
/// Mean over `dims`.
Tensor mean(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim = false);
/// Largest element -> 0-d (gradient shared evenly among ties, as PyTorch).
Tensor max(const Tensor& x);
/// Largest element along dim (gradient to the first maximal index, as PyTorch).
Tensor max(const Tensor& x, std::int64_t dim, bool keepdim = false);
/// Index (int64) of the first largest element along dim; not differentiable.
Tensor argmax(const Tensor& x, std::int64_t dim, bool keepdim = false);
/// exp(x) / sum(exp(x)) along dim.  Backward: dx = y (g - sum(g y)).
Tensor softmax(const Tensor& x, std::int64_t dim);
/// x - log(sum(exp(x))) along dim.  Backward: dx = g - exp(y) sum(g).
Tensor log_softmax(const Tensor& x, std::int64_t dim);
/// Running sum along dim (negative counts from the end): y_i = sum_{j <= i} x_j; same shape.
/// Backward: dx_j = sum_{i >= j} g_i (a running sum of g from the end).
Tensor cumsum(const Tensor& x, std::int64_t dim);
/// log of the running sum of e^x along dim, stable (as torch.logcumsumexp): y_i = logaddexp(y_{i-1}, x_i);
/// same shape.  Backward: dx_j = sum_{i >= j} g_i e^(x_j - y_i). For a leading -inf (a masked step) PyTorch gives
/// nan; here it is the limit as that input -> -inf, the others fixed (finite).
Tensor logcumsumexp(const Tensor& x, std::int64_t dim);

}  // namespace unroll
