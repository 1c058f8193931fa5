#include "recurrent.hpp"

#include <cmath>
#include <optional>

#include "../autograd/tape.hpp"
#include "../core/blas.hpp"
#include "elementwise.hpp"
#include "fast_math.hpp"
#include "linear.hpp"

namespace unroll {

struct HiddenWeight::Packs {
  template <class T>
  struct Pair {
    std::optional<detail::PackedMatrix<T>> forward;   // op(B) = Wᵀ [H, n], for h·Wᵀ
    std::optional<detail::PackedMatrix<T>> backward;  // op(B) = W [n, H], for dG·W; only packed in grad mode
  };
  Pair<float> f32;
  Pair<double> f64;
  template <class T>
  Pair<T>& get() {
    if constexpr (std::is_same_v<T, float>) return f32;
    else return f64;
  }
  template <class T>
  const Pair<T>& get() const {
    if constexpr (std::is_same_v<T, float>) return f32;
    else return f64;
  }
};

namespace {
// A weight the packed path can copy; any other is left unpacked for the step to name its error.
bool packable(const Tensor& w) { return w.defined() && w.dim() == 2 && is_floating(w.dtype()); }
}  // namespace

HiddenWeight HiddenWeight::prepare(const Tensor& w, std::int64_t batch) {
  if (!packable(w) || !detail::goes_to_blas(batch, w.shape()[0], w.shape()[1])) return HiddenWeight(w);
  return packed(w);
}

HiddenWeight HiddenWeight::packed(const Tensor& w) {
  HiddenWeight r(w);
  if (!packable(w)) return r;
  auto packs = std::make_shared<Packs>();
  const std::int64_t n = w.shape()[0], H = w.shape()[1];
  dispatch_floating("HiddenWeight", w.dtype(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    Packs::Pair<T>& pair = packs->get<T>();
    pair.forward.emplace(/*trans=*/true, H, n, w.data<T>(), H);
    if (autograd::grad_enabled()) pair.backward.emplace(/*trans=*/false, n, H, w.data<T>(), H);
  });
  r.packs_ = std::move(packs);
  return r;
}

namespace {

template <class T> T sigm(T v) {
  if constexpr (std::is_same_v<T, float>) return detail::sigmoid_approx(v);
  else return T(1) / (T(1) + std::exp(-v));
}
template <class T> T tanh_(T v) {
  if constexpr (std::is_same_v<T, float>) return detail::tanh_approx(v);
  else return std::tanh(v);
}

// Checks shared by the three steps; `gates` is the number of H-wide blocks in gx and w_hh.
void check_step(const char* where, std::int64_t gates, const Tensor& gx, const Tensor& h, const Tensor& w_hh,
                const Tensor& b_hh, const Tensor& mask) {
  detail::check_floating_same(where, gx, h);
  detail::check_floating_same(where, gx, w_hh);
  UNROLL_CHECK(h.dim() == 2, ShapeError, "{}: hidden state must be [B, H]; got h={}", where, h.shape());
  const std::int64_t B = h.shape()[0], H = h.shape()[1];
  UNROLL_CHECK(gx.dim() == 2 && gx.shape()[0] == B && gx.shape()[1] == gates * H, ShapeError,
               "{}: input gates do not match the hidden state; got gx={} and h={}, expected gx=[{}, {}]", where,
               gx.shape(), h.shape(), B, gates * H);
  UNROLL_CHECK(w_hh.dim() == 2 && w_hh.shape()[0] == gates * H && w_hh.shape()[1] == H, ShapeError,
               "{}: weight_hh does not match the hidden size; got w_hh={}, expected [{}, {}]", where, w_hh.shape(),
               gates * H, H);
  if (b_hh.defined()) {
    detail::check_floating_same(where, gx, b_hh);
    UNROLL_CHECK(b_hh.dim() == 1 && b_hh.shape()[0] == gates * H, ShapeError,
                 "{}: bias_hh does not match the hidden size; got b_hh={}, expected [{}]", where, b_hh.shape(), gates * H);
  }
  if (mask.defined()) {
    detail::check_floating_same(where, gx, mask);
    UNROLL_CHECK(mask.dim() == 1 && mask.shape()[0] == B, ShapeError,
                 "{}: mask must have one entry per batch row; got mask={}, expected [{}]", where, mask.shape(), B);
  }
}

// G [B, n] = (b_hh or 0) + h [B, H] . W^T  (W [n, H]). The step's input gates are added in its pointwise
// pass, not here: a sequence's gx was written by one GEMM long before, so it comes from far caches, and
// the pointwise pass reads it sequentially (prefetched) where the GEMM's tiles would stall on it.
template <class T>
void hidden_gates(Tensor& G, const Tensor& h, const HiddenWeight& w, const Tensor& b) {
  const Tensor& W = w.tensor();
  const std::int64_t B = h.shape()[0], H = h.shape()[1], n = W.shape()[0];
  const T* pb = b.defined() ? b.data<T>() : nullptr;
  if (w.is_packed() && w.packs()->get<T>().forward)
    return detail::gemm_packed<T>(B, h.data<T>(), H, *w.packs()->get<T>().forward, nullptr, 0, pb, G.data<T>(), n);
  if (pb) detail::add_bias_rows(G, b, true);
  detail::gemm(false, true, B, n, H, T(1), h.data<T>(), H, W.data<T>(), H, pb ? T(1) : T(0), G.data<T>(), n);
}

// The backward copy of a prepared weight, or null (unpacked, or prepared outside grad mode).
template <class T>
const detail::PackedMatrix<T>* backward_pack(const std::shared_ptr<const HiddenWeight::Packs>& packs) {
  if (!packs || !packs->get<T>().backward) return nullptr;
  return &*packs->get<T>().backward;
}

// Backward of the hidden-to-hidden product shared by every step, from dG [B, n] (gradient of gates):
// dh (+)= dG W (into the buffer), dW (+)= dG^T h, db (+)= sum_rows dG. Inputs: h = 1, w_hh = wi, b_hh = wi + 1.
template <class T>
void hidden_backward(autograd::GradSink& sink, const Tensor& dG, const Tensor& h, const Tensor& w,
                     const detail::PackedMatrix<T>* w_packed, std::size_t hi, std::size_t wi) {
  const std::int64_t B = dG.shape()[0], n = dG.shape()[1], H = n == 0 ? 0 : w.numel() / n;
  bool fresh = false;
  if (sink.needs(hi)) {
    Tensor& dh = sink.buffer(hi, fresh);
    if (w_packed) detail::gemm_packed<T>(B, dG.data<T>(), n, *w_packed, fresh ? nullptr : dh.data<T>(), H, nullptr, dh.data<T>(), H);
    else detail::gemm(false, false, B, H, n, T(1), dG.data<T>(), n, w.data<T>(), H, fresh ? T(0) : T(1), dh.data<T>(), H);
  }
  if (sink.needs(wi)) sink.add_rows_product(wi, dG, h);  // deferred: batched with other steps' rows into large GEMMs
  if (sink.needs(wi + 1)) {
    Tensor& db = sink.buffer(wi + 1, fresh);
    detail::sum_rows_into(db, dG, fresh);
  }
}

// Adds g's rows into input i's gradient for the rows the mask holds (their state passed straight through).
template <class T>
void add_held_rows(autograd::GradSink& sink, std::size_t i, const Tensor& g, const Tensor& mask) {
  if (!mask.defined() || !sink.needs(i)) return;
  const std::int64_t B = g.shape()[0], H = g.shape()[1];
  const T* m = mask.data<T>();
  bool fresh = false;
  Tensor& d = sink.buffer(i, fresh, /*zero_fill=*/true);
  T* pd = d.data<T>();
  const T* pg = g.data<T>();
  for (std::int64_t b = 0; b < B; ++b)
    if (m[b] == T(0))
      for (std::int64_t j = 0; j < H; ++j) pd[b * H + j] += pg[b * H + j];
}

// In-place activations over a contiguous run; separate simple loops (restrict, no branches) vectorise.
template <class T> void sigmoid_run(T* __restrict p, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) p[j] = sigm(p[j]);
}
template <class T> void tanh_run(T* __restrict p, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) p[j] = tanh_(p[j]);
}
template <class T> void add_run(T* __restrict p, const T* __restrict q, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) p[j] += q[j];
}
// c' = f c + i g;  t = tanh c';  h' = o t  (a = activated gates i, f, g, o of one row)
template <class T>
void lstm_cell_row(const T* __restrict a, const T* __restrict c, T* __restrict c_out, T* __restrict tc,
                   T* __restrict h_out, std::int64_t H) {
  for (std::int64_t j = 0; j < H; ++j) c_out[j] = a[H + j] * c[j] + a[j] * a[2 * H + j];
  for (std::int64_t j = 0; j < H; ++j) tc[j] = tanh_(c_out[j]);
  for (std::int64_t j = 0; j < H; ++j) h_out[j] = a[3 * H + j] * tc[j];
}
// Gate gradients of one LSTM row (see lstm_step's comment) and dc.
template <class T>
void lstm_backward_row(const T* __restrict a, const T* __restrict tc, const T* __restrict c, const T* __restrict gh,
                       const T* __restrict gc, T* __restrict G, T* __restrict dc, std::int64_t H) {
  for (std::int64_t j = 0; j < H; ++j) {
    const T i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j], t = tc[j];
    const T dct = gc[j] + gh[j] * o * (T(1) - t * t);
    G[j] = dct * g * i * (T(1) - i);
    G[H + j] = dct * c[j] * f * (T(1) - f);
    G[2 * H + j] = dct * i * (T(1) - g * g);
    G[3 * H + j] = gh[j] * t * o * (T(1) - o);
    dc[j] = dct * f;
  }
}

// One GRU row: s holds gh (r, z, n blocks) on entry and (r, z, gh_n) on exit; n and h' written.
template <class T>
void gru_row(const T* __restrict x, const T* __restrict h, T* __restrict s, T* __restrict n, T* __restrict out,
             std::int64_t H) {
  add_run(s, x, 2 * H);
  sigmoid_run(s, 2 * H);
  for (std::int64_t j = 0; j < H; ++j) n[j] = x[2 * H + j] + s[j] * s[2 * H + j];
  tanh_run(n, H);
  for (std::int64_t j = 0; j < H; ++j) out[j] = (T(1) - s[H + j]) * n[j] + s[H + j] * h[j];
}

bool held(const Tensor& mask, std::int64_t b) {
  return mask.defined() && (mask.dtype() == Dtype::float32 ? mask.data<float>()[b] == 0.0f : mask.data<double>()[b] == 0.0);
}

}  // namespace

// h' = act(gx + h W^T + b);  dpre = g act'(h'),  dgx = dpre,  dh = dpre W,  dW = dpre^T h,  db = sum dpre
Tensor rnn_step(const Tensor& gx, const Tensor& h, const HiddenWeight& w_hh, const Tensor& b_hh, RnnActivation act,
                const Tensor& mask) {
  const char* where = act == RnnActivation::tanh ? "rnn_step(tanh)" : "rnn_step(relu)";
  check_step(where, 1, gx, h, w_hh.tensor(), b_hh, mask);
  const std::int64_t B = h.shape()[0], H = h.shape()[1];
  Tensor out = Tensor::empty(h.shape(), h.dtype());
  dispatch_floating(where, h.dtype(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    hidden_gates<T>(out, h, w_hh, b_hh);
    T* o = out.data<T>();
    const T* x = gx.data<T>();
    const T* hp = h.data<T>();
    for (std::int64_t b = 0; b < B; ++b) {
      T* ob = o + b * H;
      if (held(mask, b)) {
        std::memcpy(ob, hp + b * H, static_cast<std::size_t>(H) * sizeof(T));
        continue;
      }
      const T* xb = x + b * H;
      if (act == RnnActivation::tanh)
        for (std::int64_t j = 0; j < H; ++j) ob[j] = tanh_(ob[j] + xb[j]);
      else
        for (std::int64_t j = 0; j < H; ++j) ob[j] = std::max(ob[j] + xb[j], T(0));
    }
  });
  const Tensor& w = w_hh.tensor();
  if (autograd::needs_grad({&gx, &h, &w, &b_hh})) {
    autograd::record(where, out, {&gx, &h, &w, &b_hh},
                     [y = out.detach(), h = h.detach(), w = w.detach(), packs = w_hh.packs(), mask, act, B,
                      H](autograd::GradSink& sink) {
                       const Tensor& g = sink.grad_output();
                       dispatch_floating("rnn_step", g.dtype(), [&](auto* tag) {
                         using T = std::remove_pointer_t<decltype(tag)>;
                         Tensor dpre = Tensor::empty(g.shape(), g.dtype());
                         const T* pg = g.data<T>();
                         const T* py = y.data<T>();
                         T* pd = dpre.data<T>();
                         for (std::int64_t b = 0; b < B; ++b) {
                           const std::int64_t k0 = b * H;
                           if (held(mask, b)) std::fill(pd + k0, pd + k0 + H, T(0));
                           else if (act == RnnActivation::tanh)
                             for (std::int64_t k = k0; k < k0 + H; ++k) pd[k] = pg[k] * (T(1) - py[k] * py[k]);
                           else
                             for (std::int64_t k = k0; k < k0 + H; ++k) pd[k] = py[k] > T(0) ? pg[k] : T(0);
                         }
                         hidden_backward<T>(sink, dpre, h, w, backward_pack<T>(packs), 1, 2);
                         add_held_rows<T>(sink, 1, g, mask);
                         if (sink.needs(0)) sink.add(0, std::move(dpre));
                       });
                     });
  }
  return out;
}

// See the header for the forward. Backward, with tc = tanh(c'):
//   do = dh' tc;  dc~ = dc' + dh' o (1 - tc^2);  di = dc~ g;  df = dc~ c;  dg = dc~ i;  dc = dc~ f
//   gate pre-activations: di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)
std::pair<Tensor, Tensor> lstm_step(const Tensor& gx, const Tensor& h, const Tensor& c, const HiddenWeight& w_hh,
                                    const Tensor& b_hh, const Tensor& mask) {
  constexpr const char* where = "lstm_step";
  check_step(where, 4, gx, h, w_hh.tensor(), b_hh, mask);
  detail::check_floating_same(where, h, c);
  UNROLL_CHECK(c.shape() == h.shape(), ShapeError, "{}: cell state differs from hidden state; got c={} and h={}", where,
               c.shape(), h.shape());
  const std::int64_t B = h.shape()[0], H = h.shape()[1];
  Tensor acts = Tensor::empty(gx.shape(), gx.dtype());  // gate pre-activations, then activations (i, f, g, o)
  Tensor tc = Tensor::empty(h.shape(), h.dtype());      // tanh(c')
  Tensor h_out = Tensor::empty(h.shape(), h.dtype()), c_out = Tensor::empty(h.shape(), h.dtype());
  dispatch_floating(where, h.dtype(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    hidden_gates<T>(acts, h, w_hh, b_hh);
    const T *x = gx.data<T>(), *hp = h.data<T>(), *cp = c.data<T>();
    T *a = acts.data<T>(), *ptc = tc.data<T>(), *ho = h_out.data<T>(), *co = c_out.data<T>();
    for (std::int64_t b = 0; b < B; ++b) {
      T* ab = a + b * 4 * H;
      const T* xb = x + b * 4 * H;
      const std::int64_t r = b * H;
      if (held(mask, b)) {
        std::memcpy(ho + r, hp + r, static_cast<std::size_t>(H) * sizeof(T));
        std::memcpy(co + r, cp + r, static_cast<std::size_t>(H) * sizeof(T));
        continue;
      }
      add_run(ab, xb, 4 * H);
      sigmoid_run(ab, 2 * H);
      tanh_run(ab + 2 * H, H);
      sigmoid_run(ab + 3 * H, H);
      lstm_cell_row(ab, cp + r, co + r, ptc + r, ho + r, H);
    }
  });
  const Tensor& w = w_hh.tensor();
  if (autograd::needs_grad({&gx, &h, &c, &w, &b_hh})) {
    Tensor* outs[] = {&h_out, &c_out};
    const Tensor* ins[] = {&gx, &h, &c, &w, &b_hh};
    autograd::record(where, std::span<Tensor* const>(outs), std::span<const Tensor* const>(ins),
                     [acts = std::move(acts), tc = std::move(tc), h = h.detach(), c = c.detach(), w = w.detach(),
                      packs = w_hh.packs(), mask, B, H](autograd::GradSink& sink) {
                       const Tensor& dh_out = sink.grad_output(0);
                       const Tensor& dc_out = sink.grad_output(1);
                       dispatch_floating("lstm_step", dh_out.dtype(), [&](auto* tag) {
                         using T = std::remove_pointer_t<decltype(tag)>;
                         Tensor dG = Tensor::empty(acts.shape(), acts.dtype());
                         Tensor dc = Tensor::empty(c.shape(), c.dtype());
                         const T *a = acts.data<T>(), *ptc = tc.data<T>(), *cp = c.data<T>();
                         const T *gh = dh_out.data<T>(), *gc = dc_out.data<T>();
                         T *pG = dG.data<T>(), *pdc = dc.data<T>();
                         for (std::int64_t b = 0; b < B; ++b) {
                           const T* ab = a + b * 4 * H;
                           T* Gb = pG + b * 4 * H;
                           const std::int64_t r = b * H;
                           if (held(mask, b)) {
                             std::fill(Gb, Gb + 4 * H, T(0));
                             std::memcpy(pdc + r, gc + r, static_cast<std::size_t>(H) * sizeof(T));
                             continue;
                           }
                           lstm_backward_row(ab, ptc + r, cp + r, gh + r, gc + r, Gb, pdc + r, H);
                         }
                         hidden_backward<T>(sink, dG, h, w, backward_pack<T>(packs), 1, 3);
                         add_held_rows<T>(sink, 1, dh_out, mask);
                         if (sink.needs(2)) sink.add(2, std::move(dc));
                         if (sink.needs(0)) sink.add(0, std::move(dG));
                       });
                     });
  }
  return {std::move(h_out), std::move(c_out)};
}

// See the header for the forward. Backward:
//   dn = dh' (1-z);  dz = dh' (h - n);  dh (direct) = dh' z;  dn~ = dn (1-n^2);  dr = dn~ gh_n
//   dgx = (dr r(1-r), dz z(1-z), dn~);  dgh = (dr r(1-r), dz z(1-z), dn~ r)
Tensor gru_step(const Tensor& gx, const Tensor& h, const HiddenWeight& w_hh, const Tensor& b_hh, const Tensor& mask) {
  constexpr const char* where = "gru_step";
  check_step(where, 3, gx, h, w_hh.tensor(), b_hh, mask);
  const std::int64_t B = h.shape()[0], H = h.shape()[1];
  Tensor saved = Tensor::empty(gx.shape(), gx.dtype());  // gh, then (r, z, gh_n)
  Tensor n_act = Tensor::empty(h.shape(), h.dtype());
  Tensor out = Tensor::empty(h.shape(), h.dtype());
  dispatch_floating(where, h.dtype(), [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    hidden_gates<T>(saved, h, w_hh, b_hh);
    const T *x = gx.data<T>(), *hp = h.data<T>();
    T *s = saved.data<T>(), *pn = n_act.data<T>(), *o = out.data<T>();
    for (std::int64_t b = 0; b < B; ++b) {
      T* sb = s + b * 3 * H;
      const T* xb = x + b * 3 * H;
      const std::int64_t r0 = b * H;
      if (held(mask, b)) {
        std::memcpy(o + r0, hp + r0, static_cast<std::size_t>(H) * sizeof(T));
        continue;
      }
      gru_row(xb, hp + r0, sb, pn + r0, o + r0, H);
    }
  });
  const Tensor& w = w_hh.tensor();
  if (autograd::needs_grad({&gx, &h, &w, &b_hh})) {
    autograd::record(where, out, {&gx, &h, &w, &b_hh},
                     [saved = std::move(saved), n_act = std::move(n_act), h = h.detach(), w = w.detach(),
                      packs = w_hh.packs(), mask, B, H](autograd::GradSink& sink) {
                       const Tensor& g = sink.grad_output();
                       dispatch_floating("gru_step", g.dtype(), [&](auto* tag) {
                         using T = std::remove_pointer_t<decltype(tag)>;
                         Tensor dgx = Tensor::empty(saved.shape(), saved.dtype());
                         Tensor dgh = Tensor::empty(saved.shape(), saved.dtype());
                         Tensor dh_direct = Tensor::empty(h.shape(), h.dtype());
                         const T *s = saved.data<T>(), *pn = n_act.data<T>(), *hp = h.data<T>(), *pg = g.data<T>();
                         T *px = dgx.data<T>(), *pw = dgh.data<T>(), *pd = dh_direct.data<T>();
                         for (std::int64_t b = 0; b < B; ++b) {
                           const T* sb = s + b * 3 * H;
                           T *xb = px + b * 3 * H, *wb = pw + b * 3 * H;
                           const std::int64_t r0 = b * H;
                           if (held(mask, b)) {
                             std::fill(xb, xb + 3 * H, T(0));
                             std::fill(wb, wb + 3 * H, T(0));
                             std::memcpy(pd + r0, pg + r0, static_cast<std::size_t>(H) * sizeof(T));
                             continue;
                           }
                           for (std::int64_t j = 0; j < H; ++j) {
                             const T r = sb[j], z = sb[H + j], ghn = sb[2 * H + j], n = pn[r0 + j], gj = pg[r0 + j];
                             const T dnt = gj * (T(1) - z) * (T(1) - n * n);
                             const T dr = dnt * ghn * r * (T(1) - r);
                             const T dz = gj * (hp[r0 + j] - n) * z * (T(1) - z);
                             xb[j] = wb[j] = dr;
                             xb[H + j] = wb[H + j] = dz;
                             xb[2 * H + j] = dnt;
                             wb[2 * H + j] = dnt * r;
                             pd[r0 + j] = gj * z;
                           }
                         }
                         hidden_backward<T>(sink, dgh, h, w, backward_pack<T>(packs), 1, 2);
                         if (sink.needs(1)) sink.add(1, std::move(dh_direct));
                         if (sink.needs(0)) sink.add(0, std::move(dgx));
                       });
                     });
  }
  return out;
}

Tensor with_hidden_weight_grad(const Tensor& gx, const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh,
                               std::shared_ptr<const HiddenHistory> history) {
  static constexpr const char* where = "with_hidden_weight_grad";
  detail::check_floating_same(where, gx, w_hh);
  UNROLL_CHECK(gx.dim() == 3 && w_hh.dim() == 2 && gx.shape()[2] == w_hh.shape()[0], ShapeError,
               "{}: input gates do not match weight_hh; got gx={} and w_hh={}, expected gx=[T, B, {}]", where,
               gx.shape(), w_hh.shape(), w_hh.shape()[0]);
  for (const Tensor* b : {&b_ih, &b_hh})
    if (b->defined()) {
      detail::check_floating_same(where, gx, *b);
      UNROLL_CHECK(b->dim() == 1 && b->shape()[0] == w_hh.shape()[0], ShapeError,
                   "{}: {} does not match weight_hh; got {}={} and w_hh={}, expected [{}]", where,
                   b == &b_ih ? "bias_ih" : "bias_hh", b == &b_ih ? "b_ih" : "b_hh", b->shape(), w_hh.shape(), w_hh.shape()[0]);
    }
  UNROLL_CHECK(history != nullptr, ValueError, "{}: no holder for the hidden states; got null, expected a HiddenHistory to fill", where);
  Tensor out = gx.view_as_shape(gx.shape());  // same storage: the steps read gx through this
  if (!autograd::needs_grad({&gx, &w_hh, &b_ih, &b_hh})) return gx;
  autograd::record(where, out, {&gx, &w_hh, &b_ih, &b_hh}, [history = std::move(history), H = w_hh.shape()[1]](autograd::GradSink& sink) {
    const Tensor& g = sink.grad_output();  // [T, B, n]: every step's gate gradient
    const std::int64_t T = g.shape()[0], B = g.shape()[1], n = g.shape()[2];
    if (sink.needs(1)) {
      const HiddenHistory& hh = *history;
      const Shape states{T, B, H}, initial{B, H};
      UNROLL_CHECK(hh.states.defined() && hh.states.shape() == states && hh.states.dtype() == g.dtype() &&
                       (!hh.initial.defined() || (hh.initial.shape() == initial && hh.initial.dtype() == g.dtype())),
                   StateError,
                   "{}: the hidden states the steps read are missing or misshapen; got states={} initial={}, expected "
                   "states={} and initial={} or none",
                   where, hh.states.defined() ? fmt::format("{}", hh.states.shape()) : std::string("none"),
                   hh.initial.defined() ? fmt::format("{}", hh.initial.shape()) : std::string("none"), states, initial);
      // The first step's gradient with the initial state; every other step's with the previous step's output.
      if (hh.initial.defined()) sink.add_rows_product(1, g.view_range((hh.reverse ? T - 1 : 0) * B * n, {B, n}), hh.initial);
      if (T > 1)
        sink.add_rows_product(1, g.view_range(hh.reverse ? 0 : B * n, {T - 1, B, n}),
                              hh.states.view_range(hh.reverse ? B * H : 0, {T - 1, B, H}));  // leading dims are the rows
    }
    if (sink.needs(2) || sink.needs(3)) {  // both biases are added to every gate: the same gradient
      Tensor db = Tensor::empty({n}, g.dtype());
      detail::sum_rows_into(db, g, /*assign=*/true);
      if (sink.needs(3)) sink.add(3, sink.needs(2) ? copy_of(db) : db);
      if (sink.needs(2)) sink.add(2, std::move(db));
    }
    if (sink.needs(0)) sink.add(0, g);
  });
  return out;
}

}  // namespace unroll
