#pragma once
// Losses.
#include <cstdint>
#include <string_view>

#include "../core/tensor.hpp"

namespace unroll {

enum class Reduction { none, mean, sum };
/// "none" | "mean" | "sum" -> Reduction; ValueError otherwise.
Reduction parse_reduction(std::string_view name);

/// Negative log-likelihood of log-probabilities logp [N, C] at class indices target [N] (int64).
/// Targets equal to ignore_index contribute nothing; mean divides by the number of other targets.
/// -> 0-d (mean, sum) or [N] (none).
Tensor nll_loss(const Tensor& logp, const Tensor& target, Reduction reduction = Reduction::mean,
                std::int64_t ignore_index = -100);
/// nll_loss(log_softmax(logits, 1), target): logits [N, C], target [N].
Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction = Reduction::mean,
                     std::int64_t ignore_index = -100);
/// (a - b)^2, reduced; a and b of the same shape.
Tensor mse_loss(const Tensor& a, const Tensor& b, Reduction reduction = Reduction::mean);

}  // namespace unroll
