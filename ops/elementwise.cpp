#include "elementwise.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../autograd/tape.hpp"
#include "../core/kernels.hpp"
#include "broadcast.hpp"
#include "fast_math.hpp"
#include "kernels.hpp"
#include "trace.hpp"

namespace unroll {
namespace detail {

void check_floating(const char* where, const Tensor& x) {
  UNROLL_CHECK(x.defined(), StateError, "{}: operand is undefined; got an undefined tensor, expected a tensor", where);
  UNROLL_CHECK(is_floating(x.dtype()), DtypeError,
               "{}: expected a floating-point tensor; got {}, expected float32 or float64", where, x.dtype());
}

void check_floating_same(const char* where, const Tensor& a, const Tensor& b) {
  UNROLL_CHECK(a.defined() && b.defined(), StateError,
               "{}: operand is undefined; got an undefined tensor, expected a tensor", where);
  UNROLL_CHECK(is_floating(a.dtype()), DtypeError,
               "{}: expected a floating-point tensor; got {}, expected float32 or float64", where, a.dtype());
  UNROLL_CHECK(a.dtype() == b.dtype(), DtypeError, "{}: dtypes differ; got a={} and b={}, expected the same dtype",
               where, a.dtype(), b.dtype());
}

Tensor sum_to_reduce(const Tensor& g, const Shape& shape) {
  Tensor r = g;
  const int lead = g.dim() - shape.dim();
  for (int d = 0; d < g.dim(); ++d) {
    const std::int64_t target = d < lead ? 1 : shape[d - lead];
    if (target == 1 && g.shape()[d] != 1) r = sum_dim_keep(r, d);
  }
  return r.view_as_shape(shape);
}

}  // namespace detail

namespace {
using detail::check_floating;
using detail::kElementwiseGrain;
using detail::parallel_for;

// y[i] = f(x[i]) for a floating x (f is generic over float and double), split across threads above the grain.
template <class F>
Tensor map(const Tensor& x, F f) {
  Tensor y = detail::empty_like(x);
  dispatch(x.dtype(), [&]<class T>(T*) {
    const T* __restrict px = static_cast<const T*>(x.raw());
    T* __restrict py = static_cast<T*>(y.raw());
    parallel_for(x.numel(), kElementwiseGrain, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t i = s; i < e; ++i) py[i] = f(px[i]);
    });
  });
  return y;
}

// ---------------------------------------------------------------------------------------------
// Binary arithmetic with broadcasting.
// logaddexp and sigmoid_of_diff (sigmoid(a - b), logaddexp's gradient weight) reuse the broadcasting kernel.
enum class BinOp { add, sub, mul, div, logaddexp, sigmoid_of_diff };

template <BinOp op, class T>
inline T apply(T a, T b) {
  if constexpr (op == BinOp::add)
    return a + b;
  else if constexpr (op == BinOp::sub)
    return a - b;
  else if constexpr (op == BinOp::mul)
    return a * b;
  else if constexpr (op == BinOp::div)
    return a / b;
  else if constexpr (op == BinOp::logaddexp)  // equal infinities return themselves (inf - inf would be nan)
    return std::isinf(a) && a == b ? a : std::max(a, b) + std::log1p(std::exp(-std::abs(a - b)));
  else
    return T(1) / (T(1) + std::exp(b - a));
}

// out = a (op) b, broadcast (not recorded). The output joins the plan as its last operand.
template <BinOp op>
Tensor binary_kernel(const Tensor& a, const Tensor& b, const Shape& out_shape) {
  Tensor out = Tensor::empty(out_shape, a.dtype());
  dispatch(a.dtype(), [&]<class T>(T*) {
    const T* pa = static_cast<const T*>(a.raw());
    const T* pb = static_cast<const T*>(b.raw());
    T* po = static_cast<T*>(out.raw());
    if (a.shape() == b.shape()) {  // the common case needs no plan
      parallel_for(out.numel(), kElementwiseGrain, [&](std::int64_t s, std::int64_t e) {
        for (std::int64_t i = s; i < e; ++i) po[i] = apply<op>(pa[i], pb[i]);
      });
      return;
    }
    const std::int64_t nb = b.numel();
    if (nb > 0 && b.dim() <= a.dim() &&  // b's shape ends a's shape
        std::equal(b.shape().begin(), b.shape().end(), a.shape().end() - b.dim(), a.shape().end())) {
      // b repeats along a's leading dims (a bias row): rows of a against the whole of b
      parallel_for(a.numel() / nb, std::max<std::int64_t>(1, kElementwiseGrain / nb),
                   [&](std::int64_t r0, std::int64_t r1) {
                     for (std::int64_t r = r0; r < r1; ++r) {
                       const T* __restrict x = pa + r * nb;
                       T* __restrict o = po + r * nb;
                       for (std::int64_t i = 0; i < nb; ++i) o[i] = apply<op>(x[i], pb[i]);
                     }
                   });
      return;
    }
    const auto plan = detail::make_plan(out_shape, {&a.shape(), &b.shape(), &out_shape});
    detail::for_each_row(plan, [&](const auto& off, std::int64_t n, const auto& st) {
      const T* __restrict x = pa + off[0];
      const T* __restrict y = pb + off[1];
      T* __restrict o = po + off[2];
      if (st[0] && st[1]) {
        for (std::int64_t i = 0; i < n; ++i) o[i] = apply<op>(x[i], y[i]);
      } else if (st[0]) {
        const T y0 = y[0];
        for (std::int64_t i = 0; i < n; ++i) o[i] = apply<op>(x[i], y0);
      } else if (st[1]) {
        const T x0 = x[0];
        for (std::int64_t i = 0; i < n; ++i) o[i] = apply<op>(x0, y[i]);
      } else {
        const T v = apply<op>(x[0], y[0]);
        for (std::int64_t i = 0; i < n; ++i) o[i] = v;
      }
    });
  });
  return out;
}

template <BinOp op>
Tensor binary_forward(const char* where, const Tensor& a, const Tensor& b) {
  detail::OpScope op_scope(where);
  detail::check_floating_same(where, a, b);
  const Shape out_shape = a.shape() == b.shape() ? a.shape() : broadcast_shapes(where, a.shape(), b.shape());
  return binary_kernel<op>(a, b, out_shape);
}

// g ⊙ x with broadcasting (not recorded): a backward's chain-rule product, which the caller reduces to its
// input's shape with sum_to.
Tensor times(const Tensor& g, const Tensor& x) {
  return binary_kernel<BinOp::mul>(
      g, x, g.shape() == x.shape() ? g.shape() : broadcast_shapes("backward", g.shape(), x.shape()));
}

// ---------------------------------------------------------------------------------------------
// Unary maps. `Fwd(x)` computes y; `Bwd(saved, g)` computes dx from the saved value (x or y, chosen by
// `save`) so that backward keeps alive only what it needs.
enum class Save { input, output };

template <Save save, class Fwd, class Bwd>
Tensor unary(const char* name, const Tensor& x, Fwd fwd, Bwd bwd) {
  detail::OpScope op_scope(name);
  check_floating(name, x);
  Tensor y = map(x, fwd);
  if (autograd::needs_grad({&x})) {
    autograd::record(name, y, {&x}, [saved = (save == Save::input ? x : y).detach(), bwd](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      Tensor dx = detail::empty_like(g);
      dispatch(g.dtype(), [&]<class T>(T*) {
        const T* __restrict ps = static_cast<const T*>(saved.raw());
        const T* __restrict pg = static_cast<const T*>(g.raw());
        T* __restrict pd = static_cast<T*>(dx.raw());
        parallel_for(g.numel(), kElementwiseGrain, [&](std::int64_t s, std::int64_t e) {
          for (std::int64_t i = s; i < e; ++i) pd[i] = bwd(ps[i], pg[i]);
        });
      });
      sink.add(0, std::move(dx));
    });
  }
  return y;
}

}  // namespace

// y = a + b;  da = sum_to(g), db = sum_to(g)
Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward<BinOp::add>("add", a, b);
  if (autograd::needs_grad({&a, &b}))
    autograd::record("add", out, {&a, &b}, [](autograd::GradSink& sink) {  // the engine knows the input shapes
      const Tensor& g = sink.grad_output();
      if (sink.needs(0)) sink.add(0, detail::sum_to(g, sink.input_shape(0)));
      if (sink.needs(1)) sink.add(1, detail::sum_to(g, sink.input_shape(1)));
    });
  detail::trace_hook(detail::TraceOp::add, {&a, &b}, out);
  return out;
}

// y = a - b;  da = sum_to(g), db = -sum_to(g)
Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward<BinOp::sub>("sub", a, b);
  if (autograd::needs_grad({&a, &b}))
    autograd::record("sub", out, {&a, &b}, [](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      if (sink.needs(0)) sink.add(0, detail::sum_to(g, sink.input_shape(0)));
      if (sink.needs(1)) sink.add(1, mul(detail::sum_to(g, sink.input_shape(1)), -1.0));
    });
  detail::trace_hook(detail::TraceOp::sub, {&a, &b}, out);
  return out;
}

// y = a * b;  da = sum_to(g b), db = sum_to(g a)
Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward<BinOp::mul>("mul", a, b);
  if (autograd::needs_grad({&a, &b})) {
    // Save an operand only if the other one needs its gradient.
    Tensor keep_a = b.requires_grad() ? a.detach() : Tensor();
    Tensor keep_b = a.requires_grad() ? b.detach() : Tensor();
    autograd::record("mul", out, {&a, &b}, [a = std::move(keep_a), b = std::move(keep_b)](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      if (sink.needs(0)) sink.add(0, detail::sum_to(times(g, b), sink.input_shape(0)));
      if (sink.needs(1)) sink.add(1, detail::sum_to(times(g, a), sink.input_shape(1)));
    });
  }
  detail::trace_hook(detail::TraceOp::mul, {&a, &b}, out);
  return out;
}

// y = a / b;  da = sum_to(g / b), db = -sum_to(g y / b)
Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward<BinOp::div>("div", a, b);
  if (autograd::needs_grad({&a, &b}))
    autograd::record("div", out, {&a, &b}, [b = b.detach(), y = out.detach()](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      Tensor g_over_b = binary_kernel<BinOp::div>(g, b, g.shape());
      if (sink.needs(1)) sink.add(1, detail::sum_to(mul(times(g_over_b, y), -1.0), sink.input_shape(1)));
      if (sink.needs(0)) sink.add(0, detail::sum_to(std::move(g_over_b), sink.input_shape(0)));
    });
  detail::trace_hook(detail::TraceOp::div, {&a, &b}, out);
  return out;
}

// y = log(e^a + e^b) = max(a, b) + log1p(e^-|a-b|);  da = sum_to(g e^(a-y)) = sum_to(g sigmoid(a-b)),
// db = sum_to(g sigmoid(b-a))
Tensor logaddexp(const Tensor& a, const Tensor& b) {
  Tensor out = binary_forward<BinOp::logaddexp>("logaddexp", a, b);
  if (autograd::needs_grad({&a, &b}))
    autograd::record("logaddexp", out, {&a, &b}, [a = a.detach(), b = b.detach()](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      // Each weight is computed on its own (not 1 - the other), so a tiny one keeps its relative accuracy.
      if (sink.needs(0))
        sink.add(0,
                 detail::sum_to(times(g, binary_kernel<BinOp::sigmoid_of_diff>(a, b, g.shape())), sink.input_shape(0)));
      if (sink.needs(1))
        sink.add(1,
                 detail::sum_to(times(g, binary_kernel<BinOp::sigmoid_of_diff>(b, a, g.shape())), sink.input_shape(1)));
    });
  return out;
}

// Tensor–scalar forms: y = f(x, s) with df/dx constant, so backward is g times a constant.
namespace {
template <class F>
Tensor scalar_op(const char* name, const Tensor& x, double dydx, F f) {
  detail::OpScope op_scope(name);
  check_floating(name, x);
  Tensor y = map(x, f);
  if (autograd::needs_grad({&x}))
    autograd::record(name, y, {&x}, [dydx](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      sink.add(0, dydx == 1.0 ? g : mul(g, dydx));
    });
  return y;
}
}  // namespace

Tensor add(const Tensor& x, double s) {
  Tensor y = scalar_op("add", x, 1.0, [s](auto v) { return v + static_cast<decltype(v)>(s); });
  detail::trace_hook(detail::TraceOp::add_s, {&x}, y, s);
  return y;
}
Tensor sub(const Tensor& x, double s) {
  Tensor y = scalar_op("sub", x, 1.0, [s](auto v) { return v - static_cast<decltype(v)>(s); });
  detail::trace_hook(detail::TraceOp::sub_s, {&x}, y, s);
  return y;
}
Tensor rsub(const Tensor& x, double s) {
  Tensor y = scalar_op("rsub", x, -1.0, [s](auto v) { return static_cast<decltype(v)>(s) - v; });
  detail::trace_hook(detail::TraceOp::rsub_s, {&x}, y, s);
  return y;
}
Tensor div(const Tensor& x, double s) {
  Tensor y = scalar_op("div", x, 1.0 / s, [s](auto v) { return v / static_cast<decltype(v)>(s); });
  detail::trace_hook(detail::TraceOp::div_s, {&x}, y, s);
  return y;
}
Tensor mul(const Tensor& x, double s) {
  Tensor y = scalar_op("mul", x, s, [s](auto v) { return v * static_cast<decltype(v)>(s); });
  detail::trace_hook(detail::TraceOp::mul_s, {&x}, y, s);
  return y;
}
// y = s / x;  dx = -g s / x^2 = -g y / x
Tensor rdiv(const Tensor& x, double s) {
  Tensor y = unary<Save::input>(
      "rdiv", x, [s](auto v) { return static_cast<decltype(v)>(s) / v; },
      [s](auto v, auto g) { return -g * static_cast<decltype(v)>(s) / (v * v); });
  detail::trace_hook(detail::TraceOp::rdiv_s, {&x}, y, s);
  return y;
}

// y = -x;  dx = -g
Tensor neg(const Tensor& x) {
  Tensor y = scalar_op("neg", x, -1.0, [](auto v) { return -v; });
  detail::trace_hook(detail::TraceOp::neg, {&x}, y);
  return y;
}
// y = e^x;  dx = g y
Tensor exp(const Tensor& x) {
  Tensor y = unary<Save::output>(
      "exp", x, [](auto v) { return std::exp(v); }, [](auto y, auto g) { return g * y; });
  detail::trace_hook(detail::TraceOp::exp, {&x}, y);
  return y;
}
// y = ln x;  dx = g / x
Tensor log(const Tensor& x) {
  Tensor y = unary<Save::input>(
      "log", x, [](auto v) { return std::log(v); }, [](auto v, auto g) { return g / v; });
  detail::trace_hook(detail::TraceOp::log, {&x}, y);
  return y;
}
// y = sqrt x;  dx = g / (2 y)
Tensor sqrt(const Tensor& x) {
  Tensor y = unary<Save::output>(
      "sqrt", x, [](auto v) { return std::sqrt(v); }, [](auto y, auto g) { return g / (y + y); });
  detail::trace_hook(detail::TraceOp::sqrt, {&x}, y);
  return y;
}
// y = |x|;  dx = g sign(x)
Tensor abs(const Tensor& x) {
  Tensor y = unary<Save::input>(
      "abs", x, [](auto v) { return std::abs(v); },
      [](auto v, auto g) { return v > 0 ? g : (v < 0 ? -g : decltype(g)(0)); });
  detail::trace_hook(detail::TraceOp::abs, {&x}, y);
  return y;
}
// y = x^e;  dx = g e x^(e-1)
Tensor pow(const Tensor& x, double e) {
  Tensor y = unary<Save::input>(
      "pow", x, [e](auto v) { return static_cast<decltype(v)>(std::pow(v, static_cast<decltype(v)>(e))); },
      [e](auto v, auto g) {
        using T = decltype(v);
        return e == 0.0 ? T(0) : static_cast<T>(g * static_cast<T>(e) * std::pow(v, static_cast<T>(e - 1)));
      });
  detail::trace_hook(detail::TraceOp::pow_s, {&x}, y, e);
  return y;
}
// y = tanh x;  dx = g (1 - y^2)
Tensor tanh(const Tensor& x) {
  Tensor y = unary<Save::output>(
      "tanh", x,
      [](auto v) { return detail::tanh_of(v); },
      [](auto y, auto g) { return g * (1 - y * y); });
  detail::trace_hook(detail::TraceOp::tanh, {&x}, y);
  return y;
}
// y = 1 / (1 + e^-x);  dx = g y (1 - y)
Tensor sigmoid(const Tensor& x) {
  Tensor y = unary<Save::output>(
      "sigmoid", x,
      [](auto v) { return detail::sigmoid_of(v); },
      [](auto y, auto g) { return g * y * (1 - y); });
  detail::trace_hook(detail::TraceOp::sigmoid, {&x}, y);
  return y;
}
// y = max(x, 0);  dx = g [y > 0]
Tensor relu(const Tensor& x) {
  Tensor y = unary<Save::output>(
      "relu", x, [](auto v) { return v > 0 ? v : decltype(v)(0); },
      [](auto y, auto g) { return y > 0 ? g : decltype(g)(0); });
  detail::trace_hook(detail::TraceOp::relu, {&x}, y);
  return y;
}
// y = log(1 + e^(bx)) / b (x where bx > t);  dx = g sigmoid(bx) (g where bx > t)
Tensor softplus(const Tensor& x, double beta, double threshold) {
  Tensor y = unary<Save::input>(
      "softplus", x,
      [beta, threshold](auto v) {
        using T = decltype(v);
        const T bx = v * static_cast<T>(beta);
        return bx > static_cast<T>(threshold) ? v : static_cast<T>(std::log1p(std::exp(bx)) / static_cast<T>(beta));
      },
      [beta, threshold](auto v, auto g) {
        using T = decltype(v);
        const T bx = v * static_cast<T>(beta);
        if (bx > static_cast<T>(threshold)) return g;
        const T z = std::exp(bx);
        return g * z / (z + T(1));
      });
  detail::trace_hook(detail::TraceOp::softplus, {&x}, y, beta, threshold);
  return y;
}
// y = min(x, 0) - log1p(e^-|x|) = -softplus(-x);  dx = g sigmoid(-x) = g / (1 + e^x)
Tensor logsigmoid(const Tensor& x) {
  Tensor y = unary<Save::input>(
      "logsigmoid", x,
      [](auto v) {
        using T = decltype(v);
        return std::min(v, T(0)) - std::log1p(std::exp(-std::abs(v)));
      },
      [](auto v, auto g) { return g / (decltype(v)(1) + std::exp(v)); });
  detail::trace_hook(detail::TraceOp::logsigmoid, {&x}, y);
  return y;
}
// y = x s, s = sigmoid(x);  dx = g s (1 + x (1 - s))
Tensor silu(const Tensor& x) {
  Tensor y = unary<Save::input>(
      "silu", x, [](auto v) { return v / (decltype(v)(1) + std::exp(-v)); },
      [](auto v, auto g) {
        using T = decltype(v);
        const T s = T(1) / (T(1) + std::exp(-v));
        return g * s * (T(1) + v * (T(1) - s));
      });
  detail::trace_hook(detail::TraceOp::silu, {&x}, y);
  return y;
}

namespace {                                             // gelu's constants
constexpr double kSqrt1_2 = 0.70710678118654752440;     // 1 / sqrt 2
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi)
constexpr double kSqrt2_Pi = 0.79788456080286535588;    // sqrt(2 / pi)
constexpr double kCubic = 0.044715;                     // the cubic term of the tanh form
}  // namespace

// none: y = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2;  dx = g (Phi(x) + x e^(-x^2/2) / sqrt(2 pi))
// tanh: y = x (1 + t) / 2, t = tanh(k (x + c x^3));  dx = g ((1 + t) / 2 + x (1 - t^2) k (1 + 3 c x^2) / 2)
Tensor gelu(const Tensor& x, GeluApproximation approximate) {
  if (approximate == GeluApproximation::tanh)
    return unary<Save::input>(
        "gelu", x,
        [](auto v) {
          using T = decltype(v);
          return T(0.5) * v * (T(1) + std::tanh(T(kSqrt2_Pi) * (v + T(kCubic) * v * v * v)));
        },
        [](auto v, auto g) {
          using T = decltype(v);
          const T t = std::tanh(T(kSqrt2_Pi) * (v + T(kCubic) * v * v * v));
          const T du = T(kSqrt2_Pi) * (T(1) + T(3 * kCubic) * v * v);
          return g * (T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * du);
        });
  UNROLL_CHECK(approximate == GeluApproximation::none, ValueError,
               "gelu: unknown approximation; got {}, expected GeluApproximation::none or ::tanh",
               static_cast<int>(approximate));
  return unary<Save::input>(
      "gelu", x,
      [](auto v) {
        using T = decltype(v);
        return T(0.5) * v * (T(1) + std::erf(v * T(kSqrt1_2)));
      },
      [](auto v, auto g) {
        using T = decltype(v);
        const T cdf = T(0.5) * (T(1) + std::erf(v * T(kSqrt1_2)));
        return g * (cdf + v * T(kInvSqrt2Pi) * std::exp(T(-0.5) * v * v));
      });
}
// y = min(max(x, lo), hi);  dx = g [lo <= x <= hi]
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max) {
  UNROLL_CHECK(!min || !max || *min <= *max, ValueError,
               "clamp: empty range; got min={} and max={}, expected min <= max", *min, *max);
  const double lo = min.value_or(-INFINITY), hi = max.value_or(INFINITY);
  return unary<Save::input>(
      "clamp", x,
      [lo, hi](auto v) {
        using T = decltype(v);
        return v < static_cast<T>(lo) ? static_cast<T>(lo) : (v > static_cast<T>(hi) ? static_cast<T>(hi) : v);
      },
      [lo, hi](auto v, auto g) {
        using T = decltype(v);
        return (v >= static_cast<T>(lo) && v <= static_cast<T>(hi)) ? g : T(0);
      });
}

// ---------------------------------------------------------------------------------------------
namespace {
// out = cond ? a : b with broadcasting of all three (cond of any dtype; a, b of out's dtype).
Tensor select_kernel(const Tensor& cond, const Tensor& a, const Tensor& b, const Shape& out_shape) {
  Tensor out = Tensor::empty(out_shape, a.dtype());
  const auto plan = detail::make_plan(out_shape, {&cond.shape(), &a.shape(), &b.shape(), &out_shape});
  dispatch(cond.dtype(), [&]<class C>(C*) {
    dispatch(a.dtype(), [&]<class T>(T*) {
      const C* pc = static_cast<const C*>(cond.raw());
      const T* pa = static_cast<const T*>(a.raw());
      const T* pb = static_cast<const T*>(b.raw());
      T* po = static_cast<T*>(out.raw());
      detail::for_each_row(plan, [&](const auto& off, std::int64_t n, const auto& st) {
        for (std::int64_t i = 0; i < n; ++i)
          po[off[3] + i] = pc[off[0] + i * st[0]] != C(0) ? pa[off[1] + i * st[1]] : pb[off[2] + i * st[2]];
      });
    });
  });
  return out;
}
Tensor zeros_scalar(Dtype d) { return zeros(Shape{}, d); }
}  // namespace

// y = c ? a : b;  da = sum_to(c ? g : 0), db = sum_to(c ? 0 : g)
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  detail::OpScope op_scope("where");
  detail::check_floating_same("where", a, b);
  UNROLL_CHECK(cond.defined(), StateError, "where: condition is undefined; got an undefined tensor, expected a tensor");
  const Shape ab = broadcast_shapes("where", a.shape(), b.shape());
  UNROLL_CHECK(can_broadcast(cond.shape(), ab), ShapeError,
               "where: condition does not broadcast with the values; got cond={} and values of shape {}, expected "
               "equal sizes or 1 in each dimension",
               cond.shape(), ab);
  const Shape out_shape = broadcast_shapes("where", cond.shape(), ab);
  Tensor out = select_kernel(cond, a, b, out_shape);
  if (autograd::needs_grad({&a, &b}))
    autograd::record("where", out, {&a, &b}, [c = cond.detach()](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      const Tensor zero = zeros_scalar(g.dtype());
      if (sink.needs(0)) sink.add(0, detail::sum_to(select_kernel(c, g, zero, g.shape()), sink.input_shape(0)));
      if (sink.needs(1)) sink.add(1, detail::sum_to(select_kernel(c, zero, g, g.shape()), sink.input_shape(1)));
    });
  return out;
}

// y = m ? v : x;  dx = m ? 0 : g
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value) {
  detail::OpScope op_scope("masked_fill");
  check_floating("masked_fill", x);
  UNROLL_CHECK(mask.defined(), StateError,
               "masked_fill: mask is undefined; got an undefined tensor, expected a tensor");
  UNROLL_CHECK(broadcast_shapes("masked_fill", x.shape(), mask.shape()) == x.shape(), ShapeError,
               "masked_fill: mask does not broadcast to the input; got mask={} and x={}, expected a mask "
               "broadcastable to x",
               mask.shape(), x.shape());
  const Tensor fill = full(Shape{}, value, x.dtype());
  Tensor out = select_kernel(mask, fill, x, x.shape());
  if (autograd::needs_grad({&x}))
    autograd::record("masked_fill", out, {&x}, [m = mask.detach()](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      sink.add(0, select_kernel(m, zeros_scalar(g.dtype()), g, g.shape()));
    });
  return out;
}

// y = x m / (1 - p), m ~ Bernoulli(1 - p);  dx = g m / (1 - p)
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  detail::OpScope op_scope("dropout");
  check_floating("dropout", x);
  UNROLL_CHECK(p >= 0 && p <= 1, ValueError, "dropout: probability out of range; got p={}, expected in [0, 1]", p);
  if (!training || p == 0) return x;
  Tensor scale = bernoulli(x.shape(), 1 - p, x.dtype(), gen);
  if (p < 1) scale = mul(scale.detach(), 1.0 / (1 - p));
  Tensor out = binary_kernel<BinOp::mul>(x, scale, x.shape());
  if (autograd::needs_grad({&x}))
    autograd::record("dropout", out, {&x}, [scale = std::move(scale)](autograd::GradSink& sink) {
      sink.add(0, binary_kernel<BinOp::mul>(sink.grad_output(), scale, scale.shape()));
    });
  return out;
}

// y = convert(x);  dx = convert(g) back
Tensor to(const Tensor& x, Dtype dtype) {
  detail::OpScope op_scope("to");
  UNROLL_CHECK(x.defined(), StateError, "to: tensor is undefined; got an undefined tensor, expected a tensor");
  if (x.dtype() == dtype) return x;
  Tensor out = convert(x, dtype);
  if (is_floating(x.dtype()) && is_floating(dtype) && autograd::needs_grad({&x}))
    autograd::record("to", out, {&x},
                     [from = x.dtype()](autograd::GradSink& sink) { sink.add(0, convert(sink.grad_output(), from)); });
  return out;
}

namespace {
void check_in_place(const char* where, const Tensor& x) {
  check_floating(where, x);
  UNROLL_CHECK(!(autograd::grad_enabled() && x.requires_grad()), StateError,
               "{}: in-place update of a tensor that requires grad; got one while grad mode is on, expected the update "
               "inside a NoGradGuard",
               where);
}
}  // namespace

// x += alpha y
void add_(Tensor& x, const Tensor& y, double alpha) {
  check_in_place("add_", x);
  detail::check_floating_same("add_", x, y);
  UNROLL_CHECK(x.shape() == y.shape(), ShapeError, "add_: shapes differ; got x={} and y={}, expected equal shapes",
               x.shape(), y.shape());
  dispatch(x.dtype(), [&]<class T>(T*) {
    T* __restrict px = static_cast<T*>(x.raw());
    const T* __restrict py = static_cast<const T*>(y.raw());
    const T a = static_cast<T>(alpha);
    parallel_for(x.numel(), kElementwiseGrain, [&](std::int64_t s, std::int64_t e) {
      for (std::int64_t i = s; i < e; ++i) px[i] += a * py[i];
    });
  });
}

// x = min(max(x, lo), hi)
void clamp_(Tensor& x, std::optional<double> min, std::optional<double> max) {
  check_in_place("clamp_", x);
  UNROLL_CHECK(!min || !max || *min <= *max, ValueError,
               "clamp_: empty range; got min={} and max={}, expected min <= max", *min, *max);
  const double lo = min.value_or(-INFINITY), hi = max.value_or(INFINITY);
  dispatch(x.dtype(), [&]<class T>(T*) {
    T* px = static_cast<T*>(x.raw());
    const T l = static_cast<T>(lo), h = static_cast<T>(hi);
    parallel_for(x.numel(), kElementwiseGrain, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) px[i] = px[i] < l ? l : (px[i] > h ? h : px[i]);
    });
  });
}

// x = src
void copy_(Tensor& x, const Tensor& src) {
  check_in_place("copy_", x);
  UNROLL_CHECK(src.defined() && src.shape() == x.shape(), ShapeError,
               "copy_: shapes differ; got x={} and src={}, expected equal shapes", x.shape(),
               src.defined() ? fmt::format("{}", src.shape()) : std::string("undefined"));
  UNROLL_CHECK(is_floating(src.dtype()) || src.dtype() == Dtype::int64, DtypeError,
               "copy_: source dtype not supported; got {}, expected float32, float64 or int64", src.dtype());
  if (src.same_data(x)) return;
  // A source of another dtype, or one that shares x's storage (a view that may overlap it), is converted or
  // copied first so the write never reads what it has already overwritten.
  const Tensor value = src.dtype() == x.dtype() && !src.shares_storage(x) ? src : convert(src, x.dtype());
  std::memcpy(x.raw(), value.raw(), static_cast<std::size_t>(x.numel()) * dtype_size(x.dtype()));
}

// x *= s
void mul_(Tensor& x, double s) {
  check_in_place("mul_", x);
  dispatch(x.dtype(), [&]<class T>(T*) {
    T* px = static_cast<T*>(x.raw());
    const T a = static_cast<T>(s);
    parallel_for(x.numel(), kElementwiseGrain, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i) px[i] *= a;
    });
  });
}

}  // namespace unroll
