#include "recurrent_detail.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <tuple>

#include "../autograd/tape.hpp"
#include "../core/blas.hpp"
#include "elementwise.hpp"
#include "fast_math.hpp"
#include "kernels.hpp"
#include "linear.hpp"

namespace unroll::detail {

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
    if constexpr (std::is_same_v<T, float>)
      return f32;
    else
      return f64;
  }
  template <class T>
  const Pair<T>& get() const {
    if constexpr (std::is_same_v<T, float>)
      return f32;
    else
      return f64;
  }
};

namespace {
// A weight the packed path can copy; any other is left unpacked for the step to name its error.
bool packable(const Tensor& w) { return w.defined() && w.dim() == 2 && is_floating(w.dtype()); }
}  // namespace

HiddenWeight HiddenWeight::prepare(const Tensor& w, std::int64_t batch) {
  if (!packable(w) || !packed_gemm_is_fast() || !goes_to_blas(batch, w.shape()[0], w.shape()[1]))
    return HiddenWeight(w);
  return packed(w);
}

HiddenWeight HiddenWeight::packed(const Tensor& w) {
  HiddenWeight r(w);
  if (!packable(w)) return r;
  auto packs = std::make_shared<Packs>();
  const std::int64_t n = w.shape()[0], H = w.shape()[1];
  dispatch_floating("HiddenWeight", w.dtype(), [&]<class T>(T*) {
    Packs::Pair<T>& pair = packs->get<T>();
    pair.forward.emplace(/*trans=*/true, H, n, w.data<T>(), H);
    if (autograd::grad_enabled()) pair.backward.emplace(/*trans=*/false, n, H, w.data<T>(), H);
  });
  r.packs_ = std::move(packs);
  return r;
}

namespace {

// In-place activations over a contiguous run (trailing underscore: in place); separate simple loops
// (restrict, no branches) vectorise.
template <class T>
void sigmoid_run_(T* __restrict p, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) p[j] = sigmoid_of(p[j]);
}
template <class T>
void tanh_run_(T* __restrict p, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) p[j] = tanh_of(p[j]);
}
template <class T>
void add_run_(T* __restrict p, const T* __restrict q, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) p[j] += q[j];
}
template <class T>
void copy_run(T* __restrict dst, const T* __restrict src, std::int64_t n) {
  std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(T));
}
// A length mask's rows: null (no mask) steps every row; a 0 entry holds row b.
template <class T>
bool held(const T* mask, std::int64_t b) {
  return mask != nullptr && mask[b] == T(0);
}
template <class T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

// ---- the steps' kernels: plain loops over B rows of width H, no tensors, no checks -------------------

// Elman forward. y holds the hidden gates h·Wᵀ + b on entry and h' = act(y + gx) on exit.
template <class T>
void rnn_step_forward(const T* gx, const T* h, const T* mask, T* y, std::int64_t B, std::int64_t H, RnnActivation act) {
  for (std::int64_t b = 0; b < B; ++b) {
    T* yb = y + b * H;
    const T* xb = gx + b * H;
    if (held(mask, b))
      copy_run(yb, h + b * H, H);
    else if (act == RnnActivation::tanh)
      for (std::int64_t j = 0; j < H; ++j) yb[j] = tanh_of(yb[j] + xb[j]);
    else
      for (std::int64_t j = 0; j < H; ++j) yb[j] = std::max(yb[j] + xb[j], T(0));
  }
}
// Elman backward to the pre-activation: dpre = dy act'(y), zero for held rows.
template <class T>
void rnn_step_backward(const T* dy, const T* y, const T* mask, T* dpre, std::int64_t B, std::int64_t H,
                       RnnActivation act) {
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t k0 = b * H;
    if (held(mask, b))
      std::fill(dpre + k0, dpre + k0 + H, T(0));
    else if (act == RnnActivation::tanh)
      for (std::int64_t k = k0; k < k0 + H; ++k) dpre[k] = dy[k] * (T(1) - y[k] * y[k]);
    else
      for (std::int64_t k = k0; k < k0 + H; ++k) dpre[k] = y[k] > T(0) ? dy[k] : T(0);
  }
}

// One LSTM row from its activated gates a = (i, f, g, o): c' = f c + i g;  tc = tanh c';  h' = o tc.
template <class T>
void lstm_cell_row(const T* __restrict a, const T* __restrict c, T* __restrict c_out, T* __restrict tc,
                   T* __restrict h_out, std::int64_t H) {
  for (std::int64_t j = 0; j < H; ++j) c_out[j] = a[H + j] * c[j] + a[j] * a[2 * H + j];
  for (std::int64_t j = 0; j < H; ++j) tc[j] = tanh_of(c_out[j]);
  for (std::int64_t j = 0; j < H; ++j) h_out[j] = a[3 * H + j] * tc[j];
}
// LSTM forward. a [B, 4H] holds the hidden gates on entry and the activated gates on exit; tc = tanh(c').
template <class T>
void lstm_step_forward(const T* gx, const T* h, const T* c, const T* mask, T* a, T* tc, T* h_out, T* c_out,
                       std::int64_t B, std::int64_t H) {
  for (std::int64_t b = 0; b < B; ++b) {
    T* ab = a + b * 4 * H;
    const std::int64_t r = b * H;
    if (held(mask, b)) {
      copy_run(h_out + r, h + r, H);
      copy_run(c_out + r, c + r, H);
      continue;
    }
    add_run_(ab, gx + b * 4 * H, 4 * H);
    sigmoid_run_(ab, 2 * H);
    tanh_run_(ab + 2 * H, H);
    sigmoid_run_(ab + 3 * H, H);
    lstm_cell_row(ab, c + r, c_out + r, tc + r, h_out + r, H);
  }
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
// LSTM backward: gate pre-activation gradients dG [B, 4H] and dc [B, H] from dh', dc' (a held row: no gate
// gradient, dc = dc').
template <class T>
void lstm_step_backward(const T* a, const T* tc, const T* c, const T* dh_out, const T* dc_out, const T* mask, T* dG,
                        T* dc, std::int64_t B, std::int64_t H) {
  for (std::int64_t b = 0; b < B; ++b) {
    T* Gb = dG + b * 4 * H;
    const std::int64_t r = b * H;
    if (held(mask, b)) {
      std::fill(Gb, Gb + 4 * H, T(0));
      copy_run(dc + r, dc_out + r, H);
      continue;
    }
    lstm_backward_row(a + b * 4 * H, tc + r, c + r, dh_out + r, dc_out + r, Gb, dc + r, H);
  }
}

// One GRU row: s holds gh (r, z, n blocks) on entry and (r, z, gh_n) on exit; n and h' written.
template <class T>
void gru_row(const T* __restrict x, const T* __restrict h, T* __restrict s, T* __restrict n, T* __restrict out,
             std::int64_t H) {
  add_run_(s, x, 2 * H);
  sigmoid_run_(s, 2 * H);
  for (std::int64_t j = 0; j < H; ++j) n[j] = x[2 * H + j] + s[j] * s[2 * H + j];
  tanh_run_(n, H);
  for (std::int64_t j = 0; j < H; ++j) out[j] = (T(1) - s[H + j]) * n[j] + s[H + j] * h[j];
}
// GRU forward. s [B, 3H] holds gh on entry and (r, z, gh_n) on exit; n [B, H] and h' written.
template <class T>
void gru_step_forward(const T* gx, const T* h, const T* mask, T* s, T* n, T* h_out, std::int64_t B, std::int64_t H) {
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t r = b * H;
    if (held(mask, b))
      copy_run(h_out + r, h + r, H);
    else
      gru_row(gx + b * 3 * H, h + r, s + b * 3 * H, n + r, h_out + r, H);
  }
}
// Gradients of one GRU row (see gru_step's comment): its input gates', its hidden gates' and h's direct part.
template <class T>
void gru_backward_row(const T* __restrict s, const T* __restrict n, const T* __restrict h, const T* __restrict g,
                      T* __restrict dgx, T* __restrict dgh, T* __restrict dh, std::int64_t H) {
  for (std::int64_t j = 0; j < H; ++j) {
    const T r = s[j], z = s[H + j], ghn = s[2 * H + j], nj = n[j], gj = g[j];
    const T dnt = gj * (T(1) - z) * (T(1) - nj * nj);
    const T dr = dnt * ghn * r * (T(1) - r);
    const T dz = gj * (h[j] - nj) * z * (T(1) - z);
    dgx[j] = dgh[j] = dr;
    dgx[H + j] = dgh[H + j] = dz;
    dgx[2 * H + j] = dnt;
    dgh[2 * H + j] = dnt * r;
    dh[j] = gj * z;
  }
}
// GRU backward from dh' [B, H]: dgx, dgh [B, 3H] and h's direct gradient dh [B, H] (a held row: dh = dh').
template <class T>
void gru_step_backward(const T* s, const T* n, const T* h, const T* dh_out, const T* mask, T* dgx, T* dgh, T* dh,
                       std::int64_t B, std::int64_t H) {
  for (std::int64_t b = 0; b < B; ++b) {
    T *xb = dgx + b * 3 * H, *wb = dgh + b * 3 * H;
    const std::int64_t r = b * H;
    if (held(mask, b)) {
      std::fill(xb, xb + 3 * H, T(0));
      std::fill(wb, wb + 3 * H, T(0));
      copy_run(dh + r, dh_out + r, H);
      continue;
    }
    gru_backward_row(s + b * 3 * H, n + r, h + r, dh_out + r, xb, wb, dh + r, H);
  }
}

// ---- what every step shares ---------------------------------------------------------------------------

// Checks shared by the three steps; `gates` is the number of H-wide blocks in gx and w_hh.
void check_step(const char* where, std::int64_t gates, const Tensor& gx, const Tensor& h, const Tensor& w_hh,
                const Tensor& b_hh, const Tensor& mask) {
  check_floating_same(where, gx, h);
  check_floating_same(where, gx, w_hh);
  UNROLL_CHECK(h.dim() == 2, ShapeError, "{}: hidden state must be [B, H]; got h={}", where, h.shape());
  const std::int64_t B = h.shape()[0], H = h.shape()[1];
  UNROLL_CHECK(gx.dim() == 2 && gx.shape()[0] == B && gx.shape()[1] == gates * H, ShapeError,
               "{}: input gates do not match the hidden state; got gx={} and h={}, expected gx=[{}, {}]", where,
               gx.shape(), h.shape(), B, gates * H);
  UNROLL_CHECK(w_hh.dim() == 2 && w_hh.shape()[0] == gates * H && w_hh.shape()[1] == H, ShapeError,
               "{}: weight_hh does not match the hidden size; got w_hh={}, expected [{}, {}]", where, w_hh.shape(),
               gates * H, H);
  if (b_hh.defined()) {
    check_floating_same(where, gx, b_hh);
    UNROLL_CHECK(b_hh.dim() == 1 && b_hh.shape()[0] == gates * H, ShapeError,
                 "{}: bias_hh does not match the hidden size; got b_hh={}, expected [{}]", where, b_hh.shape(),
                 gates * H);
  }
  if (mask.defined()) {
    check_floating_same(where, gx, mask);
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
  const T* pb = data_or_null<T>(b);
  if (w.is_packed() && w.packs()->get<T>().forward)
    return gemm_packed<T>(B, h.data<T>(), H, *w.packs()->get<T>().forward, nullptr, 0, pb, G.data<T>(), n);
  if (pb) add_bias_rows(G, b, true);
  gemm(false, true, B, n, H, T(1), h.data<T>(), H, W.data<T>(), H, pb ? T(1) : T(0), G.data<T>(), n);
}

// The backward copy of a prepared weight, or null (unpacked, or prepared outside grad mode).
template <class T>
const PackedMatrix<T>* backward_pack(const std::shared_ptr<const HiddenWeight::Packs>& packs) {
  if (!packs || !packs->get<T>().backward) return nullptr;
  return &*packs->get<T>().backward;
}

// Backward of the hidden-to-hidden product shared by every step, from dG [B, n] (gradient of gates):
// dh (+)= dG W (into the buffer), dW (+)= dG^T h, db (+)= sum_rows dG. Inputs: h = 1, w_hh = wi, b_hh = wi + 1.
template <class T>
void hidden_backward(autograd::GradSink& sink, const Tensor& dG, const Tensor& h, const Tensor& w,
                     const PackedMatrix<T>* w_packed, std::size_t hi, std::size_t wi) {
  const std::int64_t B = dG.shape()[0], n = dG.shape()[1], H = n == 0 ? 0 : w.numel() / n;
  bool fresh = false;
  if (sink.needs(hi)) {
    Tensor& dh = sink.buffer(hi, fresh);
    if (w_packed)
      gemm_packed<T>(B, dG.data<T>(), n, *w_packed, fresh ? nullptr : dh.data<T>(), H, nullptr, dh.data<T>(), H);
    else
      gemm(false, false, B, H, n, T(1), dG.data<T>(), n, w.data<T>(), H, fresh ? T(0) : T(1), dh.data<T>(), H);
  }
  if (sink.needs(wi)) sink.add_rows_product(wi, dG, h);  // deferred: batched with other steps' rows into large GEMMs
  if (sink.needs(wi + 1)) {
    Tensor& db = sink.buffer(wi + 1, fresh);
    sum_rows_into(db, dG, fresh);
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
    if (held(m, b)) add_run_(pd + b * H, pg + b * H, H);
}

using PacksPtr = std::shared_ptr<const HiddenWeight::Packs>;

// ---- the steps' backward nodes: inputs gx = 0, h = 1, then (c = 2 for the LSTM) w_hh, b_hh ---------------

void rnn_step_grads(autograd::GradSink& sink, const Tensor& y, const Tensor& h, const Tensor& w, const PacksPtr& packs,
                    const Tensor& mask, RnnActivation act) {
  const Tensor& dy = sink.grad_output();
  dispatch_floating("rnn_step", dy.dtype(), [&]<class T>(T*) {
    Tensor dpre = empty_like(dy);
    rnn_step_backward(dy.data<T>(), y.data<T>(), data_or_null<T>(mask), dpre.data<T>(), dy.shape()[0], dy.shape()[1],
                      act);
    hidden_backward<T>(sink, dpre, h, w, backward_pack<T>(packs), 1, 2);
    add_held_rows<T>(sink, 1, dy, mask);
    if (sink.needs(0)) sink.add(0, std::move(dpre));
  });
}

void lstm_step_grads(autograd::GradSink& sink, const Tensor& acts, const Tensor& tc, const Tensor& h, const Tensor& c,
                     const Tensor& w, const PacksPtr& packs, const Tensor& mask) {
  const Tensor& dh_out = sink.grad_output(0);
  const Tensor& dc_out = sink.grad_output(1);
  dispatch_floating("lstm_step", dh_out.dtype(), [&]<class T>(T*) {
    Tensor dG = empty_like(acts), dc = empty_like(c);
    lstm_step_backward(acts.data<T>(), tc.data<T>(), c.data<T>(), dh_out.data<T>(), dc_out.data<T>(),
                       data_or_null<T>(mask), dG.data<T>(), dc.data<T>(), c.shape()[0], c.shape()[1]);
    hidden_backward<T>(sink, dG, h, w, backward_pack<T>(packs), 1, 3);
    add_held_rows<T>(sink, 1, dh_out, mask);
    if (sink.needs(2)) sink.add(2, std::move(dc));
    if (sink.needs(0)) sink.add(0, std::move(dG));
  });
}

void gru_step_grads(autograd::GradSink& sink, const Tensor& saved, const Tensor& n_act, const Tensor& h,
                    const Tensor& w, const PacksPtr& packs, const Tensor& mask) {
  const Tensor& dh_out = sink.grad_output();
  dispatch_floating("gru_step", dh_out.dtype(), [&]<class T>(T*) {
    Tensor dgx = empty_like(saved), dgh = empty_like(saved), dh_direct = empty_like(h);
    gru_step_backward(saved.data<T>(), n_act.data<T>(), h.data<T>(), dh_out.data<T>(), data_or_null<T>(mask),
                      dgx.data<T>(), dgh.data<T>(), dh_direct.data<T>(), h.shape()[0], h.shape()[1]);
    hidden_backward<T>(sink, dgh, h, w, backward_pack<T>(packs), 1, 2);
    if (sink.needs(1)) sink.add(1, std::move(dh_direct));
    if (sink.needs(0)) sink.add(0, std::move(dgx));
  });
}

}  // namespace

// h' = act(gx + h W^T + b);  dpre = g act'(h'),  dgx = dpre,  dh = dpre W,  dW = dpre^T h,  db = sum dpre
Tensor rnn_step(const Tensor& gx, const Tensor& h, const HiddenWeight& w_hh, const Tensor& b_hh, RnnActivation act,
                const Tensor& mask) {
  const char* where = act == RnnActivation::tanh ? "rnn_step(tanh)" : "rnn_step(relu)";
  check_step(where, 1, gx, h, w_hh.tensor(), b_hh, mask);
  Tensor out = empty_like(h);
  dispatch_floating(where, h.dtype(), [&]<class T>(T*) {
    hidden_gates<T>(out, h, w_hh, b_hh);
    rnn_step_forward(gx.data<T>(), h.data<T>(), data_or_null<T>(mask), out.data<T>(), h.shape()[0], h.shape()[1], act);
  });
  const Tensor& w = w_hh.tensor();
  if (autograd::needs_grad({&gx, &h, &w, &b_hh}))
    autograd::record(where, out, {&gx, &h, &w, &b_hh},
                     [y = out.detach(), h = h.detach(), w = w.detach(), packs = w_hh.packs(), mask,
                      act](autograd::GradSink& s) { rnn_step_grads(s, y, h, w, packs, mask, act); });
  return out;
}

// See the header for the forward. Backward, with tc = tanh(c'):
//   do = dh' tc;  dc~ = dc' + dh' o (1 - tc^2);  di = dc~ g;  df = dc~ c;  dg = dc~ i;  dc = dc~ f
//   gate pre-activations: di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)
std::pair<Tensor, Tensor> lstm_step(const Tensor& gx, const Tensor& h, const Tensor& c, const HiddenWeight& w_hh,
                                    const Tensor& b_hh, const Tensor& mask) {
  constexpr const char* where = "lstm_step";
  check_step(where, 4, gx, h, w_hh.tensor(), b_hh, mask);
  check_floating_same(where, h, c);
  UNROLL_CHECK(c.shape() == h.shape(), ShapeError, "{}: cell state differs from hidden state; got c={} and h={}", where,
               c.shape(), h.shape());
  Tensor acts = empty_like(gx);  // gate pre-activations, then activations (i, f, g, o)
  Tensor tc = empty_like(h);     // tanh(c')
  Tensor h_out = empty_like(h), c_out = empty_like(h);
  dispatch_floating(where, h.dtype(), [&]<class T>(T*) {
    hidden_gates<T>(acts, h, w_hh, b_hh);
    lstm_step_forward(gx.data<T>(), h.data<T>(), c.data<T>(), data_or_null<T>(mask), acts.data<T>(), tc.data<T>(),
                      h_out.data<T>(), c_out.data<T>(), h.shape()[0], h.shape()[1]);
  });
  const Tensor& w = w_hh.tensor();
  if (autograd::needs_grad({&gx, &h, &c, &w, &b_hh})) {
    Tensor* outs[] = {&h_out, &c_out};
    const Tensor* ins[] = {&gx, &h, &c, &w, &b_hh};
    autograd::record(
        where, std::span<Tensor* const>(outs), std::span<const Tensor* const>(ins),
        [acts = std::move(acts), tc = std::move(tc), h = h.detach(), c = c.detach(), w = w.detach(),
         packs = w_hh.packs(), mask](autograd::GradSink& s) { lstm_step_grads(s, acts, tc, h, c, w, packs, mask); });
  }
  return {std::move(h_out), std::move(c_out)};
}

// See the header for the forward. Backward:
//   dn = dh' (1-z);  dz = dh' (h - n);  dh (direct) = dh' z;  dn~ = dn (1-n^2);  dr = dn~ gh_n
//   dgx = (dr r(1-r), dz z(1-z), dn~);  dgh = (dr r(1-r), dz z(1-z), dn~ r)
Tensor gru_step(const Tensor& gx, const Tensor& h, const HiddenWeight& w_hh, const Tensor& b_hh, const Tensor& mask) {
  constexpr const char* where = "gru_step";
  check_step(where, 3, gx, h, w_hh.tensor(), b_hh, mask);
  Tensor saved = empty_like(gx);  // gh, then (r, z, gh_n)
  Tensor n_act = empty_like(h), out = empty_like(h);
  dispatch_floating(where, h.dtype(), [&]<class T>(T*) {
    hidden_gates<T>(saved, h, w_hh, b_hh);
    gru_step_forward(gx.data<T>(), h.data<T>(), data_or_null<T>(mask), saved.data<T>(), n_act.data<T>(), out.data<T>(),
                     h.shape()[0], h.shape()[1]);
  });
  const Tensor& w = w_hh.tensor();
  if (autograd::needs_grad({&gx, &h, &w, &b_hh}))
    autograd::record(
        where, out, {&gx, &h, &w, &b_hh},
        [saved = std::move(saved), n_act = std::move(n_act), h = h.detach(), w = w.detach(), packs = w_hh.packs(),
         mask](autograd::GradSink& s) { gru_step_grads(s, saved, n_act, h, w, packs, mask); });
  return out;
}

namespace {
// with_hidden_weight_grad's backward: g [T, B, n] is every step's gate gradient. Inputs: gx = 0, w_hh = 1,
// b_ih = 2, b_hh = 3.
void hidden_weight_grads(autograd::GradSink& sink, const HiddenHistory& hh, std::int64_t H) {
  constexpr const char* where = "with_hidden_weight_grad";
  const Tensor& g = sink.grad_output();
  const std::int64_t T = g.shape()[0], B = g.shape()[1], n = g.shape()[2];
  if (sink.needs(1)) {
    const Shape states{T, B, H}, initial{B, H};
    UNROLL_CHECK(hh.states.defined() && hh.states.shape() == states && hh.states.dtype() == g.dtype() &&
                     (!hh.initial.defined() || (hh.initial.shape() == initial && hh.initial.dtype() == g.dtype())),
                 StateError,
                 "{}: the hidden states the steps read are missing or misshapen; got states={} initial={}, expected "
                 "states={} and initial={} or none",
                 where, hh.states.defined() ? fmt::format("{}", hh.states.shape()) : std::string("none"),
                 hh.initial.defined() ? fmt::format("{}", hh.initial.shape()) : std::string("none"), states, initial);
    // The first step's gradient with the initial state; every other step's with the previous step's output.
    if (hh.initial.defined())
      sink.add_rows_product(1, view_range(g, (hh.reverse ? T - 1 : 0) * B * n, {B, n}), hh.initial);
    if (T > 1)
      sink.add_rows_product(1, view_range(g, hh.reverse ? 0 : B * n, {T - 1, B, n}),
                            view_range(hh.states, hh.reverse ? B * H : 0, {T - 1, B, H}));  // leading dims are the rows
  }
  if (sink.needs(2) || sink.needs(3)) {  // both biases are added to every gate: the same gradient
    Tensor db = Tensor::empty({n}, g.dtype());
    sum_rows_into(db, g, /*assign=*/true);
    if (sink.needs(3)) sink.add(3, sink.needs(2) ? copy_of(db) : db);
    if (sink.needs(2)) sink.add(2, std::move(db));
  }
  if (sink.needs(0)) sink.add(0, g);
}
}  // namespace

Tensor with_hidden_weight_grad(const Tensor& gx, const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh,
                               std::shared_ptr<const HiddenHistory> history) {
  static constexpr const char* where = "with_hidden_weight_grad";
  check_floating_same(where, gx, w_hh);
  UNROLL_CHECK(gx.dim() == 3 && w_hh.dim() == 2 && gx.shape()[2] == w_hh.shape()[0], ShapeError,
               "{}: input gates do not match weight_hh; got gx={} and w_hh={}, expected gx=[T, B, {}]", where,
               gx.shape(), w_hh.shape(), w_hh.shape()[0]);
  for (const Tensor* b : {&b_ih, &b_hh})
    if (b->defined()) {
      check_floating_same(where, gx, *b);
      UNROLL_CHECK(b->dim() == 1 && b->shape()[0] == w_hh.shape()[0], ShapeError,
                   "{}: {} does not match weight_hh; got {}={} and w_hh={}, expected [{}]", where,
                   b == &b_ih ? "bias_ih" : "bias_hh", b == &b_ih ? "b_ih" : "b_hh", b->shape(), w_hh.shape(),
                   w_hh.shape()[0]);
    }
  UNROLL_CHECK(history != nullptr, ValueError,
               "{}: no holder for the hidden states; got null, expected a HiddenHistory to fill", where);
  Tensor out = gx.view_as_shape(gx.shape());  // same storage: the steps read gx through this
  if (!autograd::needs_grad({&gx, &w_hh, &b_ih, &b_hh})) return gx;
  autograd::record(where, out, {&gx, &w_hh, &b_ih, &b_hh},
                   [history = std::move(history), H = w_hh.shape()[1]](autograd::GradSink& s) {
                     hidden_weight_grads(s, *history, H);
                   });
  return out;
}

// ---- traits: how a sequence layer runs each step ---------------------------------------------------------
namespace {
template <RnnActivation act>
void run_rnn_step(const Tensor& gx, StepState& s, const HiddenWeight& w, const Tensor& b, const Tensor& mask) {
  s.h = rnn_step(gx, s.h, w, b, act, mask);
}
void run_lstm_step(const Tensor& gx, StepState& s, const HiddenWeight& w, const Tensor& b, const Tensor& mask) {
  std::tie(s.h, s.c) = lstm_step(gx, s.h, s.c, w, b, mask);
}
void run_gru_step(const Tensor& gx, StepState& s, const HiddenWeight& w, const Tensor& b, const Tensor& mask) {
  s.h = gru_step(gx, s.h, w, b, mask);
}
}  // namespace

// The Elman and LSTM gates add h·W_hhᵀ unscaled; the GRU's n gate scales it by r, so its gate gradient is not
// its gx gradient.
const StepTraits rnn_tanh_step_traits{"rnn_step(tanh)", 1, false, true, &run_rnn_step<RnnActivation::tanh>};
const StepTraits rnn_relu_step_traits{"rnn_step(relu)", 1, false, true, &run_rnn_step<RnnActivation::relu>};
const StepTraits lstm_step_traits{"lstm_step", 4, true, true, &run_lstm_step};
const StepTraits gru_step_traits{"gru_step", 3, false, false, &run_gru_step};

}  // namespace unroll::detail

// ---- the public ops: an unprepared weight_hh ------------------------------------------------------------
namespace unroll {

Tensor rnn_step(const Tensor& gx, const Tensor& h, const Tensor& w_hh, const Tensor& b_hh, RnnActivation act,
                const Tensor& mask) {
  return detail::rnn_step(gx, h, detail::HiddenWeight(w_hh), b_hh, act, mask);
}
std::pair<Tensor, Tensor> lstm_step(const Tensor& gx, const Tensor& h, const Tensor& c, const Tensor& w_hh,
                                    const Tensor& b_hh, const Tensor& mask) {
  return detail::lstm_step(gx, h, c, detail::HiddenWeight(w_hh), b_hh, mask);
}
Tensor gru_step(const Tensor& gx, const Tensor& h, const Tensor& w_hh, const Tensor& b_hh, const Tensor& mask) {
  return detail::gru_step(gx, h, detail::HiddenWeight(w_hh), b_hh, mask);
}

}  // namespace unroll
