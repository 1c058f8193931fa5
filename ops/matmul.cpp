#include "matmul.hpp"

#include "../autograd/tape.hpp"
#include "../core/blas.hpp"
#include "elementwise.hpp"
#include "trace.hpp"

namespace unroll {
namespace {

// One operand of a (batched) product: base tensor, elements between batch entries, row stride.
struct Operand {
  const Tensor& t;
  std::int64_t batch_stride, ld;
};

// C[i] = op(A[i]) op(B[i]) + beta C[i] for i < batch.
void gemm_batched(bool ta, bool tb, std::int64_t batch, std::int64_t M, std::int64_t N, std::int64_t K, Operand A,
                  Operand B, bool accumulate, Tensor& C, std::int64_t c_stride, std::int64_t ldc) {
  dispatch_floating("matmul", C.dtype(), [&]<class T>(T*) {
    const T* pa = static_cast<const T*>(A.t.raw());
    const T* pb = static_cast<const T*>(B.t.raw());
    T* pc = static_cast<T*>(C.raw());
    for (std::int64_t i = 0; i < batch; ++i)
      detail::gemm(ta, tb, M, N, K, T(1), pa + i * A.batch_stride, A.ld, pb + i * B.batch_stride, B.ld,
                   accumulate ? T(1) : T(0), pc + i * c_stride, ldc);
  });
}

}  // namespace

// y = a b;  da = g b^T,  db = a^T g
Tensor matmul(const Tensor& a, const Tensor& b) {
  detail::OpScope op_scope("matmul");
  detail::check_floating_same("matmul", a, b);
  const bool ok_rank = (a.dim() == 2 && b.dim() == 2) || (a.dim() == 3 && (b.dim() == 2 || b.dim() == 3));
  UNROLL_CHECK(ok_rank, ShapeError,
               "matmul: unsupported ranks; got a={} and b={}, expected 2-D x 2-D, 3-D x 3-D or 3-D x 2-D", a.shape(),
               b.shape());
  const std::int64_t K = a.shape().back();
  const std::int64_t Kb = b.shape()[b.dim() - 2], N = b.shape().back();
  UNROLL_CHECK(K == Kb, ShapeError, "matmul: inner dimensions differ; got a={} and b={}", a.shape(), b.shape());
  // A 3-D x 2-D product is one 2-D product with the batch folded into the rows.
  const bool batched = b.dim() == 3;
  if (batched)
    UNROLL_CHECK(a.shape()[0] == b.shape()[0], ShapeError, "matmul: batch sizes differ; got a={} and b={}", a.shape(),
                 b.shape());
  const std::int64_t batch = batched ? a.shape()[0] : 1;
  const std::int64_t M = batched ? a.shape()[1] : a.shape().numel(0, a.dim() - 1);
  Shape out_shape = a.shape();
  out_shape[out_shape.dim() - 1] = N;
  Tensor out = Tensor::empty(out_shape, a.dtype());
  const std::int64_t sa = batched ? M * K : 0, sb = batched ? K * N : 0, so = batched ? M * N : 0;
  gemm_batched(false, false, batch, M, N, K, {a, sa, K}, {b, sb, N}, false, out, so, N);

  if (autograd::needs_grad({&a, &b})) {
    Tensor keep_a = b.requires_grad() ? a.detach() : Tensor();
    Tensor keep_b = a.requires_grad() ? b.detach() : Tensor();
    autograd::record(
        "matmul", out, {&a, &b},
        [a = std::move(keep_a), b = std::move(keep_b), batch, M, N, K, sa, sb, so](autograd::GradSink& sink) {
          const Tensor& g = sink.grad_output();  // [batch, M, N]
          bool fresh = false;
          if (sink.needs(0)) {  // da [M, K] = g [M, N] . b^T [N, K]
            Tensor& da = sink.buffer(0, fresh);
            gemm_batched(false, true, batch, M, K, N, {g, so, N}, {b, sb, N}, !fresh, da, sa, K);
          }
          if (sink.needs(1)) {                 // db [K, N] = a^T [K, M] . g [M, N]
            if (sb == 0) {                     // one weight for all rows: deferrable (see GradSink::add_rows_product)
              sink.add_rows_product(1, a, g);  // [.., K] and [.., N]: the leading dims are the rows
            } else {
              Tensor& db = sink.buffer(1, fresh);
              gemm_batched(true, false, batch, K, N, M, {a, sa, K}, {g, so, N}, !fresh, db, sb, N);
            }
          }
        });
  }
  if (a.dim() == 2 && b.dim() == 2) detail::trace_hook(detail::TraceOp::matmul, {&a, &b}, out);
  return out;
}

}  // namespace unroll
