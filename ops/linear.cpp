#include "linear.hpp"
#include <cstring>

#include "../autograd/tape.hpp"
#include "../core/blas.hpp"
#include "elementwise.hpp"
#include "trace.hpp"

namespace unroll {

namespace detail {
void add_bias_rows(Tensor& out, const Tensor& bias, bool assign) {
  dispatch_floating("linear", out.dtype(), [&]<class T>(T*) {
    const std::int64_t n = bias.numel(), rows = out.numel() / std::max<std::int64_t>(n, 1);
    const T* b = bias.data<T>();
    T* o = out.data<T>();
    for (std::int64_t r = 0; r < rows; ++r, o += n) {
      if (assign)
        std::memcpy(o, b, static_cast<std::size_t>(n) * sizeof(T));
      else
        for (std::int64_t j = 0; j < n; ++j) o[j] += b[j];
    }
  });
}

void sum_rows_into(Tensor& acc, const Tensor& g, bool assign) {
  dispatch_floating("linear", acc.dtype(), [&]<class T>(T*) {
    const std::int64_t n = acc.numel(), rows = g.numel() / std::max<std::int64_t>(n, 1);
    T* a = acc.data<T>();
    const T* p = g.data<T>();
    if (assign) std::fill(a, a + n, T(0));
    for (std::int64_t r = 0; r < rows; ++r, p += n)
      for (std::int64_t j = 0; j < n; ++j) a[j] += p[j];
  });
}
}  // namespace detail

namespace {
template <class T>
void gemm_t(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const Tensor& A, std::int64_t lda,
            const Tensor& B, std::int64_t ldb, bool accumulate, Tensor& C, std::int64_t ldc) {
  detail::gemm(ta, tb, M, N, K, T(1), static_cast<const T*>(A.raw()), lda, static_cast<const T*>(B.raw()), ldb,
               accumulate ? T(1) : T(0), static_cast<T*>(C.raw()), ldc);
}
}  // namespace

// y = x W^T + b;  dx = g W,  dW = g^T x,  db = sum_rows(g)
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  detail::OpScope op_scope("linear");
  detail::check_floating_same("linear", x, weight);
  UNROLL_CHECK(weight.dim() == 2, ShapeError, "linear: weight must be 2-D [out, in]; got weight={}, expected 2 dims",
               weight.shape());
  UNROLL_CHECK(x.dim() >= 1 && x.shape().back() == weight.shape()[1], ShapeError,
               "linear: input features differ from the weight's; got x={} and weight={}, expected x=[..., {}]",
               x.shape(), weight.shape(), weight.shape()[1]);
  const std::int64_t in = weight.shape()[1], out_f = weight.shape()[0];
  if (bias.defined()) {
    detail::check_floating_same("linear", x, bias);
    UNROLL_CHECK(bias.dim() == 1 && bias.shape()[0] == out_f, ShapeError,
                 "linear: bias does not match the weight; got bias={} and weight={}, expected bias=[{}]", bias.shape(),
                 weight.shape(), out_f);
  }
  const std::int64_t M = x.shape().numel(0, x.dim() - 1);  // rows (also when in == 0)
  Shape out_shape = x.shape();
  out_shape[out_shape.dim() - 1] = out_f;
  Tensor y = Tensor::empty(out_shape, x.dtype());
  if (bias.defined())
    detail::add_bias_rows(y, bias, true);
  else if (in == 0)
    std::memset(y.raw(), 0, static_cast<std::size_t>(y.numel()) * dtype_size(y.dtype()));  // empty sum
  dispatch_floating("linear", x.dtype(), [&]<class T>(T*) {
    gemm_t<T>(false, true, M, out_f, in, x, in, weight, in, bias.defined(), y, out_f);
  });

  if (autograd::needs_grad({&x, &weight, &bias})) {
    Tensor keep_x = weight.requires_grad() ? x.detach() : Tensor();
    Tensor keep_w = x.requires_grad() ? weight.detach() : Tensor();
    autograd::record("linear", y, {&x, &weight, &bias},
                     [x = std::move(keep_x), w = std::move(keep_w), M, in, out_f](autograd::GradSink& sink) {
                       const Tensor& g = sink.grad_output();  // [M, out]
                       bool fresh = false;
                       dispatch_floating("linear", g.dtype(), [&]<class T>(T*) {
                         if (sink.needs(0)) {  // dx [M, in] = g [M, out] . W [out, in]
                           Tensor& dx = sink.buffer(0, fresh);
                           gemm_t<T>(false, false, M, in, out_f, g, out_f, w, in, !fresh, dx, in);
                         }
                         // dW [out, in] = g^T [out, M] . x [M, in]; for few rows (a step of an unrolled
                         // loop) deferred and batched with the other steps' rows into large GEMMs
                         if (sink.needs(1)) sink.add_rows_product(1, g, x);  // leading dims are the rows
                       });
                       if (sink.needs(2)) {
                         Tensor& db = sink.buffer(2, fresh);
                         detail::sum_rows_into(db, g, fresh);
                       }
                     });
  }
  detail::trace_hook(detail::TraceOp::linear, {&x, &weight, &bias}, y);
  return y;
}

}  // namespace unroll
