#include "deferred_rows.hpp"

#include <algorithm>
#include <cstring>

#include "../core/blas.hpp"
#include "tape.hpp"

namespace unroll::detail {
void rows_product(const Tensor& p, const Tensor& q, bool accumulate, Tensor& c, std::int64_t c_offset) {
  const std::int64_t rows = rows_of(p), a = p.shape().back(), b = q.shape().back(), ldc = c.shape().back();
  dispatch_floating("backward", c.dtype(), [&]<class T>(T*) {
    gemm(true, false, a, b, rows, T(1), static_cast<const T*>(p.raw()), a, static_cast<const T*>(q.raw()), b,
         accumulate ? T(1) : T(0), static_cast<T*>(c.raw()) + c_offset, ldc);
  });
}

bool make_writable(Tensor& dst, const Shape& shape, Dtype dtype, bool zero_fill) {
  if (dst.defined()) {
    if (!dst.unique_storage()) dst = copy_of(dst);
    return false;
  }
  dst = zero_fill ? zeros(shape, dtype) : Tensor::empty(shape, dtype);
  return !zero_fill;
}

namespace {
// Deferred rows are gathered into chunks of this many (OpenBLAS runs a weight-gradient product with
// K = 2048 about 1.5x as fast as the same work with K = 32: docs/DESIGN.md), from products of at most
// kDeferRows rows.
constexpr std::int64_t kChunkRows = 2048;
constexpr std::int64_t kDeferRows = 256;

template <class V>
void reserve_more(V& v, std::size_t extra) {
  if (v.size() + extra > v.capacity()) v.reserve(std::max(2 * v.capacity(), v.size() + extra));
}
}  // namespace

bool DeferredRows::wanted(std::int64_t rows, std::size_t bytes) {
  return rows <= kDeferRows && bytes > 0 && bytes <= kDeferredBytesLimit;
}

void DeferredRows::add(LeafMeta& leaf, const Tensor& p, const Tensor& q, LeafGrads* collect, std::int64_t q_offset) {
  const std::int64_t m = rows_of(p), a = p.shape().back(), qb = q.shape().back(), b = leaf.shape[1];
  const std::size_t elem = dtype_size(p.dtype()), row_bytes = static_cast<std::size_t>(a + b) * elem;
  // Room for this many rows fits the memory bound (>= m: wanted() checked that m rows fit).
  const std::int64_t fit = std::min(kChunkRows, static_cast<std::int64_t>(kDeferredBytesLimit / row_bytes));
  LeafRows* d = nullptr;
  for (LeafRows& e : leaves_)
    if (e.leaf == &leaf) d = &e;
  if (d == nullptr) {
    const std::int64_t cap = std::min(fit, 8 * m);  // grows by doubling up to a chunk: small uses stay small
    const std::size_t bytes = static_cast<std::size_t>(cap) * row_bytes;
    if (bytes_ + bytes > kDeferredBytesLimit) flush(collect);
    reserve_more(leaves_, 1);
    LeafRows e{&leaf, Tensor::empty({cap, a}, p.dtype()), Tensor::empty({cap, b}, p.dtype())};
    retain(&leaf);
    leaves_.push_back(std::move(e));
    bytes_ += bytes;
    d = &leaves_.back();
  }
  const std::int64_t cap = d->p.shape()[0];
  if (d->rows + m > cap) {
    const std::int64_t grown = std::min(fit, std::max(2 * cap, d->rows + m));
    const std::size_t extra = static_cast<std::size_t>(grown - cap) * row_bytes;
    if (grown < d->rows + m || bytes_ + extra > kDeferredBytesLimit) {
      run(*d, collect);  // a full chunk (or no room to grow): its product now, then fill it again
    } else {
      Tensor np = Tensor::empty({grown, a}, p.dtype()), nq = Tensor::empty({grown, b}, p.dtype());
      std::memcpy(np.raw(), d->p.raw(), static_cast<std::size_t>(d->rows * a) * elem);
      std::memcpy(nq.raw(), d->q.raw(), static_cast<std::size_t>(d->rows * b) * elem);
      d->p = std::move(np);
      d->q = std::move(nq);
      bytes_ += extra;
    }
  }
  std::memcpy(static_cast<char*>(d->p.raw()) + d->rows * a * elem, p.raw(), static_cast<std::size_t>(m * a) * elem);
  char* qrows = static_cast<char*>(d->q.raw()) + d->rows * b * elem;
  if (qb == b) {
    std::memcpy(qrows, q.raw(), static_cast<std::size_t>(m * b) * elem);
  } else {  // a column block of the leaf: its columns, zeros around them
    std::memset(qrows, 0, static_cast<std::size_t>(m * b) * elem);
    for (std::int64_t r = 0; r < m; ++r)
      std::memcpy(qrows + (r * b + q_offset) * static_cast<std::int64_t>(elem),
                  static_cast<const char*>(q.raw()) + r * qb * static_cast<std::int64_t>(elem),
                  static_cast<std::size_t>(qb) * elem);
  }
  d->rows += m;
}

void DeferredRows::run(LeafRows& d, LeafGrads* collect) {
  if (d.rows == 0) return;
  const Tensor p = view_range(d.p, 0, {d.rows, d.p.shape()[1]});
  const Tensor q = view_range(d.q, 0, {d.rows, d.q.shape()[1]});
  Tensor& dst = collect ? collect->slot(*d.leaf) : d.leaf->grad;
  const bool fresh = make_writable(dst, d.leaf->shape, d.leaf->dtype, /*zero_fill=*/false);
  rows_product(p, q, !fresh, dst);
  d.rows = 0;
}

void DeferredRows::flush(LeafGrads* collect) {
  for (LeafRows& d : leaves_) run(d, collect);
  drop();
}

void DeferredRows::drop() {
  for (LeafRows& d : leaves_) release(d.leaf);
  leaves_.clear();
  bytes_ = 0;
}

}  // namespace unroll::detail
