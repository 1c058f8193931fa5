#include "clip.hpp"

#include <algorithm>
#include <cmath>

#include "../autograd/tape.hpp"

namespace unroll::optim {

namespace detail {
Tensor* writable_grad(const Tensor& p) {
  if (p.leaf() == nullptr || !p.leaf()->grad.defined()) return nullptr;
  Tensor& g = p.leaf()->grad;  // the record itself: grad() would return a second handle
  if (!g.unique_storage()) g = copy_of(g);
  return &g;
}
}  // namespace detail

namespace {
void check_params(const char* where, const std::vector<Tensor>& params) {
  for (std::size_t i = 0; i < params.size(); ++i)
    UNROLL_CHECK(params[i].defined(), ValueError,
                 "{}: parameter {} is undefined; got an undefined tensor, expected a "
                 "parameter",
                 where, i);
}

// ||g||_p of one gradient, in double (p = inf: largest magnitude).
double grad_norm(const Tensor& g, double p) {
  return dispatch_floating("clip_grad_norm_", g.dtype(), [&]<class T>(T*) {
    const T* x = g.template data<T>();
    const std::int64_t n = g.numel();
    double acc = 0;
    if (std::isinf(p)) {
      for (std::int64_t k = 0; k < n; ++k) {
        const double a = std::abs(static_cast<double>(x[k]));
        if (!(a <= acc)) acc = a;  // NaN propagates
      }
      return acc;
    }
    if (p == 1) {
      for (std::int64_t k = 0; k < n; ++k) acc += std::abs(static_cast<double>(x[k]));
      return acc;
    }
    if (p == 2) {
      for (std::int64_t k = 0; k < n; ++k) acc += static_cast<double>(x[k]) * static_cast<double>(x[k]);
      return std::sqrt(acc);
    }
    for (std::int64_t k = 0; k < n; ++k) acc += std::pow(std::abs(static_cast<double>(x[k])), p);
    return std::pow(acc, 1 / p);
  });
}
}  // namespace

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm, double norm_type,
                       bool error_if_nonfinite) {
  UNROLL_CHECK(max_norm >= 0, ValueError, "clip_grad_norm_: invalid max_norm; got {}, expected max_norm >= 0",
               max_norm);
  UNROLL_CHECK(norm_type > 0, ValueError,
               "clip_grad_norm_: invalid norm_type; got {}, expected norm_type > 0 (or INFINITY)", norm_type);
  // As PyTorch: the norm of the per-gradient norms (the same value as the norm of all elements at once).
  check_params("clip_grad_norm_", params);
  std::vector<double> norms;
  std::size_t first_bad = params.size();  // the first parameter whose gradient's norm is not finite, and that norm
  double first_bad_norm = 0;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    if (p.leaf() == nullptr || !p.leaf()->grad.defined()) continue;
    norms.push_back(grad_norm(p.leaf()->grad, norm_type));
    if (!std::isfinite(norms.back()) && first_bad == params.size()) first_bad = i, first_bad_norm = norms.back();
  }
  if (norms.empty()) return 0.0;
  double total = 0;
  if (std::isinf(norm_type)) {
    for (double v : norms)
      if (!(v <= total)) total = v;
  } else {
    total = grad_norm(tensor(norms, Shape{static_cast<std::int64_t>(norms.size())}, Dtype::float64), norm_type);
  }
  if (error_if_nonfinite && !std::isfinite(total)) {
    if (first_bad < params.size())
      ::unroll::detail::throw_error<NonFiniteError>(
          "clip_grad_norm_: the total norm of order {} of the gradients is non-finite, so they cannot be clipped; "
          "got {} (parameter {}'s gradient, of shape {}, has norm {}), expected a finite norm (find the op with "
          "autograd::DetectAnomaly, or pass error_if_nonfinite = false)",
          norm_type, total, first_bad, params[first_bad].shape(), first_bad_norm);
    ::unroll::detail::throw_error<NonFiniteError>(
        "clip_grad_norm_: the total norm of order {} of the gradients is non-finite, so they cannot be clipped; got "
        "{} (every gradient's own norm is finite: their total overflows), expected a finite norm",
        norm_type, total);
  }
  const double coef = max_norm / (total + 1e-6);
  if (!(coef < 1)) return total;  // PyTorch multiplies by the clamped coefficient, 1: a no-op
  NoGradGuard no_grad;
  for (const Tensor& p : params) {
    Tensor* g = detail::writable_grad(p);
    if (g == nullptr) continue;
    dispatch_floating("clip_grad_norm_", g->dtype(), [&]<class T>(T*) {
      T* x = g->template data<T>();
      const T c = static_cast<T>(coef);
      for (std::int64_t k = 0, n = g->numel(); k < n; ++k) x[k] *= c;
    });
  }
  return total;
}

void clip_grad_value_(const std::vector<Tensor>& params, double clip_value) {
  UNROLL_CHECK(clip_value >= 0, ValueError, "clip_grad_value_: invalid clip_value; got {}, expected clip_value >= 0",
               clip_value);
  check_params("clip_grad_value_", params);
  NoGradGuard no_grad;
  for (const Tensor& p : params) {
    Tensor* g = detail::writable_grad(p);
    if (g == nullptr) continue;
    dispatch_floating("clip_grad_value_", g->dtype(), [&]<class T>(T*) {
      T* x = g->template data<T>();
      const T hi = static_cast<T>(clip_value), lo = -hi;
      // As torch.clamp: NaN stays NaN.
      for (std::int64_t k = 0, n = g->numel(); k < n; ++k) x[k] = x[k] < lo ? lo : (x[k] > hi ? hi : x[k]);
    });
  }
}

}  // namespace unroll::optim
