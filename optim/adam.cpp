#include "adam.hpp"

#include <cmath>

#include "../autograd/tape.hpp"
#include "../core/parallel.hpp"

namespace unroll::optim {

namespace {
AdamOptions from_values(std::span<const double> v) {
  return {.lr = v[0], .betas = {v[1], v[2]}, .eps = v[3], .weight_decay = v[4], .amsgrad = v[5] != 0};
}
}  // namespace

Adam::Adam(std::vector<Tensor> params, const AdamOptions& options) : Adam("Adam", std::move(params), options, false) {}

Adam::Adam(const char* name, std::vector<Tensor> params, const AdamOptions& options, bool decoupled)
    : Optimizer(name, std::move(params), options.lr), options_(options), decoupled_(decoupled) {
  check_hyper_params(std::vector<double>{options.lr, options.betas[0], options.betas[1], options.eps,
                                         options.weight_decay, options.amsgrad ? 1.0 : 0.0, decoupled ? 1.0 : 0.0});
}

AdamW::AdamW(std::vector<Tensor> params, const AdamWOptions& o)
    : Adam("AdamW", std::move(params),
           {.lr = o.lr, .betas = o.betas, .eps = o.eps, .weight_decay = o.weight_decay, .amsgrad = o.amsgrad}, true) {}

AdamOptions Adam::options() const {
  AdamOptions o = options_;
  o.lr = lr();
  return o;
}

std::vector<HyperParam> Adam::hyper_params() const {
  return {{"betas.0", options_.betas[0]},
          {"betas.1", options_.betas[1]},
          {"eps", options_.eps},
          {"weight_decay", options_.weight_decay},
          {"amsgrad", options_.amsgrad ? 1.0 : 0.0, HyperParam::Kind::flag},
          {"decoupled_weight_decay", decoupled_ ? 1.0 : 0.0, HyperParam::Kind::flag}};
}

StateLayout Adam::check_hyper_params(std::span<const double> values) const {
  const AdamOptions o = from_values(values);
  const bool decoupled = values[6] != 0;
  UNROLL_CHECK(decoupled == decoupled_, ValueError,
               "{}::load_state_dict: entry 'param_groups.0.decoupled_weight_decay' is from another optimizer; got {} "
               "({}), expected {} ({})",
               name(), decoupled ? 1 : 0, decoupled ? "AdamW" : "Adam", decoupled_ ? 1 : 0, name());
  detail::check_hyper(o.eps >= 0, name(), "eps", o.eps, "eps >= 0");
  detail::check_hyper(o.betas[0] >= 0 && o.betas[0] < 1, name(), "betas.0", o.betas[0], "0 <= betas.0 < 1");
  detail::check_hyper(o.betas[1] >= 0 && o.betas[1] < 1, name(), "betas.1", o.betas[1], "0 <= betas.1 < 1");
  detail::check_hyper(o.weight_decay >= 0, name(), "weight_decay", o.weight_decay, "weight_decay >= 0");
  StateLayout layout{.step = true, .buffers = {"exp_avg", "exp_avg_sq"}};
  if (o.amsgrad) layout.buffers.push_back("max_exp_avg_sq");
  return layout;
}

void Adam::set_hyper_params(std::span<const double> values) noexcept { options_ = from_values(values); }

void Adam::step() {
  NoGradGuard no_grad;
  const AdamOptions& o = options_;
  for (std::size_t i = 0; i < params().size(); ++i) {
    const Tensor& g = grad_of(i);
    if (!g.defined()) continue;
    ParamState& s = state_[i];
    if (!s.started) start_zeros(i, o.amsgrad ? 3 : 2);
    make_writable(s);
    const std::int64_t t = ++s.step;
    // Scalars in double exactly as PyTorch computes them in Python, then rounded to the element type.
    const double bias_correction1 = 1 - std::pow(o.betas[0], static_cast<double>(t));
    const double bias_correction2 = 1 - std::pow(o.betas[1], static_cast<double>(t));
    const double step_size = lr() / bias_correction1;
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    dispatch_floating("Adam::step", g.dtype(), [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      T* __restrict p = params()[i].template data<T>();
      const T* __restrict gp = g.template data<T>();
      T* __restrict m = s.buffers[0].template data<T>();
      T* __restrict v = s.buffers[1].template data<T>();
      T* __restrict vmax = o.amsgrad ? s.buffers[2].template data<T>() : nullptr;
      const T beta1 = static_cast<T>(o.betas[0]), beta2 = static_cast<T>(o.betas[1]);
      const T one_minus_beta1 = static_cast<T>(1 - o.betas[0]), one_minus_beta2 = static_cast<T>(1 - o.betas[1]);
      const T wd = static_cast<T>(o.weight_decay), eps = static_cast<T>(o.eps);
      const T decay_factor = static_cast<T>(1 - lr() * o.weight_decay);
      const T neg_step = static_cast<T>(-step_size), bc2_sqrt = static_cast<T>(bias_correction2_sqrt);
      const bool l2 = !decoupled_ && o.weight_decay != 0, decoupled = decoupled_;
      unroll::detail::parallel_for(g.numel(), unroll::detail::kElementwiseGrain, [&](std::int64_t b, std::int64_t e) {
        for (std::int64_t k = b; k < e; ++k) {
          const T gk = l2 ? gp[k] + wd * p[k] : gp[k];
          if (decoupled) p[k] = p[k] * decay_factor;
          m[k] = m[k] * beta1 + one_minus_beta1 * gk;
          v[k] = v[k] * beta2 + one_minus_beta2 * gk * gk;
          T second = v[k];
          if (vmax) {
            // As torch.maximum, a NaN on either side wins.
            const T cur = vmax[k];
            second = (cur != cur || cur > second) ? cur : second;
            vmax[k] = second;
          }
          const T denom = std::sqrt(second) / bc2_sqrt + eps;
          p[k] = p[k] + neg_step * m[k] / denom;
        }
      });
    });
  }
}

}  // namespace unroll::optim
