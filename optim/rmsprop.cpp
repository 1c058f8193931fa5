#include "rmsprop.hpp"

#include <cmath>

#include "../autograd/tape.hpp"
#include "../core/parallel.hpp"

namespace unroll::optim {

namespace {
// Saved in PyTorch's param_groups order: lr, momentum, alpha, eps, centered, weight_decay.
RMSpropOptions from_values(std::span<const double> v) {
  return {.lr = v[0], .alpha = v[2], .eps = v[3], .weight_decay = v[5], .momentum = v[1], .centered = v[4] != 0};
}
}  // namespace

RMSprop::RMSprop(std::vector<Tensor> params, const RMSpropOptions& options)
    : Optimizer("RMSprop", std::move(params), options.lr), options_(options) {
  check_hyper_params(std::vector<double>{options.lr, options.momentum, options.alpha, options.eps,
                                         options.centered ? 1.0 : 0.0, options.weight_decay});
}

RMSpropOptions RMSprop::options() const {
  RMSpropOptions o = options_;
  o.lr = lr();
  return o;
}

std::vector<HyperParam> RMSprop::hyper_params() const {
  return {{"momentum", options_.momentum},
          {"alpha", options_.alpha},
          {"eps", options_.eps},
          {"centered", options_.centered ? 1.0 : 0.0, HyperParam::Kind::flag},
          {"weight_decay", options_.weight_decay}};
}

StateLayout RMSprop::check_hyper_params(std::span<const double> values) const {
  const RMSpropOptions o = from_values(values);
  detail::check_hyper(o.eps >= 0, name(), "eps", o.eps, "eps >= 0");
  detail::check_hyper(o.momentum >= 0, name(), "momentum", o.momentum, "momentum >= 0");
  detail::check_hyper(o.weight_decay >= 0, name(), "weight_decay", o.weight_decay, "weight_decay >= 0");
  detail::check_hyper(o.alpha >= 0, name(), "alpha", o.alpha, "alpha >= 0");
  StateLayout layout{.step = true, .buffers = {"square_avg"}};
  if (o.momentum > 0) layout.buffers.push_back("momentum_buffer");
  if (o.centered) layout.buffers.push_back("grad_avg");
  return layout;
}

void RMSprop::set_hyper_params(std::span<const double> values) noexcept { options_ = from_values(values); }

void RMSprop::step() {
  NoGradGuard no_grad;
  const RMSpropOptions& o = options_;
  const bool use_momentum = o.momentum > 0;
  for (std::size_t i = 0; i < params().size(); ++i) {
    const Tensor& g = grad_of(i);
    if (!g.defined()) continue;
    ParamState& s = state_[i];
    if (!s.started) start_zeros(i, 1 + (use_momentum ? 1 : 0) + (o.centered ? 1 : 0));
    make_writable(s);
    ++s.step;
    dispatch_floating("RMSprop::step", g.dtype(), [&]<class T>(T*) {
      T* __restrict p = params()[i].template data<T>();
      const T* __restrict gp = g.template data<T>();
      T* __restrict sq = s.buffers[0].template data<T>();
      T* __restrict buf = use_momentum ? s.buffers[1].template data<T>() : nullptr;
      T* __restrict ga = o.centered ? s.buffers[use_momentum ? 2 : 1].template data<T>() : nullptr;
      const T alpha = static_cast<T>(o.alpha), one_minus_alpha = static_cast<T>(1 - o.alpha);
      const T wd = static_cast<T>(o.weight_decay), eps = static_cast<T>(o.eps), mom = static_cast<T>(o.momentum);
      const T neg_lr = static_cast<T>(-lr());
      const bool decay = o.weight_decay != 0;
      unroll::detail::parallel_for(g.numel(), unroll::detail::kElementwiseGrain, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t k = b; k < e; ++k) {
          const T gk = decay ? gp[k] + wd * p[k] : gp[k];
          sq[k] = sq[k] * alpha + one_minus_alpha * gk * gk;
          T avg;
          if (ga) {
            ga[k] = ga[k] * alpha + one_minus_alpha * gk;
            avg = std::sqrt(sq[k] + T(-1) * ga[k] * ga[k]) + eps;
          } else {
            avg = std::sqrt(sq[k]) + eps;
          }
          if (buf) {
            buf[k] = buf[k] * mom + T(1) * gk / avg;
            p[k] = p[k] + neg_lr * buf[k];
          } else {
            p[k] = p[k] + neg_lr * gk / avg;
          }
        }
      });
    });
  }
}

}  // namespace unroll::optim
