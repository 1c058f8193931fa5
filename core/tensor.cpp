#include "tensor.hpp"

#include <algorithm>

namespace unroll {

double Tensor::item() const {
  UNROLL_CHECK(defined(), StateError, "item: tensor is undefined; got an undefined tensor, expected one element");
  UNROLL_CHECK(numel() == 1, ShapeError, "item: tensor has more than one element; got shape {}, expected one element",
               shape_);
  if (detail::tls_value_reads != nullptr && requires_grad()) ++*detail::tls_value_reads;
  return dispatch(dtype_, [&]<class T>(T*) { return static_cast<double>(*static_cast<const T*>(raw())); });
}

template <class T>
std::vector<T> Tensor::to_vector() const {
  if (!defined()) return {};
  if (detail::tls_value_reads != nullptr && requires_grad()) ++*detail::tls_value_reads;
  std::vector<T> out(static_cast<std::size_t>(numel()));
  dispatch(dtype_, [&]<class S>(S*) {
    const auto* p = static_cast<const S*>(raw());
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(p[i]);
  });
  return out;
}
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<std::int64_t> Tensor::to_vector<std::int64_t>() const;

Tensor Tensor::view_as_shape(const Shape& shape) const {
  UNROLL_CHECK(shape.numel() == numel(), ShapeError,
               "view: element count differs; got {} ({} elements), expected {} elements", shape, shape.numel(),
               numel());
  return detail::view_range(*this, 0, shape);
}

namespace detail {
void throw_out_of_memory(const Shape& shape, Dtype dtype) {
  const double bytes = static_cast<double>(shape.numel()) * static_cast<double>(dtype_size(dtype));
  const MemoryLimits m = memory_limits();
  constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
  throw_error<MemoryError>(
      "{}: out of memory; got a request for {:.0f} bytes ({:.2f} GiB, a {} tensor of shape {}), expected at most "
      "what this machine has ({:.2f} GiB of RAM, {:.2f} GiB of swap, less what is in use)",
      op_name_or("Tensor::empty"), bytes, bytes / kGiB, dtype, shape, static_cast<double>(m.ram_bytes) / kGiB,
      static_cast<double>(m.swap_bytes) / kGiB);
}
}  // namespace detail

Tensor full(const Shape& shape, double value, Dtype dtype) {
  detail::OpScope op_scope("full");
  Tensor t = Tensor::empty(shape, dtype);
  dispatch(dtype, [&]<class T>(T*) { std::fill_n(static_cast<T*>(t.raw()), t.numel(), static_cast<T>(value)); });
  return t;
}
Tensor zeros(const Shape& shape, Dtype dtype) {
  detail::OpScope op_scope("zeros");
  Tensor t = Tensor::empty(shape, dtype);
  std::memset(t.raw(), 0, static_cast<std::size_t>(t.numel()) * dtype_size(dtype));
  return t;
}
Tensor ones(const Shape& shape, Dtype dtype) { return full(shape, 1.0, dtype); }
Tensor zeros_like(const Tensor& like) { return zeros(like.shape(), like.dtype()); }
Tensor ones_like(const Tensor& like) { return ones(like.shape(), like.dtype()); }

Tensor tensor(std::span<const double> values, const Shape& shape, Dtype dtype) {
  UNROLL_CHECK(static_cast<std::int64_t>(values.size()) == shape.numel(), ValueError,
               "tensor: value count does not match the shape; got {} values, expected {} for shape {}", values.size(),
               shape.numel(), shape);
  Tensor t = Tensor::empty(shape, dtype);
  dispatch(dtype, [&]<class T>(T*) {
    std::transform(values.begin(), values.end(), static_cast<T*>(t.raw()), [](double v) { return static_cast<T>(v); });
  });
  return t;
}
Tensor tensor(std::initializer_list<double> values, const Shape& shape, Dtype dtype) {
  return tensor(std::span<const double>(values.begin(), values.size()), shape, dtype);
}
Tensor index_tensor(std::span<const std::int64_t> values, const Shape& shape) {
  UNROLL_CHECK(static_cast<std::int64_t>(values.size()) == shape.numel(), ValueError,
               "index_tensor: value count does not match the shape; got {} values, expected {} for shape {}",
               values.size(), shape.numel(), shape);
  Tensor t = Tensor::empty(shape, Dtype::int64);
  std::copy(values.begin(), values.end(), t.data<std::int64_t>());
  return t;
}
Tensor index_tensor(std::initializer_list<std::int64_t> values) {
  return index_tensor(std::span<const std::int64_t>(values.begin(), values.size()),
                      Shape{static_cast<std::int64_t>(values.size())});
}
Tensor arange(std::int64_t n, Dtype dtype) {
  detail::OpScope op_scope("arange");
  UNROLL_CHECK(n >= 0, ValueError, "arange: negative length; got {}, expected >= 0", n);
  Tensor t = Tensor::empty(Shape{n}, dtype);
  dispatch(dtype, [&]<class T>(T*) {
    auto* p = static_cast<T*>(t.raw());
    for (std::int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(i);
  });
  return t;
}

Tensor convert(const Tensor& x, Dtype dtype) {
  Tensor out = Tensor::empty(x.shape(), dtype);
  dispatch(x.dtype(), [&]<class S>(S*) {
    const auto* src = static_cast<const S*>(x.raw());
    dispatch(dtype, [&]<class D>(D*) {
      std::transform(src, src + x.numel(), static_cast<D*>(out.raw()), [](auto v) { return static_cast<D>(v); });
    });
  });
  return out;
}
Tensor copy_of(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype());
  std::memcpy(out.raw(), x.raw(), static_cast<std::size_t>(x.numel()) * dtype_size(x.dtype()));
  return out;
}

bool can_broadcast(const Shape& a, const Shape& b) {
  for (int i = 1; i <= std::min(a.dim(), b.dim()); ++i) {
    const std::int64_t sa = a[a.dim() - i], sb = b[b.dim() - i];
    if (sa != sb && sa != 1 && sb != 1) return false;
  }
  return true;
}

Shape broadcast_shapes(const char* where, const Shape& a, const Shape& b) {
  const int rank = std::max(a.dim(), b.dim());
  std::int64_t sizes[Shape::kMaxDims];
  for (int d = 0; d < rank; ++d) {
    const int da = d - (rank - a.dim()), db = d - (rank - b.dim());
    const std::int64_t sa = da >= 0 ? a[da] : 1, sb = db >= 0 ? b[db] : 1;
    UNROLL_CHECK(sa == sb || sa == 1 || sb == 1, ShapeError,
                 "{}: shapes are not broadcastable; got a={} and b={}, expected equal sizes or 1 in each dimension",
                 where, a, b);
    sizes[d] = sa == 1 ? sb : sa;
  }
  return Shape(std::span<const std::int64_t>(sizes, static_cast<std::size_t>(rank)));  // validated once
}

}  // namespace unroll
