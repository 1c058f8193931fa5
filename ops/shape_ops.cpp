#include "shape_ops.hpp"

#include <array>
#include <cstring>
#include <numeric>

#include "../autograd/tape.hpp"
#include "../core/kernels.hpp"
#include "kernels.hpp"
#include "trace.hpp"

namespace unroll {
namespace {

using Strides = std::array<std::int64_t, Shape::kMaxDims>;

Strides contiguous_strides(const Shape& s) {
  Strides st{};
  std::int64_t acc = 1;
  for (int d = s.dim() - 1; d >= 0; --d) {
    st[d] = acc;
    acc *= s[d];
  }
  return st;
}

// Calls row(strided_offset, dense_offset, n, inner_stride) for each innermost row of a strided view
// (`shape`, `strides`, starting at `base`) of some buffer, in row-major order of the view.
template <class Row>
void for_each_strided_row(const Shape& shape, const Strides& strides, std::int64_t base, Row&& row) {
  if (shape.numel() == 0) return;
  if (shape.dim() == 0) return row(base, std::int64_t{0}, std::int64_t{1}, std::int64_t{1});
  const int last = shape.dim() - 1;
  const std::int64_t n = shape[last];
  std::array<std::int64_t, Shape::kMaxDims> idx{};
  std::int64_t dense = 0, off = base;
  for (;;) {
    row(off, dense, n, strides[last]);
    dense += n;
    int d = last - 1;
    for (; d >= 0; --d) {
      off += strides[d];
      if (++idx[d] < shape[d]) break;
      off -= strides[d] * shape[d];
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

// dst (contiguous, `shape`) = the strided view of src.
Tensor gather_strided(const Tensor& src, const Shape& shape, const Strides& strides, std::int64_t base) {
  Tensor out = Tensor::empty(shape, src.dtype());
  dispatch(src.dtype(), [&]<class T>(T*) {
    const T* s = static_cast<const T*>(src.raw());
    T* o = static_cast<T*>(out.raw());
    for_each_strided_row(shape, strides, base,
                         [&](std::int64_t off, std::int64_t dense, std::int64_t n, std::int64_t st) {
                           if (st == 1)
                             std::memcpy(o + dense, s + off, static_cast<std::size_t>(n) * sizeof(T));
                           else
                             for (std::int64_t i = 0; i < n; ++i) o[dense + i] = s[off + i * st];
                         });
  });
  return out;
}

// The strided view of dst += g (contiguous, `shape`).
void scatter_add_strided(Tensor& dst, const Tensor& g, const Strides& strides, std::int64_t base) {
  dispatch(dst.dtype(), [&]<class T>(T*) {
    T* d = static_cast<T*>(dst.raw());
    const T* s = static_cast<const T*>(g.raw());
    for_each_strided_row(g.shape(), strides, base,
                         [&](std::int64_t off, std::int64_t dense, std::int64_t n, std::int64_t st) {
                           for (std::int64_t i = 0; i < n; ++i) d[off + i * st] += s[dense + i];
                         });
  });
}

void check_defined(const char* where, const Tensor& x) {
  UNROLL_CHECK(x.defined(), StateError, "{}: tensor is undefined; got an undefined tensor, expected a tensor", where);
}

// Elements start + k*step (k < length) along `dim`, as a view when they are one contiguous block.
Tensor strided_slice(const char* name, const Tensor& x, int dim, std::int64_t start, std::int64_t length,
                     std::int64_t step, bool drop_dim) {
  Shape out_shape = x.shape();
  out_shape[dim] = length;
  const Strides in_strides = contiguous_strides(x.shape());
  const std::int64_t base = start * in_strides[dim];
  // Contiguous when every dim before `dim` has size 1 and the step is 1 (or only one element is taken).
  const bool leading = x.shape().numel(0, dim) == 1 && (step == 1 || length <= 1);
  Strides view_strides = in_strides;
  view_strides[dim] *= step;
  Tensor out = leading ? detail::view_range(x, base, out_shape) : gather_strided(x, out_shape, view_strides, base);
  if (drop_dim) {
    out_shape.erase(dim);
    out = out.view_as_shape(out_shape);
  }
  if (autograd::needs_grad({&x}))
    autograd::record(name, out, {&x}, [view_strides, base, leading, sliced = [&] {
                       Shape s = x.shape();
                       s[dim] = length;
                       return s;
                     }()](autograd::GradSink& sink) {
      bool fresh = false;
      Tensor& dx = sink.buffer(0, fresh, /*zero_fill=*/true);
      if (leading) {  // one contiguous block (x[t] of an unrolled sequence): a plain, vectorised add
        const Tensor& g = sink.grad_output();
        dispatch(dx.dtype(), [&]<class T>(T*) {
          T* __restrict d = static_cast<T*>(dx.raw()) + base;
          const T* __restrict s = static_cast<const T*>(g.raw());
          for (std::int64_t i = 0, n = g.numel(); i < n; ++i) d[i] += s[i];
        });
        return;
      }
      scatter_add_strided(dx, sink.grad_output().view_as_shape(sliced), view_strides, base);
    });
  return out;
}

}  // namespace

// y = x viewed as `shape`;  dx = g viewed as x's shape
Tensor reshape(const Tensor& x, const std::vector<std::int64_t>& shape) {
  check_defined("reshape", x);
  std::int64_t known = 1;
  int infer = -1;
  for (std::size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == -1) {
      UNROLL_CHECK(infer < 0, ShapeError, "reshape: more than one -1; got [{}], expected at most one inferred size",
                   fmt::join(shape, ", "));
      infer = static_cast<int>(d);
    } else {
      UNROLL_CHECK(shape[d] >= 0, ShapeError, "reshape: negative size; got {} at dim {}, expected >= 0 or -1", shape[d],
                   d);
      known *= shape[d];
    }
  }
  std::vector<std::int64_t> sizes = shape;
  if (infer >= 0) {
    UNROLL_CHECK(known != 0 && x.numel() % known == 0, ShapeError,
                 "reshape: cannot infer the -1 size; got shape [{}] for {} elements, expected a divisor",
                 fmt::join(shape, ", "), x.numel());
    sizes[static_cast<std::size_t>(infer)] = x.numel() / known;
  }
  const Shape out_shape(sizes);
  UNROLL_CHECK(out_shape.numel() == x.numel(), ShapeError,
               "reshape: element count differs; got {} ({} elements) for input {}, expected {} elements", out_shape,
               out_shape.numel(), x.shape(), x.numel());
  Tensor out = x.view_as_shape(out_shape);
  if (autograd::needs_grad({&x}))
    autograd::record("reshape", out, {&x}, [in_shape = x.shape()](autograd::GradSink& sink) {
      sink.add(0, sink.grad_output().view_as_shape(in_shape));
    });
  return out;
}

// y = x with dims reordered;  dx = g with the inverse order
Tensor permute(const Tensor& x, const std::vector<std::int64_t>& dims) {
  check_defined("permute", x);
  UNROLL_CHECK(static_cast<int>(dims.size()) == x.dim(), ShapeError,
               "permute: number of dims differs; got {} dims for input {}, expected {}", dims.size(), x.shape(),
               x.dim());
  std::vector<int> order(dims.size()), seen(dims.size(), 0);
  for (std::size_t d = 0; d < dims.size(); ++d) {
    order[d] = wrap_dim("permute", dims[d], x.dim());
    UNROLL_CHECK(!seen[static_cast<std::size_t>(order[d])]++, ValueError,
                 "permute: repeated dim; got [{}], expected a permutation of 0..{}", fmt::join(dims, ", "),
                 x.dim() - 1);
  }
  const Strides in = contiguous_strides(x.shape());
  Shape out_shape;
  Strides st{};
  for (std::size_t d = 0; d < order.size(); ++d) {
    out_shape.push_back(x.shape()[order[d]]);
    st[d] = in[static_cast<std::size_t>(order[d])];
  }
  Tensor out = gather_strided(x, out_shape, st, 0);
  if (autograd::needs_grad({&x})) {
    std::vector<std::int64_t> inverse(order.size());
    for (std::size_t d = 0; d < order.size(); ++d)
      inverse[static_cast<std::size_t>(order[d])] = static_cast<std::int64_t>(d);
    autograd::record("permute", out, {&x}, [inverse = std::move(inverse)](autograd::GradSink& sink) {
      autograd::NoGradGuard guard;
      sink.add(0, permute(sink.grad_output(), inverse));
    });
  }
  return out;
}

Tensor transpose(const Tensor& x, std::int64_t dim0, std::int64_t dim1) {
  check_defined("transpose", x);
  const int a = wrap_dim("transpose", dim0, x.dim()), b = wrap_dim("transpose", dim1, x.dim());
  std::vector<std::int64_t> dims(static_cast<std::size_t>(x.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[static_cast<std::size_t>(a)], dims[static_cast<std::size_t>(b)]);
  Tensor y = permute(x, dims);
  if (x.dim() == 2 && a != b) detail::trace_hook(detail::TraceOp::transpose, {&x}, y);
  return y;
}

Tensor narrow(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t length) {
  check_defined("narrow", x);
  const int d = wrap_dim("narrow", dim, x.dim());
  const std::int64_t size = x.shape()[d];
  UNROLL_CHECK(start >= 0 && length >= 0 && start <= size && length <= size - start, IndexError,
               "narrow: range out of bounds; got start={} length={} on dim {} of {}, expected start + length <= {}",
               start, length, d, x.shape(), size);
  Tensor y = strided_slice("narrow", x, d, start, length, 1, false);
  if (d == x.dim() - 1) detail::trace_hook(detail::TraceOp::narrow, {&x}, y, 0, 0, start, length);  // features
  return y;
}

Tensor slice(const Tensor& x, std::int64_t dim, std::int64_t start, std::int64_t end, std::int64_t step) {
  check_defined("slice", x);
  const int d = wrap_dim("slice", dim, x.dim());
  UNROLL_CHECK(step > 0, ValueError, "slice: step must be positive; got {}, expected >= 1", step);
  const std::int64_t size = x.shape()[d];
  auto clampi = [size](std::int64_t i) { return std::clamp<std::int64_t>(i < 0 ? i + size : i, 0, size); };
  start = clampi(start);
  end = std::max(clampi(end), start);
  return strided_slice("slice", x, d, start, end > start ? (end - start - 1) / step + 1 : 0, step, false);
}

Tensor select(const Tensor& x, std::int64_t dim, std::int64_t index) {
  check_defined("select", x);
  UNROLL_CHECK(x.dim() > 0, ShapeError, "select: cannot select from a 0-d tensor; got {}, expected at least 1 dim",
               x.shape());
  const int d = wrap_dim("select", dim, x.dim());
  const std::int64_t size = x.shape()[d];
  UNROLL_CHECK(index >= -size && index < size, IndexError,
               "select: index out of range; got {} for dim {} of {}, expected in [{}, {}]", index, d, x.shape(), -size,
               size - 1);
  const std::int64_t i = index < 0 ? index + size : index;
  if (d == 0 && !autograd::needs_grad({&x}))  // x[t] of an input sequence: a plain view, nothing to record
    return detail::view_range(x, i * x.shape().numel(1, x.dim()), x.shape().tail(1));
  return strided_slice("select", x, d, i, 1, 1, true);
}

Tensor Tensor::operator[](std::int64_t i) const { return select(*this, 0, i); }

std::vector<Tensor> split(const Tensor& x, std::int64_t split_size, std::int64_t dim) {
  check_defined("split", x);
  const int d = wrap_dim("split", dim, x.dim());
  UNROLL_CHECK(split_size > 0, ValueError, "split: split_size must be positive; got {}, expected >= 1", split_size);
  std::vector<Tensor> parts;
  for (std::int64_t s = 0; s < x.shape()[d] || (s == 0 && x.shape()[d] == 0); s += split_size) {
    parts.push_back(narrow(x, d, s, std::min(split_size, x.shape()[d] - s)));
    if (x.shape()[d] == 0) break;
  }
  return parts;
}

std::vector<Tensor> chunk(const Tensor& x, std::int64_t chunks, std::int64_t dim) {
  check_defined("chunk", x);
  UNROLL_CHECK(chunks > 0, ValueError, "chunk: number of chunks must be positive; got {}, expected >= 1", chunks);
  const int d = wrap_dim("chunk", dim, x.dim());
  const std::int64_t size = x.shape()[d];
  return split(x, std::max<std::int64_t>(1, (size + chunks - 1) / chunks), d);
}

namespace {
// Concatenates xs along `dim` of out_shape, where each x contributes x.numel() / outer contiguous
// elements per outer index (outer = product of out dims before dim). This covers cat and stack.
Tensor join(const char* name, std::span<const Tensor> xs, int dim, const Shape& out_shape) {
  detail::OpScope op_scope(name);
  Tensor out = Tensor::empty(out_shape, xs[0].dtype());
  const std::int64_t outer = out_shape.numel(0, dim);
  std::vector<std::int64_t> block(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) block[i] = outer ? xs[i].numel() / outer : 0;
  const std::size_t esize = dtype_size(out.dtype());
  {
    auto* o = static_cast<char*>(out.raw());
    for (std::int64_t k = 0; k < outer; ++k)
      for (std::size_t i = 0; i < xs.size(); ++i) {
        const auto bytes = static_cast<std::size_t>(block[i]) * esize;
        std::memcpy(o, static_cast<const char*>(xs[i].raw()) + static_cast<std::size_t>(k) * bytes, bytes);
        o += bytes;
      }
  }
  if (autograd::needs_grad(xs)) {
    std::vector<const Tensor*> inputs;
    for (const Tensor& x : xs) inputs.push_back(&x);
    Tensor* outs[] = {&out};
    autograd::record(
        name, std::span<Tensor* const>(outs), std::span<const Tensor* const>(inputs),
        [block = std::move(block), outer, esize](autograd::GradSink& sink) {
          const Tensor& g = sink.grad_output();
          std::int64_t row = 0;
          for (std::size_t i = 0; i < block.size(); ++i) row += block[i];
          std::int64_t at = 0;
          for (std::size_t i = 0; i < block.size(); ++i) {
            if (sink.needs(i)) {
              Tensor gi = Tensor::empty(sink.input_shape(i), g.dtype());
              const auto bytes = static_cast<std::size_t>(block[i]) * esize;
              for (std::int64_t k = 0; k < outer; ++k)
                std::memcpy(static_cast<char*>(gi.raw()) + static_cast<std::size_t>(k) * bytes,
                            static_cast<const char*>(g.raw()) + static_cast<std::size_t>(k * row + at) * esize, bytes);
              sink.add(i, std::move(gi));
            }
            at += block[i];
          }
        });
  }
  return out;
}

void check_joinable(const char* name, std::span<const Tensor> xs) {
  UNROLL_CHECK(!xs.empty(), ValueError, "{}: no tensors to join; got 0, expected at least 1", name);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    check_defined(name, xs[i]);
    UNROLL_CHECK(xs[i].dtype() == xs[0].dtype(), DtypeError, "{}: dtypes differ; got {} at position {}, expected {}",
                 name, xs[i].dtype(), i, xs[0].dtype());
  }
}
}  // namespace

Tensor cat(std::span<const Tensor> xs, std::int64_t dim) {
  check_joinable("cat", xs);
  const Shape& first = xs[0].shape();
  UNROLL_CHECK(first.dim() > 0, ShapeError, "cat: cannot join 0-d tensors; got {}, expected at least 1 dim", first);
  const int d = wrap_dim("cat", dim, first.dim());
  Shape out_shape = first;
  out_shape[d] = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Shape& s = xs[i].shape();
    bool same = s.dim() == first.dim();
    for (int k = 0; same && k < s.dim(); ++k) same = k == d || s[k] == first[k];
    UNROLL_CHECK(same, ShapeError,
                 "cat: shapes differ outside dim {}; got {} at position {}, expected {} except along dim {}", d, s, i,
                 first, d);
    out_shape[d] += s[d];
  }
  Tensor y = join("cat", xs, d, out_shape);
  if (detail::tls_tracer != nullptr && d == first.dim() - 1) {  // along the features: fusable
    std::vector<const Tensor*> in;
    for (const Tensor& x : xs) in.push_back(&x);
    detail::trace_record(detail::TraceOp::cat, in, y, 0, 0, 0, 0);
  }
  return y;
}
Tensor cat(std::initializer_list<Tensor> xs, std::int64_t dim) {
  return cat(std::span<const Tensor>(xs.begin(), xs.size()), dim);
}

Tensor stack(std::span<const Tensor> xs, std::int64_t dim) {
  check_joinable("stack", xs);
  const Shape& first = xs[0].shape();
  const int d = wrap_dim("stack", dim, first.dim() + 1);
  for (std::size_t i = 0; i < xs.size(); ++i)
    UNROLL_CHECK(xs[i].shape() == first, ShapeError, "stack: shapes differ; got {} at position {}, expected {}",
                 xs[i].shape(), i, first);
  Shape out_shape = first;
  out_shape.insert(d, static_cast<std::int64_t>(xs.size()));
  return join("stack", xs, d, out_shape);
}
Tensor stack(std::initializer_list<Tensor> xs, std::int64_t dim) {
  return stack(std::span<const Tensor>(xs.begin(), xs.size()), dim);
}

Tensor unsqueeze(const Tensor& x, std::int64_t dim) {
  check_defined("unsqueeze", x);
  const int d = wrap_dim("unsqueeze", dim, x.dim() + 1);
  std::vector<std::int64_t> s = x.shape().vec();
  s.insert(s.begin() + d, 1);
  return reshape(x, s);
}

Tensor squeeze(const Tensor& x, std::int64_t dim) {
  check_defined("squeeze", x);
  const int d = wrap_dim("squeeze", dim, x.dim());
  UNROLL_CHECK(x.shape()[d] == 1, ShapeError, "squeeze: dim {} has size {}; got {}, expected size 1", d, x.shape()[d],
               x.shape());
  std::vector<std::int64_t> s = x.shape().vec();
  s.erase(s.begin() + d);
  return reshape(x, s);
}

}  // namespace unroll
