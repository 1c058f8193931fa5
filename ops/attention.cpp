#include "attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../autograd/tape.hpp"
#include "../core/blas.hpp"
#include "../core/parallel.hpp"
#include "elementwise.hpp"
#include "fast_math.hpp"

namespace unroll {
namespace {

constexpr const char* kWhere = "scaled_dot_product_attention";

// e^v for v <= 0: the vectorisable float32 form, exactly 0 below e^-87 (as libm underflows), so a -inf
// score stays a zero weight; libm for float64 so that gradchecks see the exact function.
template <class T>
T exp_nonpos(T v) {
  if constexpr (std::is_same_v<T, float>)
    return v < -87.0f ? 0.0f : detail::exp_approx(v);
  else
    return std::exp(v);
}

// Where a mask broadcast to [lead..., Tq, Tk] keeps element (b, i, j): offset[b] + i * row + j * col.
struct MaskIndex {
  std::vector<std::int64_t> offset;  // per flattened leading index b
  std::int64_t row = 0, col = 0;
};

MaskIndex index_mask(const Tensor& mask, const Shape& out) {
  const int D = out.dim(), m = mask.dim();
  UNROLL_CHECK(m <= D, ShapeError, "{}: attn_mask has more dims than the scores; got attn_mask={}, scores {}", kWhere,
               mask.shape(), out);
  std::vector<std::int64_t> stride(static_cast<std::size_t>(D), 0);
  std::int64_t s = 1;
  for (int i = m - 1; i >= 0; --i) {
    const int d = D - m + i;
    UNROLL_CHECK(mask.shape()[i] == out[d] || mask.shape()[i] == 1, ShapeError,
                 "{}: attn_mask does not broadcast to the scores; got attn_mask={}, scores {}", kWhere, mask.shape(),
                 out);
    stride[static_cast<std::size_t>(d)] = mask.shape()[i] == 1 ? 0 : s;
    s *= mask.shape()[i];
  }
  MaskIndex ix;
  ix.row = stride[static_cast<std::size_t>(D - 2)];
  ix.col = stride[static_cast<std::size_t>(D - 1)];
  std::int64_t lead = 1;
  for (int d = 0; d < D - 2; ++d) lead *= out[d];
  ix.offset.resize(static_cast<std::size_t>(lead));
  for (std::int64_t b = 0; b < lead; ++b) {
    std::int64_t rest = b, off = 0;
    for (int d = D - 3; d >= 0; --d) {
      off += (rest % out[d]) * stride[static_cast<std::size_t>(d)];
      rest /= out[d];
    }
    ix.offset[static_cast<std::size_t>(b)] = off;
  }
  return ix;
}

// Runs body(b, scratch) for every leading index b, split over the cores (one scratch of `scratch` elements
// per task). Attention's per-head products are small, so one BLAS call per head on one thread each beats
// OpenBLAS splitting each product.
template <class T, class F>
void for_each_head(std::int64_t L, std::int64_t scratch, F&& body) {
  const std::int64_t tasks = detail::in_serial_region() ? 1 : std::min<std::int64_t>(L, num_threads());
  if (tasks <= 1) {
    std::vector<T> buf(static_cast<std::size_t>(scratch));
    const detail::DenormalScope denormals;
    for (std::int64_t b = 0; b < L; ++b) body(b, buf.data());
    return;
  }
  detail::parallel_tasks(tasks, [&](std::int64_t t) {
    std::vector<T> buf(static_cast<std::size_t>(scratch));
    for (std::int64_t b = L * t / tasks; b < L * (t + 1) / tasks; ++b) body(b, buf.data());
  });
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& o) {
  detail::OpScope op_scope(kWhere);
  for (const Tensor* t : {&q, &k, &v})
    UNROLL_CHECK(t->defined(), StateError, "{}: {} is undefined; got an undefined tensor, expected a tensor", kWhere,
                 t == &q   ? "q"
                 : t == &k ? "k"
                           : "v");
  detail::check_floating(kWhere, q);
  detail::check_floating_same(kWhere, q, k);
  detail::check_floating_same(kWhere, q, v);
  const int D = q.dim();
  UNROLL_CHECK(D >= 2 && k.dim() == D && v.dim() == D, ShapeError,
               "{}: q, k and v need the same number of dims (>= 2); got q={}, k={}, v={}", kWhere, q.shape(), k.shape(),
               v.shape());
  bool lead_same = true;
  for (int d = 0; d < D - 2; ++d) lead_same = lead_same && q.shape()[d] == k.shape()[d] && q.shape()[d] == v.shape()[d];
  const std::int64_t Tq = q.size(-2), Tk = k.size(-2), E = q.size(-1), Ev = v.size(-1);
  UNROLL_CHECK(lead_same && k.size(-1) == E && v.size(-2) == Tk, ShapeError,
               "{}: expected q [..., Tq, E], k [..., Tk, E], v [..., Tk, Ev] with equal leading dims; got q={}, k={}, "
               "v={}",
               kWhere, q.shape(), k.shape(), v.shape());
  UNROLL_CHECK(o.dropout_p >= 0 && o.dropout_p <= 1, ValueError,
               "{}: dropout probability out of range; got {}, expected in [0, 1]", kWhere, o.dropout_p);
  const double scale = o.scale ? *o.scale : 1.0 / std::sqrt(static_cast<double>(std::max<std::int64_t>(E, 1)));
  UNROLL_CHECK(std::isfinite(scale), ValueError, "{}: scale must be finite; got {}", kWhere, scale);

  std::vector<std::int64_t> score_dims(q.shape().begin(), q.shape().end());
  score_dims.back() = Tk;
  const Shape score_shape(score_dims);
  std::int64_t L = 1;
  for (int d = 0; d < D - 2; ++d) L *= q.shape()[d];

  const Tensor& am = o.attn_mask;
  const bool has_mask = am.defined();
  const bool additive = has_mask && is_floating(am.dtype());
  MaskIndex mix;
  if (has_mask) {
    UNROLL_CHECK(am.dtype() == Dtype::int64 || am.dtype() == q.dtype(), DtypeError,
                 "{}: attn_mask must be int64 (nonzero = may attend) or q's dtype (added to the scores); got {}, q {}",
                 kWhere, am.dtype(), q.dtype());
    mix = index_mask(am, score_shape);
  }
  const Tensor& kpm = o.key_padding_mask;
  std::int64_t rows_per_batch = 0;  // leading indices per batch row n (the heads)
  if (kpm.defined()) {
    UNROLL_CHECK(D >= 3, ShapeError, "{}: key_padding_mask needs a batch dim; got q={}, expected [N, ..., Tq, E]",
                 kWhere, q.shape());
    UNROLL_CHECK(kpm.dtype() == Dtype::int64, DtypeError,
                 "{}: key_padding_mask must be int64 (nonzero = padding); got {}", kWhere, kpm.dtype());
    UNROLL_CHECK(kpm.shape() == Shape({q.size(0), Tk}), ShapeError,
                 "{}: key_padding_mask must be [N, Tk]; got key_padding_mask={}, expected [{}, {}] for q={}, k={}",
                 kWhere, kpm.shape(), q.size(0), Tk, q.shape(), k.shape());
    rows_per_batch = L / std::max<std::int64_t>(q.size(0), 1);
  }

  const double p = o.dropout_p;
  Tensor keep;  // dropout's scaled keep mask [..., Tq, Tk], drawn before the parallel part (reproducible)
  if (p > 0) {
    keep = bernoulli(score_shape, 1 - p, q.dtype(), o.generator ? *o.generator : default_generator());
    if (p < 1) mul_(keep, 1.0 / (1 - p));
  }

  Tensor P = Tensor::empty(score_shape, q.dtype());
  std::vector<std::int64_t> out_dims(score_dims);
  out_dims.back() = Ev;
  Tensor out = Tensor::empty(Shape(out_dims), q.dtype());
  dispatch_floating(kWhere, q.dtype(), [&]<class T>(T*) {
    const T *pq = q.data<T>(), *pk = k.data<T>(), *pv = v.data<T>();
    const T* padd = additive ? am.data<T>() : nullptr;
    const std::int64_t* pallow = has_mask && !additive ? am.data<std::int64_t>() : nullptr;
    const std::int64_t* ppad = kpm.defined() ? kpm.data<std::int64_t>() : nullptr;
    const T* pkeep = keep.defined() ? keep.data<T>() : nullptr;
    T *pp = P.data<T>(), *po = out.data<T>();
    constexpr T kNegInf = -std::numeric_limits<T>::infinity();
    for_each_head<T>(L, pkeep ? Tq * Tk : 0, [&](std::int64_t b, T* scratch) {
      T* S = pp + b * Tq * Tk;
      detail::gemm(false, true, Tq, Tk, E, static_cast<T>(scale), pq + b * Tq * E, E, pk + b * Tk * E, E, T(0), S, Tk);
      const std::int64_t moff = has_mask ? mix.offset[static_cast<std::size_t>(b)] : 0;
      const std::int64_t* pad_row = ppad ? ppad + (b / rows_per_batch) * Tk : nullptr;
      for (std::int64_t i = 0; i < Tq; ++i) {
        T* s = S + i * Tk;
        if (padd)
          for (std::int64_t j = 0; j < Tk; ++j) s[j] += padd[moff + i * mix.row + j * mix.col];
        if (pallow)
          for (std::int64_t j = 0; j < Tk; ++j)
            if (pallow[moff + i * mix.row + j * mix.col] == 0) s[j] = kNegInf;
        if (pad_row)
          for (std::int64_t j = 0; j < Tk; ++j)
            if (pad_row[j] != 0) s[j] = kNegInf;
        if (o.is_causal)
          for (std::int64_t j = i + 1; j < Tk; ++j) s[j] = kNegInf;
        T m = kNegInf;
        bool nan = false;
        for (std::int64_t j = 0; j < Tk; ++j) {
          m = std::max(m, s[j]);
          nan = nan || s[j] != s[j];
        }
        if (nan) {  // a nan score (a diverged input) stays visible in the output, as in PyTorch
          std::fill(s, s + Tk, std::numeric_limits<T>::quiet_NaN());
          continue;
        }
        if (m == kNegInf) {  // every key masked: zero weights (and so a zero output) rather than 0/0
          std::fill(s, s + Tk, T(0));
          continue;
        }
        T sum = 0;
        for (std::int64_t j = 0; j < Tk; ++j) s[j] = exp_nonpos<T>(s[j] - m);
        for (std::int64_t j = 0; j < Tk; ++j) sum += s[j];
        const T inv = T(1) / sum;
        for (std::int64_t j = 0; j < Tk; ++j) s[j] *= inv;
      }
      const T* W = S;
      if (pkeep) {
        const T* kb = pkeep + b * Tq * Tk;
        for (std::int64_t e = 0; e < Tq * Tk; ++e) scratch[e] = S[e] * kb[e];
        W = scratch;
      }
      detail::gemm(false, false, Tq, Ev, Tk, T(1), W, Tk, pv + b * Tk * Ev, Ev, T(0), po + b * Tq * Ev, Ev);
    });
  });
  if (o.weights) *o.weights = P.detach();

  if (autograd::needs_grad({&q, &k, &v})) {
    autograd::record(kWhere, out, {&q, &k, &v},
                     [P = std::move(P), keep = std::move(keep), q = q.detach(), k = k.detach(), v = v.detach(), L, Tq,
                      Tk, E, Ev, scale](autograd::GradSink& sink) {
                       const Tensor& g = sink.grad_output();
                       Tensor dq = sink.needs(0) ? Tensor::empty(q.shape(), q.dtype()) : Tensor();
                       Tensor dk = sink.needs(1) ? Tensor::empty(k.shape(), k.dtype()) : Tensor();
                       Tensor dv = sink.needs(2) ? Tensor::empty(v.shape(), v.dtype()) : Tensor();
                       dispatch_floating(kWhere, g.dtype(), [&]<class T>(T*) {
                         const T *pg = g.data<T>(), *pp = P.data<T>(), *pq = q.data<T>(), *pk = k.data<T>(),
                                 *pv = v.data<T>();
                         const T* pkeep = keep.defined() ? keep.data<T>() : nullptr;
                         T* pdq = dq.defined() ? dq.data<T>() : nullptr;
                         T* pdk = dk.defined() ? dk.data<T>() : nullptr;
                         T* pdv = dv.defined() ? dv.data<T>() : nullptr;
                         // scratch: dS [Tq, Tk], then (with dropout) the dropped weights [Tq, Tk]
                         for_each_head<T>(L, (pkeep ? 2 : 1) * Tq * Tk, [&](std::int64_t b, T* scratch) {
                           const T* Pb = pp + b * Tq * Tk;
                           const T* gb = pg + b * Tq * Ev;
                           T* dS = scratch;
                           if (pdv) {
                             const T* W = Pb;
                             if (pkeep) {
                               T* Wd = scratch + Tq * Tk;
                               const T* kb = pkeep + b * Tq * Tk;
                               for (std::int64_t e = 0; e < Tq * Tk; ++e) Wd[e] = Pb[e] * kb[e];
                               W = Wd;
                             }
                             detail::gemm(true, false, Tk, Ev, Tq, T(1), W, Tk, gb, Ev, T(0), pdv + b * Tk * Ev, Ev);
                           }
                           if (!pdq && !pdk) return;
                           detail::gemm(false, true, Tq, Tk, Ev, T(1), gb, Ev, pv + b * Tk * Ev, Ev, T(0), dS, Tk);
                           if (pkeep) {
                             const T* kb = pkeep + b * Tq * Tk;
                             for (std::int64_t e = 0; e < Tq * Tk; ++e) dS[e] *= kb[e];
                           }
                           for (std::int64_t i = 0; i < Tq; ++i) {
                             T* d = dS + i * Tk;
                             const T* w = Pb + i * Tk;
                             T dot = 0;
                             for (std::int64_t j = 0; j < Tk; ++j) dot += d[j] * w[j];
                             for (std::int64_t j = 0; j < Tk; ++j) d[j] = w[j] * (d[j] - dot);
                           }
                           if (pdq)
                             detail::gemm(false, false, Tq, E, Tk, static_cast<T>(scale), dS, Tk, pk + b * Tk * E, E,
                                          T(0), pdq + b * Tq * E, E);
                           if (pdk)
                             detail::gemm(true, false, Tk, E, Tq, static_cast<T>(scale), dS, Tk, pq + b * Tq * E, E,
                                          T(0), pdk + b * Tk * E, E);
                         });
                       });
                       if (dq.defined()) sink.add(0, std::move(dq));
                       if (dk.defined()) sink.add(1, std::move(dk));
                       if (dv.defined()) sink.add(2, std::move(dv));
                     });
  }
  return out;
}

}  // namespace unroll
