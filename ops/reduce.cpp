#include "reduce.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "../autograd/tape.hpp"
#include "broadcast.hpp"
#include "elementwise.hpp"
#include "fast_math.hpp"
#include "kernels.hpp"
#include "trace.hpp"

namespace unroll {

// Sum over dim d viewed as [outer, n, inner]: rows of the inner block are added, so the loop vectorises.
// float32 sums of a whole contiguous dim (inner == 1) accumulate in double for accuracy.
Tensor detail::sum_dim_keep(const Tensor& x, int d) {
  Shape out_shape = x.shape();
  out_shape[d] = 1;
  Tensor out = Tensor::empty(out_shape, x.dtype());
  const std::int64_t outer = x.shape().numel(0, d), n = x.shape()[d], inner = x.shape().numel(d + 1, x.dim());
  dispatch(x.dtype(), [&]<class T>(T*) {
    const T* px = static_cast<const T*>(x.raw());
    T* po = static_cast<T*>(out.raw());
    parallel_for(outer, std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(n * inner, 1)),
                 [&](std::int64_t o0, std::int64_t o1) {
                   for (std::int64_t o = o0; o < o1; ++o) {
                     const T* src = px + o * n * inner;
                     T* __restrict dst = po + o * inner;
                     if (inner == 1) {
                       using Acc = std::conditional_t<std::is_same_v<T, float>, double, T>;
                       Acc acc = 0;
                       for (std::int64_t r = 0; r < n; ++r) acc += src[r];
                       dst[0] = static_cast<T>(acc);
                       continue;
                     }
                     std::fill_n(dst, inner, T(0));
                     for (std::int64_t r = 0; r < n; ++r) {
                       const T* __restrict row = src + r * inner;
                       for (std::int64_t i = 0; i < inner; ++i) dst[i] += row[i];
                     }
                   }
                 });
  });
  return out;
}

namespace {
using detail::check_floating;
using detail::kElementwiseGrain;
using detail::parallel_for;

// g (shape `from`, broadcastable) -> the full `to` shape, times `scale`.
Tensor expand_scaled(const Tensor& g, const Shape& to, double scale) {
  Tensor out = Tensor::empty(to, g.dtype());
  const auto plan = detail::make_plan(to, {&g.shape(), &to});
  dispatch(g.dtype(), [&]<class T>(T*) {
    const T* pg = static_cast<const T*>(g.raw());
    T* po = static_cast<T*>(out.raw());
    const T s = static_cast<T>(scale);
    detail::for_each_row(plan, [&](const auto& off, std::int64_t n, const auto& st) {
      if (st[0])
        for (std::int64_t i = 0; i < n; ++i) po[off[1] + i] = pg[off[0] + i] * s;
      else
        std::fill_n(po + off[1], n, pg[off[0]] * s);
    });
  });
  return out;
}

// Sorted, unique, wrapped dims; empty `dims` means all.
std::vector<int> reduce_dims(const char* where, const Tensor& x, const std::vector<std::int64_t>& dims) {
  std::vector<int> out;
  if (dims.empty()) {
    for (int d = 0; d < x.dim(); ++d) out.push_back(d);
    return out;
  }
  for (std::int64_t d : dims) out.push_back(wrap_dim(where, d, x.dim()));
  std::sort(out.begin(), out.end());
  UNROLL_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), ValueError,
               "{}: repeated dim; got [{}], expected distinct dims", where, fmt::join(dims, ", "));
  return out;
}

Tensor sum_or_mean(const char* name, const Tensor& x, const std::vector<int>& dims, bool keepdim, bool is_mean) {
  detail::OpScope op_scope(name);
  check_floating(name, x);
  Tensor r = x;
  std::int64_t count = 1;
  Shape kept = x.shape();
  Shape dropped;
  for (int d : dims) {
    count *= x.shape()[d];
    r = detail::sum_dim_keep(r, d);
    kept[d] = 1;
  }
  for (int d = 0; d < x.dim(); ++d)
    if (std::find(dims.begin(), dims.end(), d) == dims.end()) dropped.push_back(x.shape()[d]);
  if (dims.empty()) r = copy_of(x);  // a 0-d input: the result must not alias it
  const double scale = is_mean ? 1.0 / static_cast<double>(count) : 1.0;
  Tensor out = (is_mean ? expand_scaled(r, r.shape(), scale) : r).view_as_shape(keepdim ? kept : dropped);
  if (autograd::needs_grad({&x}))
    autograd::record(name, out, {&x}, [kept, in_shape = x.shape(), scale](autograd::GradSink& sink) {
      sink.add(0, expand_scaled(sink.grad_output().view_as_shape(kept), in_shape, scale));
    });
  return out;
}
}  // namespace

Tensor sum(const Tensor& x) { return sum(x, {}, false); }
Tensor sum(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  const std::vector<int> d = reduce_dims("sum", x, dims);
  Tensor y = sum_or_mean("sum", x, d, keepdim, false);
  if (keepdim && x.dim() >= 1 && d == std::vector<int>{x.dim() - 1})  // over the features: fusable
    detail::trace_hook(detail::TraceOp::sum_last, {&x}, y);
  return y;
}
Tensor mean(const Tensor& x) { return mean(x, {}, false); }
Tensor mean(const Tensor& x, const std::vector<std::int64_t>& dims, bool keepdim) {
  // Averaging zero elements gives nan (0 / 0), as in PyTorch.
  const std::vector<int> d = reduce_dims("mean", x, dims);
  Tensor y = sum_or_mean("mean", x, d, keepdim, true);
  if (keepdim && x.dim() >= 1 && d == std::vector<int>{x.dim() - 1})  // over the features: fusable
    detail::trace_hook(detail::TraceOp::mean_last, {&x}, y);
  return y;
}

namespace {
// Index of the first maximum along dim d of x viewed as [outer, n, inner]; NaN wins (as PyTorch).
Tensor argmax_keep(const Tensor& x, int d) {
  Shape out_shape = x.shape();
  out_shape[d] = 1;
  Tensor idx = Tensor::empty(out_shape, Dtype::int64);
  const std::int64_t outer = x.shape().numel(0, d), n = x.shape()[d], inner = x.shape().numel(d + 1, x.dim());
  std::int64_t* pi = idx.data<std::int64_t>();
  dispatch(x.dtype(), [&]<class T>(T*) {
    const T* px = static_cast<const T*>(x.raw());
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t i = 0; i < inner; ++i) {
        const T* p = px + o * n * inner + i;
        std::int64_t best = 0;
        for (std::int64_t r = 1; r < n; ++r)
          if (p[r * inner] > p[best * inner] ||
              (std::isnan(static_cast<double>(p[r * inner])) && !std::isnan(static_cast<double>(p[best * inner]))))
            best = r;
        pi[o * inner + i] = best;
      }
  });
  return idx;
}
}  // namespace

// y = max_r x[.., r, ..];  dx[.., argmax, ..] = g
Tensor max(const Tensor& x, std::int64_t dim, bool keepdim) {
  check_floating("max", x);
  const int d = wrap_dim("max", dim, x.dim());
  UNROLL_CHECK(x.shape()[d] > 0, ShapeError, "max: reduction over an empty dim; got {} on dim {}, expected size > 0",
               x.shape(), d);
  Tensor idx = argmax_keep(x, d);
  Shape kept = idx.shape();
  Tensor out = Tensor::empty(kept, x.dtype());
  const std::int64_t outer = x.shape().numel(0, d), n = x.shape()[d], inner = x.shape().numel(d + 1, x.dim());
  dispatch(x.dtype(), [&]<class T>(T*) {
    const T* px = static_cast<const T*>(x.raw());
    const std::int64_t* pi = idx.data<std::int64_t>();
    T* po = static_cast<T*>(out.raw());
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t i = 0; i < inner; ++i) po[o * inner + i] = px[(o * n + pi[o * inner + i]) * inner + i];
  });
  Shape final_shape = kept;
  if (!keepdim) final_shape.erase(d);
  out = out.view_as_shape(final_shape);
  if (autograd::needs_grad({&x}))
    autograd::record("max", out, {&x}, [idx = std::move(idx), n, inner, outer](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      bool fresh = false;
      Tensor& dx = sink.buffer(0, fresh, /*zero_fill=*/true);
      dispatch(g.dtype(), [&]<class T>(T*) {
        const T* pg = static_cast<const T*>(g.raw());
        const std::int64_t* pi = idx.data<std::int64_t>();
        T* pd = static_cast<T*>(dx.raw());
        for (std::int64_t o = 0; o < outer; ++o)
          for (std::int64_t i = 0; i < inner; ++i) pd[(o * n + pi[o * inner + i]) * inner + i] += pg[o * inner + i];
      });
    });
  return out;
}

// y = max(x);  dx = g / (number of maxima) at each maximum
Tensor max(const Tensor& x) {
  check_floating("max", x);
  UNROLL_CHECK(x.numel() > 0, ShapeError, "max: empty tensor; got {}, expected at least one element", x.shape());
  Tensor flat = x.view_as_shape(Shape{x.numel()});
  Tensor idx = argmax_keep(flat, 0);
  const std::int64_t best = idx.data<std::int64_t>()[0];
  Tensor out = Tensor::empty(Shape{}, x.dtype());
  std::memcpy(out.raw(), static_cast<const char*>(x.raw()) + best * static_cast<std::int64_t>(dtype_size(x.dtype())),
              dtype_size(x.dtype()));
  if (autograd::needs_grad({&x}))
    autograd::record("max", out, {&x}, [xd = x.detach(), y = out.detach()](autograd::GradSink& sink) {
      Tensor dx = Tensor::empty(xd.shape(), xd.dtype());
      dispatch(xd.dtype(), [&]<class T>(T*) {
        const T* px = static_cast<const T*>(xd.raw());
        const T m = *static_cast<const T*>(y.raw());
        const T g = *static_cast<const T*>(sink.grad_output().raw());
        // the maxima (all NaNs when the maximum is NaN, as PyTorch) share the gradient evenly
        auto is_max = [&](T v) { return std::isnan(m) ? std::isnan(v) : v == m; };
        std::int64_t ties = 0;
        for (std::int64_t i = 0; i < xd.numel(); ++i) ties += is_max(px[i]);
        T* pd = static_cast<T*>(dx.raw());
        for (std::int64_t i = 0; i < xd.numel(); ++i) pd[i] = is_max(px[i]) ? g / static_cast<T>(ties) : T(0);
      });
      sink.add(0, std::move(dx));
    });
  return out;
}

Tensor argmax(const Tensor& x, std::int64_t dim, bool keepdim) {
  UNROLL_CHECK(x.defined(), StateError, "argmax: tensor is undefined; got an undefined tensor, expected a tensor");
  const int d = wrap_dim("argmax", dim, x.dim());
  UNROLL_CHECK(x.shape()[d] > 0, ShapeError, "argmax: reduction over an empty dim; got {} on dim {}, expected size > 0",
               x.shape(), d);
  Tensor idx = argmax_keep(x, d);
  if (keepdim) return idx;
  Shape s = idx.shape();
  s.erase(d);
  return idx.view_as_shape(s);
}

namespace {
// e^v for v <= 0 (an input minus its row's max). float32: the inline exp (a libm call per element was 3%
// of a character-LM step), exactly 0 below e^-87 as libm's underflow gives (so -inf masks stay exact).
template <class T>
T exp_nonpos(T v) {
  if constexpr (std::is_same_v<T, float>)
    return v < -87.0f ? 0.0f : detail::exp_approx(v);
  else
    return std::exp(v);
}

// Softmax-family kernel along dim d of x viewed as [outer, n, inner]. log = false: y = softmax; true: log_softmax.
template <bool log>
Tensor softmax_kernel(const Tensor& x, int d) {
  Tensor y = detail::empty_like(x);
  const std::int64_t outer = x.shape().numel(0, d), n = x.shape()[d], inner = x.shape().numel(d + 1, x.dim());
  dispatch(x.dtype(), [&]<class T>(T*) {
    const T* px = static_cast<const T*>(x.raw());
    T* py = static_cast<T*>(y.raw());
    parallel_for(outer * inner, std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(n, 1)),
                 [&](std::int64_t b, std::int64_t e) {
                   for (std::int64_t k = b; k < e; ++k) {
                     const std::int64_t o = k / inner, i = k % inner;
                     const T* p = px + o * n * inner + i;
                     T* q = py + o * n * inner + i;
                     T m = -std::numeric_limits<T>::infinity();
                     for (std::int64_t r = 0; r < n; ++r) m = std::max(m, p[r * inner]);
                     if (std::isinf(m) && m < 0) m = 0;  // all -inf: avoid inf - inf
                     // The exponentials go into y first (a loop the compiler vectorises), then their sum.
                     for (std::int64_t r = 0; r < n; ++r) q[r * inner] = exp_nonpos<T>(p[r * inner] - m);
                     T s = 0;
                     for (std::int64_t r = 0; r < n; ++r) s += q[r * inner];
                     if constexpr (log) {
                       const T lse = m + std::log(s);
                       for (std::int64_t r = 0; r < n; ++r) q[r * inner] = p[r * inner] - lse;
                     } else {
                       const T inv = T(1) / s;
                       for (std::int64_t r = 0; r < n; ++r) q[r * inner] *= inv;
                     }
                   }
                 });
  });
  return y;
}

template <bool log>
Tensor softmax_op(const char* name, const Tensor& x, std::int64_t dim) {
  detail::OpScope op_scope(name);
  check_floating(name, x);
  const int d = wrap_dim(name, dim, std::max(x.dim(), 1));
  Tensor xv = x.dim() == 0 ? x.view_as_shape(Shape{1}) : x;
  Tensor y = softmax_kernel<log>(xv, d).view_as_shape(x.shape());
  if (autograd::needs_grad({&x}))
    autograd::record(name, y, {&x}, [y_saved = y.detach(), d](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      Tensor dx = detail::empty_like(g);
      const Shape& s = y_saved.dim() == 0 ? Shape{1} : y_saved.shape();
      const std::int64_t outer = s.numel(0, d), n = s[d], inner = s.numel(d + 1, s.dim());
      dispatch(g.dtype(), [&]<class T>(T*) {
        const T* py = static_cast<const T*>(y_saved.raw());
        const T* pg = static_cast<const T*>(g.raw());
        T* pd = static_cast<T*>(dx.raw());
        for (std::int64_t o = 0; o < outer; ++o)
          for (std::int64_t i = 0; i < inner; ++i) {
            const std::int64_t base = o * n * inner + i;
            T acc = 0;
            for (std::int64_t r = 0; r < n; ++r)
              acc += log ? pg[base + r * inner] : pg[base + r * inner] * py[base + r * inner];
            for (std::int64_t r = 0; r < n; ++r) {
              const std::int64_t j = base + r * inner;
              pd[j] = log ? pg[j] - exp_nonpos<T>(py[j]) * acc : py[j] * (pg[j] - acc);
            }
          }
      });
      sink.add(0, std::move(dx));
    });
  return y;
}
}  // namespace

Tensor softmax(const Tensor& x, std::int64_t dim) { return softmax_op<false>("softmax", x, dim); }
Tensor log_softmax(const Tensor& x, std::int64_t dim) { return softmax_op<true>("log_softmax", x, dim); }

// ---------------------------------------------------------------------------------------------
// Running ops along dim d of x viewed as [outer, n, inner]: each of the outer * inner lanes is a sequential
// chain of n steps. Lanes are handled in tiles of adjacent ones, so each step's inner loop runs over
// contiguous memory and vectorises; tiles split across threads above the grain.
namespace {
constexpr std::int64_t kLaneTile = 256;

struct Lanes {
  std::int64_t outer, n, inner;
};
Lanes lanes_of(const Shape& s, int d) { return {s.numel(0, d), s[d], s.numel(d + 1, s.dim())}; }

// Calls f(base, w) for each tile: the lanes base .. base + w - 1 of one outer block (base is the offset of
// their first element at step 0; step r of lane i is at base + r * inner + i).
template <class F>
void for_each_lane_tile(const Lanes& l, F f) {
  const std::int64_t tiles_per_block = (l.inner + kLaneTile - 1) / kLaneTile;
  const std::int64_t width = std::min(kLaneTile, l.inner);  // lanes in a full tile
  const std::int64_t grain = std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(l.n * width, 1));
  parallel_for(l.outer * tiles_per_block, grain, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t k = b; k < e; ++k) {
      const std::int64_t o = k / tiles_per_block, i0 = (k % tiles_per_block) * kLaneTile;
      f(o * l.n * l.inner + i0, std::min(kLaneTile, l.inner - i0));
    }
  });
}

// A 0-d input is scanned as one element (dim 0 or -1, as PyTorch).
int scan_dim(const char* where, const Tensor& x, std::int64_t dim) {
  return wrap_dim(where, dim, std::max(x.dim(), 1));
}
Shape scan_shape(const Tensor& x) { return x.dim() == 0 ? Shape{1} : x.shape(); }

// y = running sum of x along d, from the start (or from the end when `reverse`). float32 accumulates in
// double, as PyTorch does on the CPU, so a long sum does not drift.
template <bool reverse>
Tensor cumsum_kernel(const Tensor& x, const Shape& s, int d) {
  Tensor y = detail::empty_like(x);
  const Lanes l = lanes_of(s, d);
  dispatch(x.dtype(), [&]<class T>(T*) {
    using Acc = std::conditional_t<std::is_same_v<T, float>, double, T>;
    const T* px = static_cast<const T*>(x.raw());
    T* py = static_cast<T*>(y.raw());
    for_each_lane_tile(l, [&](std::int64_t base, std::int64_t w) {
      Acc acc[kLaneTile];
      std::fill_n(acc, w, Acc(0));
      for (std::int64_t step = 0; step < l.n; ++step) {
        const std::int64_t at = base + (reverse ? l.n - 1 - step : step) * l.inner;
        const T* __restrict src = px + at;
        T* __restrict dst = py + at;
        for (std::int64_t i = 0; i < w; ++i) {
          acc[i] += src[i];
          dst[i] = static_cast<T>(acc[i]);
        }
      }
    });
  });
  return y;
}

// log(e^a + e^b); equal infinities return themselves (inf - inf would be nan), as torch.logcumsumexp.
template <class T>
T log_add_exp(T a, T b) {
  return std::isinf(a) && a == b ? a : std::max(a, b) + std::log1p(std::exp(-std::abs(a - b)));
}
// e^(a - b) for a <= b; 1 when a == b, so that -inf inputs (a masked step) keep a finite gradient.
template <class T>
T exp_diff(T a, T b) {
  return a == b ? T(1) : std::exp(a - b);
}
}  // namespace

// y_i = sum_{j <= i} x_j;  dx_j = sum_{i >= j} g_i
Tensor cumsum(const Tensor& x, std::int64_t dim) {
  check_floating("cumsum", x);
  const int d = scan_dim("cumsum", x, dim);
  Tensor y = cumsum_kernel<false>(x, scan_shape(x), d);
  if (autograd::needs_grad({&x}))
    autograd::record("cumsum", y, {&x}, [d](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      sink.add(0, cumsum_kernel<true>(g, scan_shape(g), d));
    });
  return y;
}

// y_i = logaddexp(y_{i-1}, x_i), y_0 = x_0;  dx_j = sum_{i >= j} g_i e^(x_j - y_i) = e^(x_j - y_j) s_j with
// s_j = g_j + e^(y_j - y_{j+1}) s_{j+1}: a reverse scan whose factors are all <= 1 (y never decreases), so
// nothing overflows however large |x| is.
Tensor logcumsumexp(const Tensor& x, std::int64_t dim) {
  check_floating("logcumsumexp", x);
  const int d = scan_dim("logcumsumexp", x, dim);
  Tensor y = detail::empty_like(x);
  const Lanes l = lanes_of(scan_shape(x), d);
  dispatch(x.dtype(), [&]<class T>(T*) {
    const T* px = static_cast<const T*>(x.raw());
    T* py = static_cast<T*>(y.raw());
    for_each_lane_tile(l, [&](std::int64_t base, std::int64_t w) {
      if (l.n > 0) std::copy_n(px + base, w, py + base);
      for (std::int64_t r = 1; r < l.n; ++r) {
        const T* __restrict src = px + base + r * l.inner;
        const T* __restrict prev = py + base + (r - 1) * l.inner;
        T* __restrict dst = py + base + r * l.inner;
        for (std::int64_t i = 0; i < w; ++i) dst[i] = log_add_exp(prev[i], src[i]);
      }
    });
  });
  if (autograd::needs_grad({&x}))
    autograd::record("logcumsumexp", y, {&x}, [xs = x.detach(), ys = y.detach(), l](autograd::GradSink& sink) {
      const Tensor& g = sink.grad_output();
      Tensor dx = detail::empty_like(g);
      dispatch(g.dtype(), [&]<class T>(T*) {
        const T* px = static_cast<const T*>(xs.raw());
        const T* py = static_cast<const T*>(ys.raw());
        const T* pg = static_cast<const T*>(g.raw());
        T* pd = static_cast<T*>(dx.raw());
        for_each_lane_tile(l, [&](std::int64_t base, std::int64_t w) {
          T s[kLaneTile];
          for (std::int64_t r = l.n - 1; r >= 0; --r) {
            const std::int64_t at = base + r * l.inner;
            const T* __restrict xr = px + at, * __restrict yr = py + at, * __restrict gr = pg + at;
            T* __restrict dr = pd + at;
            if (r == l.n - 1) {
              std::copy_n(gr, w, s);
            } else {
              const T* __restrict next = yr + l.inner;
              for (std::int64_t i = 0; i < w; ++i) s[i] = gr[i] + exp_diff(yr[i], next[i]) * s[i];
            }
            for (std::int64_t i = 0; i < w; ++i) dr[i] = exp_diff(xr[i], yr[i]) * s[i];
          }
        });
      });
      sink.add(0, std::move(dx));
    });
  return y;
}

}  // namespace unroll
