#include "sgd.hpp"

#include <cmath>

#include "../autograd/tape.hpp"
#include "../core/parallel.hpp"

namespace unroll::optim {

namespace {
// A NaN lr is the "not given" default: say so rather than report an invalid value.
double required_lr(double lr) {
  UNROLL_CHECK(!std::isnan(lr), ValueError,
               "SGD: missing lr; got no learning rate, expected lr >= 0 (SGD has no default)");
  return lr;
}

SGDOptions from_values(std::span<const double> v) {
  return {.lr = v[0], .momentum = v[1], .dampening = v[2], .weight_decay = v[3], .nesterov = v[4] != 0};
}
}  // namespace

SGD::SGD(std::vector<Tensor> params, const SGDOptions& options)
    : Optimizer("SGD", std::move(params), required_lr(options.lr)), options_(options) {
  check_hyper_params(std::vector<double>{options.lr, options.momentum, options.dampening, options.weight_decay,
                                         options.nesterov ? 1.0 : 0.0});
}

SGDOptions SGD::options() const {
  SGDOptions o = options_;
  o.lr = lr();
  return o;
}

std::vector<HyperParam> SGD::hyper_params() const {
  return {{"momentum", options_.momentum},
          {"dampening", options_.dampening},
          {"weight_decay", options_.weight_decay},
          {"nesterov", options_.nesterov ? 1.0 : 0.0, HyperParam::Kind::flag}};
}

StateLayout SGD::check_hyper_params(std::span<const double> values) const {
  const SGDOptions o = from_values(values);
  detail::check_hyper(o.momentum >= 0, name(), "momentum", o.momentum, "momentum >= 0");
  detail::check_hyper(o.weight_decay >= 0, name(), "weight_decay", o.weight_decay, "weight_decay >= 0");
  UNROLL_CHECK(!o.nesterov || (o.momentum > 0 && o.dampening == 0), ValueError,
               "{}: invalid nesterov; got nesterov with momentum={} and dampening={}, expected momentum > 0 and "
               "dampening == 0",
               name(), o.momentum, o.dampening);
  StateLayout layout;
  if (o.momentum != 0) layout.buffers = {"momentum_buffer"};
  return layout;
}

void SGD::set_hyper_params(std::span<const double> values) noexcept { options_ = from_values(values); }

void SGD::step() {
  NoGradGuard no_grad;
  const SGDOptions& o = options_;
  for (std::size_t i = 0; i < params().size(); ++i) {
    const Tensor& g = grad_of(i);
    if (!g.defined()) continue;
    ParamState& s = state_[i];
    const bool use_momentum = o.momentum != 0;
    // PyTorch starts the buffer as a copy of the first (decayed) gradient rather than from zeros.
    const bool first = use_momentum && !s.started;
    if (first) start_zeros(i, 1);
    make_writable(s);
    dispatch_floating("SGD::step", g.dtype(), [&]<class T>(T*) {
      T* __restrict p = params()[i].template data<T>();
      const T* __restrict gp = g.template data<T>();
      T* __restrict buf = use_momentum ? s.buffers[0].template data<T>() : nullptr;
      const T wd = static_cast<T>(o.weight_decay), mom = static_cast<T>(o.momentum);
      const T damp = static_cast<T>(1 - o.dampening), neg_lr = static_cast<T>(-lr());
      const bool decay = o.weight_decay != 0, nesterov = o.nesterov;
      unroll::detail::parallel_for(g.numel(), unroll::detail::kElementwiseGrain, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t k = b; k < e; ++k) {
          T d = decay ? gp[k] + wd * p[k] : gp[k];
          if (buf) {
            buf[k] = first ? d : buf[k] * mom + damp * d;
            d = nesterov ? d + mom * buf[k] : buf[k];
          }
          p[k] = p[k] + neg_lr * d;
        }
      });
    });
  }
}

}  // namespace unroll::optim
