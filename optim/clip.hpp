#pragma once
// Gradient clipping, as torch.nn.utils.clip_grad_norm_ / clip_grad_value_. Parameters without a gradient
// (none yet, or not requiring grad) are skipped; an undefined tensor in the list is a ValueError.
// A gradient whose storage another handle holds (a Tensor the user kept from grad()) is not written
// through: the clipped values go to a fresh tensor in the parameter's gradient record, and the other
// handle keeps the old values.
#include <vector>

#include "../core/tensor.hpp"

namespace unroll::optim {

/// Scales all gradients by max_norm / (total + 1e-6) when that is < 1, where total is the norm_type-norm
/// of all gradients taken as one vector (norm_type > 0, or INFINITY for the largest magnitude). Returns
/// total (before clipping; 0 when no parameter has a gradient). ValueError unless max_norm >= 0 and
/// norm_type > 0. With error_if_nonfinite (PyTorch's flag), a nan or infinite total is a NonFiniteError naming
/// the first parameter whose gradient is not finite, and no gradient is touched.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type = 2.0,
                       bool error_if_nonfinite = false);
/// Clamps every gradient element to [-clip_value, clip_value]. ValueError unless clip_value >= 0.
void clip_grad_value_(const std::vector<Tensor>& params, double clip_value);

namespace detail {
/// The gradient in leaf `p`'s gradient record, made safe to write in place: if another handle shares its
/// storage it is replaced by a copy first. Null when p has no gradient (or no record).
Tensor* writable_grad(const Tensor& p);
}  // namespace detail

}  // namespace unroll::optim
