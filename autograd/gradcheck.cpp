#include "gradcheck.hpp"

#include <cmath>

#include <fmt/format.h>

#include "../core/random.hpp"
#include "tape.hpp"

namespace unroll::autograd {
namespace {
double weighted_sum(const Tensor& out, const Tensor& w) {
  const double* o = out.data<double>();
  const double* p = w.data<double>();
  double s = 0;
  for (std::int64_t i = 0; i < out.numel(); ++i) s += o[i] * p[i];
  return s;
}
std::vector<std::int64_t> unravel(std::int64_t flat, const Shape& shape) {
  std::vector<std::int64_t> idx(static_cast<std::size_t>(shape.dim()));
  for (int d = shape.dim() - 1; d >= 0; --d) {
    idx[static_cast<std::size_t>(d)] = shape[d] ? flat % shape[d] : 0;
    flat = shape[d] ? flat / shape[d] : 0;
  }
  return idx;
}
}  // namespace

GradcheckResult gradcheck(const std::string& name, const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& opt) {
  for (std::size_t i = 0; i < inputs.size(); ++i)
    UNROLL_CHECK(!inputs[i].requires_grad() || inputs[i].dtype() == Dtype::float64, DtypeError,
                 "gradcheck '{}': input {} must be float64 for finite differences; got {}, expected float64", name, i,
                 inputs[i].dtype());

  // Analytic: one backward with seed w on a tape of our own.
  Tensor w;
  std::vector<Tensor> analytic(inputs.size());
  {
    Tape tape;
    std::vector<Tensor> leaves;
    for (const Tensor& x : inputs) {
      Tensor leaf = x.detach();
      if (x.requires_grad()) leaf.requires_grad_();
      leaves.push_back(leaf);
    }
    Tensor out = f(leaves);
    UNROLL_CHECK(out.dtype() == Dtype::float64, DtypeError,
                 "gradcheck '{}': output must be float64; got {}, expected float64", name, out.dtype());
    Generator gen(opt.seed);
    w = randn(out.shape(), Dtype::float64, gen);
    if (out.requires_grad()) out.backward(w);
    for (std::size_t i = 0; i < inputs.size(); ++i)
      if (inputs[i].requires_grad()) analytic[i] = leaves[i].grad();
  }

  // Numeric: perturb each element in place, no recording.
  NoGradGuard no_grad;
  GradcheckResult worst;
  worst.name = name;
  std::vector<Tensor> probe;
  for (const Tensor& x : inputs) probe.push_back(copy_of(x));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].requires_grad()) continue;
    double* x = probe[i].data<double>();
    const double* a = analytic[i].defined() ? analytic[i].data<double>() : nullptr;
    for (std::int64_t j = 0; j < probe[i].numel(); ++j) {
      const double saved = x[j];
      x[j] = saved + opt.eps;
      const double plus = weighted_sum(f(probe), w);
      x[j] = saved - opt.eps;
      const double minus = weighted_sum(f(probe), w);
      x[j] = saved;
      const double numeric = (plus - minus) / (2 * opt.eps);
      const double an = a ? a[j] : 0.0;
      const double err = std::abs(an - numeric) / (opt.atol + opt.rtol * std::abs(numeric));
      if (err > worst.error || (std::isnan(err) && worst.ok)) {
        worst.error = std::isnan(err) ? INFINITY : err;
        worst.input = i;
        worst.index = unravel(j, probe[i].shape());
        worst.analytic = an;
        worst.numeric = numeric;
        worst.ok = !(err > 1.0) && !std::isnan(err);
      }
    }
  }
  worst.message = fmt::format(
      "gradcheck '{}': {} worst at input {} index [{}]: analytic {:.10g} vs numeric {:.10g} "
      "(error {:.3g} of tolerance)",
      name, worst.ok ? "passed," : "FAILED,", worst.input, fmt::join(worst.index, ", "), worst.analytic, worst.numeric,
      worst.error);
  return worst;
}

}  // namespace unroll::autograd
