#include "loss.hpp"

#include "../autograd/tape.hpp"
#include "elementwise.hpp"
#include "reduce.hpp"

namespace unroll {

Reduction parse_reduction(std::string_view name) {
  if (name == "none") return Reduction::none;
  if (name == "mean") return Reduction::mean;
  UNROLL_CHECK(name == "sum", ValueError, "reduction: unknown name; got '{}', expected none, mean or sum", name);
  return Reduction::sum;
}

namespace {
// Checks logits/log-probabilities [N, C] against class targets [N], naming `where` in errors; returns
// the number of targets that are not ignore_index.
std::int64_t check_class_targets(const char* where, const Tensor& input, const Tensor& target,
                                 std::int64_t ignore_index) {
  UNROLL_CHECK(input.defined() && target.defined(), StateError,
               "{}: operand is undefined; got an undefined tensor, expected input [N, C] and target [N]", where);
  UNROLL_CHECK(is_floating(input.dtype()), DtypeError,
               "{}: expected floating-point input; got {}, expected float32 or float64", where, input.dtype());
  UNROLL_CHECK(input.dim() == 2, ShapeError, "{}: input must be [N, C]; got {}, expected 2 dims", where, input.shape());
  UNROLL_CHECK(target.dtype() == Dtype::int64, DtypeError,
               "{}: target must be int64 class indices; got {}, expected int64", where, target.dtype());
  const std::int64_t N = input.shape()[0], C = input.shape()[1];
  UNROLL_CHECK(target.dim() == 1 && target.shape()[0] == N, ShapeError,
               "{}: target shape does not match the input; got target={} for input={}, expected [{}]", where,
               target.shape(), input.shape(), N);
  const std::int64_t* t = target.data<std::int64_t>();
  std::int64_t counted = 0;
  for (std::int64_t n = 0; n < N; ++n) {
    UNROLL_CHECK(t[n] == ignore_index || (t[n] >= 0 && t[n] < C), IndexError,
                 "{}: target out of range; got {} at position {}, expected in [0, {}) or ignore_index {}", where, t[n],
                 n, C, ignore_index);
    counted += t[n] != ignore_index;
  }
  return counted;
}
}  // namespace

// y_n = -logp[n, t_n] (0 where t_n is ignored), reduced;  dlogp[n, t_n] = -g_n (scaled for mean)
Tensor nll_loss(const Tensor& logp, const Tensor& target, Reduction reduction, std::int64_t ignore_index) {
  const std::int64_t counted = check_class_targets("nll_loss", logp, target, ignore_index);
  const std::int64_t N = logp.shape()[0], C = logp.shape()[1];
  const std::int64_t* t = target.data<std::int64_t>();
  Tensor out =
      reduction == Reduction::none ? Tensor::empty(Shape{N}, logp.dtype()) : Tensor::empty(Shape{}, logp.dtype());
  // mean over zero targets is 0/0 = nan, as in PyTorch
  const double scale = reduction == Reduction::mean ? 1.0 / static_cast<double>(counted) : 1.0;
  dispatch(logp.dtype(), [&]<class T>(T*) {
    const T* p = static_cast<const T*>(logp.raw());
    T* o = static_cast<T*>(out.raw());
    double total = 0;
    for (std::int64_t n = 0; n < N; ++n) {
      const T v = t[n] == ignore_index ? T(0) : -p[n * C + t[n]];
      if (reduction == Reduction::none) o[n] = v;
      total += v;
    }
    if (reduction != Reduction::none) o[0] = static_cast<T>(total * scale);
  });
  if (autograd::needs_grad({&logp}))
    autograd::record("nll_loss", out, {&logp},
                     [target = target.detach(), N, C, ignore_index, scale, reduction](autograd::GradSink& sink) {
                       const Tensor& g = sink.grad_output();
                       bool fresh = false;
                       Tensor& dx = sink.buffer(0, fresh, /*zero_fill=*/true);
                       const std::int64_t* t = target.data<std::int64_t>();
                       dispatch(g.dtype(), [&]<class T>(T*) {
                         const T* pg = static_cast<const T*>(g.raw());
                         T* pd = static_cast<T*>(dx.raw());
                         for (std::int64_t n = 0; n < N; ++n) {
                           if (t[n] == ignore_index) continue;
                           const T gn = reduction == Reduction::none ? pg[n] : static_cast<T>(pg[0] * scale);
                           pd[n * C + t[n]] -= gn;
                         }
                       });
                     });
  return out;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& target, Reduction reduction, std::int64_t ignore_index) {
  detail::OpScope op_scope("cross_entropy");
  check_class_targets("cross_entropy", logits, target, ignore_index);
  return nll_loss(log_softmax(logits, 1), target, reduction, ignore_index);
}

Tensor mse_loss(const Tensor& a, const Tensor& b, Reduction reduction) {
  UNROLL_CHECK(a.defined() && b.defined(), StateError,
               "mse_loss: operand is undefined; got an undefined tensor, expected two tensors");
  UNROLL_CHECK(a.shape() == b.shape(), ShapeError, "mse_loss: shapes differ; got a={} and b={}, expected equal shapes",
               a.shape(), b.shape());
  const Tensor d = sub(a, b);
  const Tensor sq = mul(d, d);
  switch (reduction) {
    case Reduction::none:
      return sq;
    case Reduction::sum:
      return sum(sq);
    case Reduction::mean:
      break;
  }
  return mean(sq);
}

}  // namespace unroll
