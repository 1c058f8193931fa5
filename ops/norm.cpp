#include "norm.hpp"

#include <cmath>

#include "../autograd/tape.hpp"
#include "elementwise.hpp"
#include "linear.hpp"

namespace unroll {

Tensor layer_norm(const Tensor& x, int norm_dims, const Tensor& weight, const Tensor& bias, double eps) {
  detail::OpScope op_scope("layer_norm");
  constexpr const char* where = "layer_norm";
  detail::check_floating(where, x);
  UNROLL_CHECK(norm_dims >= 1 && norm_dims <= x.dim(), ShapeError,
               "{}: cannot normalise over the last {} dims; got x={}, expected 1 <= dims <= {}", where, norm_dims,
               x.shape(), x.dim());
  const Shape row_shape = x.shape().tail(x.dim() - norm_dims);
  for (const Tensor* p : {&weight, &bias})
    if (p->defined()) {
      detail::check_floating_same(where, x, *p);
      UNROLL_CHECK(p->shape() == row_shape, ShapeError,
                   "{}: {} does not match the normalised shape; got {}, expected {}", where,
                   p == &weight ? "weight" : "bias", p->shape(), row_shape);
    }
  UNROLL_CHECK(eps >= 0, ValueError, "{}: eps must not be negative; got {}", where, eps);
  const std::int64_t N = row_shape.numel(), rows = N == 0 ? 0 : x.numel() / N;
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  Tensor xhat = Tensor::empty(x.shape(), x.dtype());
  Tensor rstd = Tensor::empty(Shape({rows}), x.dtype());
  dispatch_floating(where, x.dtype(), [&]<class T>(T*) {
    const T* px = x.data<T>();
    T *py = y.data<T>(), *ph = xhat.data<T>(), *pr = rstd.data<T>();
    const T* w = weight.defined() ? weight.data<T>() : nullptr;
    const T* b = bias.defined() ? bias.data<T>() : nullptr;
    for (std::int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * N;
      double mean = 0, var = 0;  // accumulate in double: the row may be long
      for (std::int64_t j = 0; j < N; ++j) mean += xr[j];
      mean /= static_cast<double>(N);
      for (std::int64_t j = 0; j < N; ++j) var += (xr[j] - mean) * (xr[j] - mean);
      var /= static_cast<double>(N);
      const T rs = static_cast<T>(1.0 / std::sqrt(var + eps));
      pr[r] = rs;
      for (std::int64_t j = 0; j < N; ++j) {
        const T h = (xr[j] - static_cast<T>(mean)) * rs;
        ph[r * N + j] = h;
        py[r * N + j] = (w ? h * w[j] : h) + (b ? b[j] : T(0));
      }
    }
  });
  if (autograd::needs_grad({&x, &weight, &bias})) {
    autograd::record(
        where, y, {&x, &weight, &bias},
        [xhat = std::move(xhat), rstd = std::move(rstd), w = weight.detach(), rows, N](autograd::GradSink& sink) {
          const Tensor& g = sink.grad_output();
          dispatch_floating("layer_norm", g.dtype(), [&]<class T>(T*) {
            const T *pg = g.data<T>(), *ph = xhat.data<T>(), *pr = rstd.data<T>();
            const T* pw = w.defined() ? w.data<T>() : nullptr;
            if (sink.needs(0)) {
              Tensor dx = Tensor::empty(g.shape(), g.dtype());
              T* pd = dx.data<T>();
              for (std::int64_t r = 0; r < rows; ++r) {
                const T *gr = pg + r * N, *hr = ph + r * N;
                T m1 = 0, m2 = 0;
                for (std::int64_t j = 0; j < N; ++j) {
                  const T gw = pw ? gr[j] * pw[j] : gr[j];
                  m1 += gw;
                  m2 += gw * hr[j];
                }
                m1 /= static_cast<T>(N);
                m2 /= static_cast<T>(N);
                for (std::int64_t j = 0; j < N; ++j) {
                  const T gw = pw ? gr[j] * pw[j] : gr[j];
                  pd[r * N + j] = pr[r] * (gw - m1 - hr[j] * m2);
                }
              }
              sink.add(0, std::move(dx));
            }
            if (sink.needs(1)) {
              Tensor gh = Tensor::empty(g.shape(), g.dtype());
              T* p = gh.data<T>();
              for (std::int64_t k = 0; k < rows * N; ++k) p[k] = pg[k] * ph[k];
              bool fresh = false;
              Tensor& dw = sink.buffer(1, fresh);
              detail::sum_rows_into(dw, gh, fresh);
            }
            if (sink.needs(2)) {
              bool fresh = false;
              Tensor& db = sink.buffer(2, fresh);
              detail::sum_rows_into(db, g, fresh);
            }
          });
        });
  }
  return y;
}

}  // namespace unroll
