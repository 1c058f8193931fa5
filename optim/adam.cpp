#include "adam.hpp"

#include <cmath>

#include "../autograd/tape.hpp"
#include "../core/parallel.hpp"

namespace unroll::optim {

namespace {
AdamOptions from_values(std::span<const double> v) {
  return {.lr = v[0], .betas = {v[1], v[2]}, .eps = v[3], .weight_decay = v[4], .amsgrad = v[5] != 0};
}

// The per-step scalars, rounded to the element type.
template <class T>
struct AdamScalars {
  T beta1, beta2, one_minus_beta1, one_minus_beta2, wd, eps, decay_factor, neg_step, bc2_sqrt;
};

// Elements [b, e) of one parameter. The options are template parameters so that each combination is one
// branch-free loop that the compiler vectorises (with the flags as runtime tests it stayed scalar).
template <class T, bool kL2, bool kDecoupled, bool kAmsgrad>
void adam_update(std::int64_t b, std::int64_t e, T* __restrict p, const T* __restrict gp, T* __restrict m,
                 T* __restrict v, T* __restrict vmax, const AdamScalars<T>& c) {
  const AdamScalars<T> k = c;  // by value: no aliasing with the arrays
  for (std::int64_t i = b; i < e; ++i) {
    const T gi = kL2 ? gp[i] + k.wd * p[i] : gp[i];
    if constexpr (kDecoupled) p[i] = p[i] * k.decay_factor;
    m[i] = m[i] * k.beta1 + k.one_minus_beta1 * gi;
    v[i] = v[i] * k.beta2 + k.one_minus_beta2 * gi * gi;
    T second = v[i];
    if constexpr (kAmsgrad) {
      // As torch.maximum, a NaN on either side wins.
      const T cur = vmax[i];
      second = (cur != cur || cur > second) ? cur : second;
      vmax[i] = second;
    }
    const T denom = std::sqrt(second) / k.bc2_sqrt + k.eps;
    p[i] = p[i] + k.neg_step * m[i] / denom;
  }
}

template <class T>
using AdamUpdate = void (*)(std::int64_t, std::int64_t, T*, const T*, T*, T*, T*, const AdamScalars<T>&);

template <class T>
AdamUpdate<T> select_adam_update(bool l2, bool decoupled, bool amsgrad) {
  static constexpr AdamUpdate<T> table[8] = {adam_update<T, false, false, false>, adam_update<T, false, false, true>,
                                             adam_update<T, false, true, false>,  adam_update<T, false, true, true>,
                                             adam_update<T, true, false, false>,  adam_update<T, true, false, true>,
                                             adam_update<T, true, true, false>,   adam_update<T, true, true, true>};
  return table[(l2 ? 4 : 0) + (decoupled ? 2 : 0) + (amsgrad ? 1 : 0)];
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
    dispatch_floating("Adam::step", g.dtype(), [&]<class T>(T*) {
      AdamScalars<T> c;
      c.beta1 = static_cast<T>(o.betas[0]), c.beta2 = static_cast<T>(o.betas[1]);
      c.one_minus_beta1 = static_cast<T>(1 - o.betas[0]), c.one_minus_beta2 = static_cast<T>(1 - o.betas[1]);
      c.wd = static_cast<T>(o.weight_decay), c.eps = static_cast<T>(o.eps);
      c.decay_factor = static_cast<T>(1 - lr() * o.weight_decay);
      c.neg_step = static_cast<T>(-step_size), c.bc2_sqrt = static_cast<T>(bias_correction2_sqrt);
      const bool l2 = !decoupled_ && o.weight_decay != 0;
      const auto update = select_adam_update<T>(l2, decoupled_, o.amsgrad);
      T* p = params()[i].template data<T>();
      const T* gp = g.template data<T>();
      T* m = s.buffers[0].template data<T>();
      T* v = s.buffers[1].template data<T>();
      T* vmax = o.amsgrad ? s.buffers[2].template data<T>() : nullptr;
      unroll::detail::parallel_for(g.numel(), unroll::detail::kElementwiseGrain,
                                   [&](std::int64_t b, std::int64_t e) { update(b, e, p, gp, m, v, vmax, c); });
    });
  }
}

}  // namespace unroll::optim
