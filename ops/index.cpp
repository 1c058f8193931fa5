#include "index.hpp"

#include <cstring>

#include "../autograd/tape.hpp"

namespace unroll {
namespace {

void check_indices(const char* where, const Tensor& idx, std::int64_t limit, std::optional<std::int64_t> allowed = {}) {
  UNROLL_CHECK(idx.defined(), StateError, "{}: index tensor is undefined; got an undefined tensor, expected int64",
               where);
  UNROLL_CHECK(idx.dtype() == Dtype::int64, DtypeError, "{}: indices must be int64; got {}, expected int64", where,
               idx.dtype());
  const std::int64_t* p = idx.data<std::int64_t>();
  for (std::int64_t k = 0; k < idx.numel(); ++k)
    UNROLL_CHECK((p[k] >= 0 && p[k] < limit) || (allowed && p[k] == *allowed), IndexError,
                 "{}: index out of range; got {} at position {}, expected in [0, {})", where, p[k], k, limit);
}

// out[o, j, :] = x[o, idx[j], :] with x viewed as [outer, n, inner] (byte copies: dtype-agnostic).
void gather_rows(const Tensor& x, const std::int64_t* idx, std::int64_t count, std::int64_t outer, std::int64_t n,
                 std::int64_t inner, Tensor& out) {
  const std::size_t bytes = static_cast<std::size_t>(inner) * dtype_size(x.dtype());
  const char* src = static_cast<const char*>(x.raw());
  char* dst = static_cast<char*>(out.raw());
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t j = 0; j < count; ++j)
      std::memcpy(dst + static_cast<std::size_t>(o * count + j) * bytes,
                  src + static_cast<std::size_t>(o * n + idx[j]) * bytes, bytes);
}

// dx[o, idx[j], :] += g[o, j, :]; entries equal to `skip` are left out.
void scatter_add_rows(Tensor& dx, const Tensor& g, const std::int64_t* idx, std::int64_t count, std::int64_t outer,
                      std::int64_t n, std::int64_t inner, std::optional<std::int64_t> skip) {
  dispatch(g.dtype(), [&]<class T>(T*) {
    const T* pg = static_cast<const T*>(g.raw());
    T* pd = static_cast<T*>(dx.raw());
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t j = 0; j < count; ++j) {
        if (skip && idx[j] == *skip) continue;
        T* __restrict d = pd + (o * n + idx[j]) * inner;
        const T* __restrict s = pg + (o * count + j) * inner;
        for (std::int64_t i = 0; i < inner; ++i) d[i] += s[i];
      }
  });
}

}  // namespace

// y[.., j, ..] = x[.., idx[j], ..];  dx[.., idx[j], ..] += g[.., j, ..]
Tensor index_select(const Tensor& x, std::int64_t dim, const Tensor& idx) {
  detail::OpScope op_scope("index_select");
  UNROLL_CHECK(x.defined(), StateError,
               "index_select: tensor is undefined; got an undefined tensor, expected a tensor");
  UNROLL_CHECK(x.dim() > 0, ShapeError, "index_select: cannot index a 0-d tensor; got {}, expected at least 1 dim",
               x.shape());
  const int d = wrap_dim("index_select", dim, x.dim());
  UNROLL_CHECK(idx.dim() == 1, ShapeError, "index_select: index must be 1-D; got {}, expected [n]", idx.shape());
  check_indices("index_select", idx, x.shape()[d]);
  const std::int64_t outer = x.shape().numel(0, d), n = x.shape()[d], inner = x.shape().numel(d + 1, x.dim());
  Shape out_shape = x.shape();
  out_shape[d] = idx.numel();
  Tensor out = Tensor::empty(out_shape, x.dtype());
  gather_rows(x, idx.data<std::int64_t>(), idx.numel(), outer, n, inner, out);
  if (autograd::needs_grad({&x}))
    autograd::record("index_select", out, {&x}, [idx = idx.detach(), outer, n, inner](autograd::GradSink& sink) {
      bool fresh = false;
      Tensor& dx = sink.buffer(0, fresh, /*zero_fill=*/true);
      scatter_add_rows(dx, sink.grad_output(), idx.data<std::int64_t>(), idx.numel(), outer, n, inner, std::nullopt);
    });
  return out;
}

// y[k, :] = W[idx[k], :];  dW[idx[k], :] += g[k, :] (except padding_idx)
Tensor embedding(const Tensor& weight, const Tensor& idx, std::optional<std::int64_t> padding_idx) {
  detail::OpScope op_scope("embedding");
  UNROLL_CHECK(weight.defined(), StateError,
               "embedding: weight is undefined; got an undefined tensor, expected [V, D]");
  UNROLL_CHECK(weight.dim() == 2, ShapeError, "embedding: weight must be 2-D; got {}, expected [V, D]", weight.shape());
  const std::int64_t V = weight.shape()[0], D = weight.shape()[1];
  UNROLL_CHECK(!padding_idx || (*padding_idx >= -V && *padding_idx < V), IndexError,
               "embedding: padding_idx out of range; got {}, expected in [{}, {})", *padding_idx, -V, V);
  if (padding_idx && *padding_idx < 0) padding_idx = *padding_idx + V;  // as PyTorch: counts from the end
  check_indices("embedding", idx, V);
  Shape out_shape = idx.shape();
  out_shape.push_back(D);
  Tensor out = Tensor::empty(out_shape, weight.dtype());
  gather_rows(weight, idx.data<std::int64_t>(), idx.numel(), 1, V, D, out);
  if (autograd::needs_grad({&weight}))
    autograd::record("embedding", out, {&weight}, [idx = idx.detach(), V, D, padding_idx](autograd::GradSink& sink) {
      bool fresh = false;
      Tensor& dw = sink.buffer(0, fresh, /*zero_fill=*/true);
      scatter_add_rows(dw, sink.grad_output(), idx.data<std::int64_t>(), idx.numel(), 1, V, D, padding_idx);
    });
  return out;
}

}  // namespace unroll
