#pragma once
// Reductions and normalisations over dimensions.
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

}  // namespace unroll
