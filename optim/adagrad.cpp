#include "adagrad.hpp"

#include <cmath>

#include "../autograd/tape.hpp"
#include "../core/parallel.hpp"

namespace unroll::optim {

namespace {
// Saved in PyTorch's param_groups order: lr, lr_decay, eps, weight_decay, initial_accumulator_value.
AdagradOptions from_values(std::span<const double> v) {
  return {.lr = v[0], .lr_decay = v[1], .weight_decay = v[3], .initial_accumulator_value = v[4], .eps = v[2]};
}
}  // namespace

Adagrad::Adagrad(std::vector<Tensor> params, const AdagradOptions& options)
    : Optimizer("Adagrad", std::move(params), options.lr), options_(options) {
  check_hyper_params(std::vector<double>{options.lr, options.lr_decay, options.eps, options.weight_decay,
                                         options.initial_accumulator_value});
  for (std::size_t i = 0; i < state_.size(); ++i) {
    ParamState& s = state_[i];
    s.buffers = {full(this->params()[i].shape(), options.initial_accumulator_value, this->params()[i].dtype())};
    s.started = true;
  }
}

AdagradOptions Adagrad::options() const {
  AdagradOptions o = options_;
  o.lr = lr();
  return o;
}

std::vector<HyperParam> Adagrad::hyper_params() const {
  return {{"lr_decay", options_.lr_decay},
          {"eps", options_.eps},
          {"weight_decay", options_.weight_decay},
          {"initial_accumulator_value", options_.initial_accumulator_value}};
}

StateLayout Adagrad::check_hyper_params(std::span<const double> values) const {
  const AdagradOptions o = from_values(values);
  detail::check_hyper(o.lr_decay >= 0, name(), "lr_decay", o.lr_decay, "lr_decay >= 0");
  detail::check_hyper(o.weight_decay >= 0, name(), "weight_decay", o.weight_decay, "weight_decay >= 0");
  detail::check_hyper(o.initial_accumulator_value >= 0, name(), "initial_accumulator_value",
                      o.initial_accumulator_value, "initial_accumulator_value >= 0");
  detail::check_hyper(o.eps >= 0, name(), "eps", o.eps, "eps >= 0");
  return {.step = true, .buffers = {"sum"}, .eager = true};
}

void Adagrad::set_hyper_params(std::span<const double> values) noexcept { options_ = from_values(values); }

void Adagrad::step() {
  NoGradGuard no_grad;
  const AdagradOptions& o = options_;
  for (std::size_t i = 0; i < params().size(); ++i) {
    const Tensor& g = grad_of(i);
    if (!g.defined()) continue;
    ParamState& s = state_[i];
    make_writable(s);
    const std::int64_t t = ++s.step;
    const double clr = lr() / (1 + static_cast<double>(t - 1) * o.lr_decay);
    dispatch_floating("Adagrad::step", g.dtype(), [&]<class T>(T*) {
      T* __restrict p = params()[i].template data<T>();
      const T* __restrict gp = g.template data<T>();
      T* __restrict sum = s.buffers[0].template data<T>();
      const T wd = static_cast<T>(o.weight_decay), eps = static_cast<T>(o.eps), neg_clr = static_cast<T>(-clr);
      const bool decay = o.weight_decay != 0;
      unroll::detail::parallel_for(g.numel(), unroll::detail::kElementwiseGrain, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t k = b; k < e; ++k) {
          const T gk = decay ? gp[k] + wd * p[k] : gp[k];
          sum[k] = sum[k] + T(1) * gk * gk;
          p[k] = p[k] + neg_clr * gk / (std::sqrt(sum[k]) + eps);
        }
      });
    });
  }
}

}  // namespace unroll::optim
