#include "conv.hpp"

#include <algorithm>

#include "../autograd/tape.hpp"
#include "../core/parallel.hpp"
#include "elementwise.hpp"
#include "kernels.hpp"

namespace unroll {

namespace {
using detail::kElementwiseGrain;
using detail::parallel_for;

// wT [K, C] from w [C, K] (or back, with the sizes swapped): the kernels read one tap for every channel, so
// the tap-major copy makes their inner loop over channels contiguous.
Tensor transpose_2d(const Tensor& w) {
  const std::int64_t rows = w.shape()[0], cols = w.shape()[1];
  Tensor out = Tensor::empty(Shape{cols, rows}, w.dtype());
  dispatch(w.dtype(), [&]<class T>(T*) {
    const T* src = static_cast<const T*>(w.raw());
    T* dst = static_cast<T*>(out.raw());
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
  });
  return out;
}

void check_dtype(const char* name, const Tensor& x, const Tensor& p) {
  UNROLL_CHECK(p.dtype() == x.dtype(), DtypeError, "conv1d: dtypes differ; got x={} and {}={}, expected the same dtype",
               x.dtype(), name, p.dtype());
}
}  // namespace

// y[t] = bias + sum_k w[:, k] x[t - (K-1) + k];  dx[s] = sum_k w[:, k] g[s + K-1 - k],
// dw[:, k] = sum_{t, b} g[t] x[t - (K-1) + k], db = sum_{t, b} g[t]   (per channel; x = 0 before t = 0)
Tensor conv1d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  detail::OpScope op_scope("conv1d");
  detail::check_floating("conv1d", x);
  UNROLL_CHECK(x.dim() == 3, ShapeError, "conv1d: input must be [T, B, C]; got {}, expected 3 dims", x.shape());
  const std::int64_t steps = x.shape()[0], C = x.shape()[2], M = x.shape()[1] * C;
  UNROLL_CHECK(weight.defined(), StateError, "conv1d: weight is undefined; got an undefined tensor, expected [{}, K]",
               C);
  check_dtype("weight", x, weight);
  UNROLL_CHECK(weight.dim() == 2 && weight.shape()[0] == C, ShapeError,
               "conv1d: weight does not match the channels; got weight={} for x={}, expected [{}, K]", weight.shape(),
               x.shape(), C);
  const std::int64_t K = weight.shape()[1];
  UNROLL_CHECK(K >= 1, ValueError, "conv1d: kernel size must be positive; got weight={}, expected K >= 1",
               weight.shape());
  if (bias.defined()) {
    check_dtype("bias", x, bias);
    UNROLL_CHECK(bias.shape() == Shape{C}, ShapeError,
                 "conv1d: bias does not match the channels; got bias={} for x={}, expected [{}]", bias.shape(),
                 x.shape(), C);
  }
  const Tensor wt = transpose_2d(weight);  // [K, C]
  Tensor y = detail::empty_like(x);
  dispatch(x.dtype(), [&]<class T>(T*) {
    const T* px = static_cast<const T*>(x.raw());
    const T* pw = static_cast<const T*>(wt.raw());
    const T* pb = bias.defined() ? static_cast<const T*>(bias.raw()) : nullptr;
    T* py = static_cast<T*>(y.raw());
    parallel_for(steps, std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(M * K, 1)),
                 [&](std::int64_t t0, std::int64_t t1) {
                   for (std::int64_t t = t0; t < t1; ++t) {
                     T* __restrict yt = py + t * M;
                     for (std::int64_t j = 0; j < M; j += C)
                       for (std::int64_t c = 0; c < C; ++c) yt[j + c] = pb ? pb[c] : T(0);
                     for (std::int64_t k = std::max<std::int64_t>(0, K - 1 - t); k < K; ++k) {
                       const T* __restrict xs = px + (t - (K - 1) + k) * M;
                       const T* __restrict wk = pw + k * C;
                       for (std::int64_t j = 0; j < M; j += C)
                         for (std::int64_t c = 0; c < C; ++c) yt[j + c] += wk[c] * xs[j + c];
                     }
                   }
                 });
  });
  if (autograd::needs_grad({&x, &weight, &bias})) {
    // Keep only what a needed gradient reads: dx needs the weight, dw needs x.
    Tensor keep_x = weight.requires_grad() ? x.detach() : Tensor();
    Tensor keep_wt = x.requires_grad() ? wt : Tensor();
    autograd::record(
        "conv1d", y, {&x, &weight, &bias},
        [x_saved = std::move(keep_x), wt = std::move(keep_wt), steps, M, C, K](autograd::GradSink& sink) {
          const Tensor& g = sink.grad_output();
          dispatch(g.dtype(), [&]<class T>(T*) {
            const T* pg = static_cast<const T*>(g.raw());
            if (sink.needs(0)) {
              Tensor dx = detail::empty_like(g);
              const T* pw = static_cast<const T*>(wt.raw());
              T* pd = static_cast<T*>(dx.raw());
              parallel_for(steps, std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(M * K, 1)),
                           [&](std::int64_t s0, std::int64_t s1) {
                             for (std::int64_t s = s0; s < s1; ++s) {
                               T* __restrict ds = pd + s * M;
                               std::fill_n(ds, M, T(0));
                               for (std::int64_t k = std::max<std::int64_t>(0, s + K - steps); k < K;
                                    ++k) {  // t < steps
                                 const T* __restrict gt = pg + (s + K - 1 - k) * M;
                                 const T* __restrict wk = pw + k * C;
                                 for (std::int64_t j = 0; j < M; j += C)
                                   for (std::int64_t c = 0; c < C; ++c) ds[j + c] += wk[c] * gt[j + c];
                               }
                             }
                           });
              sink.add(0, std::move(dx));
            }
            if (sink.needs(1)) {
              Tensor dwt = zeros(Shape{K, C}, g.dtype());  // [K, C], transposed at the end
              const T* px = static_cast<const T*>(x_saved.raw());
              T* pd = static_cast<T*>(dwt.raw());
              parallel_for(K, std::max<std::int64_t>(1, kElementwiseGrain / std::max<std::int64_t>(steps * M, 1)),
                           [&](std::int64_t k0, std::int64_t k1) {
                             for (std::int64_t k = k0; k < k1; ++k) {
                               T* __restrict dk = pd + k * C;
                               for (std::int64_t t = std::max<std::int64_t>(0, K - 1 - k); t < steps; ++t) {
                                 const T* __restrict gt = pg + t * M;
                                 const T* __restrict xk = px + (t - (K - 1) + k) * M;
                                 for (std::int64_t j = 0; j < M; j += C)
                                   for (std::int64_t c = 0; c < C; ++c) dk[c] += gt[j + c] * xk[j + c];
                               }
                             }
                           });
              sink.add(1, transpose_2d(dwt));
            }
            if (sink.needs(2)) {
              Tensor db = zeros(Shape{C}, g.dtype());
              T* __restrict pd = static_cast<T*>(db.raw());
              for (std::int64_t j = 0; j < steps * M; j += C)
                for (std::int64_t c = 0; c < C; ++c) pd[c] += pg[j + c];
              sink.add(2, std::move(db));
            }
          });
        });
  }
  return y;
}

}  // namespace unroll
