#include "scan.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "../autograd/tape.hpp"
#include "../core/parallel.hpp"
#include "elementwise.hpp"
#include "kernels.hpp"

namespace unroll {
namespace {

// ---- the problem, checked and normalised ------------------------------------------------------------------

// What one (t, b) row of the recurrence does, in processing order (the state `prev` is the row processed
// just before, or the initial state):
//   step     y = c ⊙ prev + x
//   restart  y = x                (a reset: the state before is dropped)
//   pass     y = prev + x         (past a row's length: the state is carried unchanged; x is null there)
enum Kind : std::uint8_t { kStep = 0, kRestart = 1, kPass = 2 };

struct Plan {
  std::int64_t T = 0, B = 0, H = 0;
  std::int64_t a_st = 0, a_sb = 0;  // a's element strides over t and b (0 where it broadcasts)
  bool reverse = false;
  bool has_pass = false;            // some rows end before T (lengths)
  std::vector<std::uint8_t> kinds;  // [T * B]; empty: every row is a plain step
  ScanMode mode = ScanMode::sequential;

  Kind kind(std::int64_t t, std::int64_t b) const {
    return kinds.empty() ? kStep : static_cast<Kind>(kinds[static_cast<std::size_t>(t * B + b)]);
  }
  // Time index of processing position i (the forward pass; the adjoint runs the other way).
  std::int64_t time_of(std::int64_t i, bool backwards) const { return (reverse != backwards) ? T - 1 - i : i; }
};

// Checks the inputs and builds the plan (kinds from resets and lengths, the mode).
Plan make_plan(const char* where, const Tensor& a, const Tensor& b, const Tensor& h0, const ScanOptions& o) {
  detail::check_floating(where, b);
  UNROLL_CHECK(b.dim() == 3, ShapeError, "{}: b must be [T, B, H]; got b={}", where, b.shape());
  detail::check_floating_same(where, b, a);
  Plan p;
  p.T = b.shape()[0], p.B = b.shape()[1], p.H = b.shape()[2];
  p.reverse = o.reverse;
  const bool a_ok =
      (a.dim() == 1 && a.shape()[0] == p.H) || (a.dim() == 3 && (a.shape()[0] == p.T || a.shape()[0] == 1) &&
                                                (a.shape()[1] == p.B || a.shape()[1] == 1) && a.shape()[2] == p.H);
  UNROLL_CHECK(a_ok, ShapeError,
               "{}: a does not broadcast over b; got a={} and b={}, expected a of [T, B, H], [T, 1, H], [1, 1, H] or "
               "[H] with [T, B, H] = {}",
               where, a.shape(), b.shape(), b.shape());
  if (a.dim() == 3) {
    p.a_sb = a.shape()[1] == 1 ? 0 : p.H;
    p.a_st = a.shape()[0] == 1 ? 0 : a.shape()[1] * p.H;
  }
  if (h0.defined()) {
    detail::check_floating_same(where, b, h0);
    UNROLL_CHECK(h0.dim() == 2 && h0.shape()[0] == p.B && h0.shape()[1] == p.H, ShapeError,
                 "{}: the initial state must be [B, H]; got h0={} and b={}, expected h0=[{}, {}]", where, h0.shape(),
                 b.shape(), p.B, p.H);
  }
  const Tensor& r = o.resets;
  if (r.defined()) {
    UNROLL_CHECK(r.dim() == 2 && r.shape()[0] == p.T && r.shape()[1] == p.B, ShapeError,
                 "{}: resets must be [T, B]; got resets={} and b={}, expected resets=[{}, {}]", where, r.shape(),
                 b.shape(), p.T, p.B);
    p.kinds.assign(static_cast<std::size_t>(p.T * p.B), kStep);
    dispatch(r.dtype(), [&]<class R>(R*) {
      const R* pr = static_cast<const R*>(r.raw());
      for (std::int64_t i = 0; i < p.T * p.B; ++i)
        if (pr[i] != R(0)) p.kinds[static_cast<std::size_t>(i)] = kRestart;
    });
  }
  if (!o.lengths.empty()) {
    UNROLL_CHECK(static_cast<std::int64_t>(o.lengths.size()) == p.B, ShapeError,
                 "{}: one length per batch row; got {} lengths and b={}, expected {}", where, o.lengths.size(),
                 b.shape(), p.B);
    if (p.kinds.empty()) p.kinds.assign(static_cast<std::size_t>(p.T * p.B), kStep);
    for (std::int64_t row = 0; row < p.B; ++row) {
      const std::int64_t len = o.lengths[static_cast<std::size_t>(row)];
      UNROLL_CHECK(len >= 1 && len <= p.T, ValueError,
                   "{}: sequence length out of range; got lengths[{}]={}, expected 1 <= length <= {}", where, row, len,
                   p.T);
      for (std::int64_t t = len; t < p.T; ++t) p.kinds[static_cast<std::size_t>(t * p.B + row)] = kPass;
      p.has_pass |= len < p.T;
    }
  }
  // Chunking costs a second pass over the data; on the 2-core hosts measured it lost to the sequential loop at
  // every shape, T = 64 ... 16,384, B = 1 ... 32, 1 and 2 threads (bench/RESULTS.md, "Linear scan"), so
  // automatic is sequential until a shape is measured where it wins.
  p.mode = o.mode == ScanMode::automatic ? ScanMode::sequential : o.mode;
  return p;
}

// ---- the engine: y_i = kind_i(c_i, prev, x_i) over processing positions, for a block of batch rows --------

template <class T>
struct Row {
  Kind kind;
  const T* c;  // the coefficient row (step only)
  const T* x;  // the input row, or null (zero)
};

// One row of the recurrence: yr from prev (null: zero).
template <class T>
inline void scan_row(const Row<T>& r, const T* __restrict prev, T* __restrict yr, std::int64_t H) {
  const T* __restrict x = r.x;
  const T* __restrict c = r.c;
  if (r.kind == kStep && prev != nullptr) {
    if (x)
      for (std::int64_t h = 0; h < H; ++h) yr[h] = c[h] * prev[h] + x[h];
    else
      for (std::int64_t h = 0; h < H; ++h) yr[h] = c[h] * prev[h];
  } else if (r.kind == kPass && prev != nullptr) {
    if (x)
      for (std::int64_t h = 0; h < H; ++h) yr[h] = prev[h] + x[h];
    else
      std::memcpy(yr, prev, static_cast<std::size_t>(H) * sizeof(T));
  } else if (x) {  // restart, or no state yet
    std::memcpy(yr, x, static_cast<std::size_t>(H) * sizeof(T));
  } else {
    std::fill(yr, yr + H, T(0));
  }
}

// Positions [i0, i1) of rows [b0, b1): y at time time_of(i) from the row processed before it (or `init`, [B, H]
// or null = zero, at i0). row_at(i, b) gives the row's kind, coefficient and input.
template <class T, class RowAt>
void scan_block(const Plan& p, bool backwards, std::int64_t i0, std::int64_t i1, std::int64_t b0, std::int64_t b1,
                const T* init, RowAt&& row_at, T* y) {
  const std::int64_t B = p.B, H = p.H;
  for (std::int64_t i = i0; i < i1; ++i) {
    const std::int64_t t = p.time_of(i, backwards);
    const std::int64_t tp = i > i0 ? p.time_of(i - 1, backwards) : -1;
    for (std::int64_t b = b0; b < b1; ++b) {
      const T* prev = tp >= 0 ? y + (tp * B + b) * H : (init ? init + b * H : nullptr);
      scan_row(row_at(i, b), prev, y + (t * B + b) * H, H);
    }
  }
}

// The whole scan over all positions and rows, sequential in time (rows split across threads) or chunked in
// time (chunks scanned in parallel from zero, then each chunk's carry-in added through the running product of
// its coefficients).
template <class T, class RowAt>
void run_scan(const Plan& p, bool backwards, bool chunked, const T* init, RowAt&& row_at, T* y) {
  const std::int64_t T_ = p.T, B = p.B, H = p.H;
  if (T_ == 0 || B == 0 || H == 0) return;
  const std::int64_t chunks = chunked ? std::min<std::int64_t>(T_, 4 * std::max(1, num_threads())) : 1;
  if (chunks <= 1) {
    const std::int64_t grain = std::max<std::int64_t>(1, detail::kElementwiseGrain / std::max<std::int64_t>(1, T_ * H));
    detail::parallel_for(
        B, grain, [&](std::int64_t b0, std::int64_t b1) { scan_block(p, backwards, 0, T_, b0, b1, init, row_at, y); });
    return;
  }
  auto chunk_begin = [&](std::int64_t c) { return c * T_ / chunks; };
  // 1. Each chunk from zero (the first from init); keep each chunk's product of coefficients per channel.
  std::vector<T> transfer(static_cast<std::size_t>(chunks * B * H));
  detail::parallel_for(chunks, 1, [&](std::int64_t c0, std::int64_t c1) {
    for (std::int64_t c = c0; c < c1; ++c) {
      const std::int64_t i0 = chunk_begin(c), i1 = chunk_begin(c + 1);
      scan_block(p, backwards, i0, i1, 0, B, c == 0 ? init : nullptr, row_at, y);
      if (c == 0) continue;
      T* q = transfer.data() + c * B * H;
      std::fill(q, q + B * H, T(1));
      for (std::int64_t i = i0; i < i1; ++i)
        for (std::int64_t b = 0; b < B; ++b) {
          const Row<T> r = row_at(i, b);
          T* qb = q + b * H;
          if (r.kind == kStep)
            for (std::int64_t h = 0; h < H; ++h) qb[h] *= r.c[h];
          else if (r.kind == kRestart)
            std::fill(qb, qb + H, T(0));
        }
    }
  });
  // 2. Carries, chunk by chunk: the state entering chunk c is the (final) last row of chunk c - 1.
  std::vector<T> carry(static_cast<std::size_t>(chunks * B * H));  // carry[c]: the state entering chunk c
  for (std::int64_t c = 1; c < chunks; ++c) {
    const std::int64_t t_last_prev = p.time_of(chunk_begin(c) - 1, backwards);
    T* in = carry.data() + c * B * H;
    const T* q_prev = transfer.data() + (c - 1) * B * H;
    const T* in_prev = carry.data() + (c - 1) * B * H;
    for (std::int64_t b = 0; b < B; ++b) {
      const T* last = y + (t_last_prev * B + b) * H;  // chunk c - 1's own part (from zero), or final for c - 1 = 0
      for (std::int64_t h = 0; h < H; ++h)
        in[b * H + h] = last[h] + (c - 1 > 0 ? q_prev[b * H + h] * in_prev[b * H + h] : T(0));
    }
  }
  // 3. Each later chunk adds its carry-in through the running product of its coefficients.
  detail::parallel_for(chunks - 1, 1, [&](std::int64_t k0, std::int64_t k1) {
    std::vector<T> q(static_cast<std::size_t>(H));
    for (std::int64_t c = k0 + 1; c < k1 + 1; ++c) {
      const std::int64_t i0 = chunk_begin(c), i1 = chunk_begin(c + 1);
      for (std::int64_t b = 0; b < B; ++b) {
        const T* in = carry.data() + (c * B + b) * H;
        std::fill(q.begin(), q.end(), T(1));
        for (std::int64_t i = i0; i < i1; ++i) {
          const Row<T> r = row_at(i, b);
          if (r.kind == kRestart) break;  // the carry-in no longer reaches this row or any later one
          if (r.kind == kStep)
            for (std::int64_t h = 0; h < H; ++h) q[static_cast<std::size_t>(h)] *= r.c[h];
          T* yr = y + (p.time_of(i, backwards) * B + b) * H;
          for (std::int64_t h = 0; h < H; ++h) yr[h] += q[static_cast<std::size_t>(h)] * in[h];
        }
      }
    }
  });
}

// Zeroes the rows past each sequence's end.
template <class T>
void zero_pass_rows(const Plan& p, T* y) {
  if (!p.has_pass) return;
  for (std::int64_t t = 0; t < p.T; ++t)
    for (std::int64_t b = 0; b < p.B; ++b)
      if (p.kind(t, b) == kPass) std::fill(y + (t * p.B + b) * p.H, y + (t * p.B + b + 1) * p.H, T(0));
}

// ---- what both scans' backwards share ----------------------------------------------------------------------

// The state the row at forward position i read: the row processed before it, or h0 at the first position and
// after rows past the end (a reversed row starts from h0 at its own last step); null = the zero state.
template <class T>
const T* state_read(const Plan& p, std::int64_t i, std::int64_t b, const T* y, const T* h0) {
  if (i == 0) return h0 ? h0 + b * p.H : nullptr;
  const std::int64_t tp = p.time_of(i - 1, false);
  if (p.kind(tp, b) == kPass) return h0 ? h0 + b * p.H : nullptr;
  return y + (tp * p.B + b) * p.H;
}

// The adjoint into D, run the other way: D_t = g_t + c_next ⊙ D_next (next = the row processed after t; by its
// kind: a step passes c ⊙ D, a restart nothing, a pass D itself), g zero on rows past the end.
// coef_at(t, b) is row (t, b)'s coefficient.
template <class T, class CoefAt>
void run_adjoint(const Plan& p, bool chunked, const T* g, CoefAt&& coef_at, T* D) {
  auto adjoint_row = [&](std::int64_t j, std::int64_t b) -> Row<T> {
    const std::int64_t i = p.T - 1 - j;  // forward position
    const std::int64_t t = p.time_of(i, false);
    const T* x = p.kind(t, b) == kPass ? nullptr : g + (t * p.B + b) * p.H;
    if (i + 1 >= p.T) return {kRestart, nullptr, x};
    const std::int64_t tn = p.time_of(i + 1, false);
    const Kind kn = p.kind(tn, b);
    return {kn, kn == kStep ? coef_at(tn, b) : nullptr, x};
  };
  run_scan<T>(p, /*backwards=*/true, chunked, nullptr, adjoint_row, D);
}

// dh0 [B, H] from the adjoint: the first row's c ⊙ D on a step, D on a pass, nothing on a restart.
template <class T, class CoefAt>
Tensor initial_state_grad(const Plan& p, const T* D, CoefAt&& coef_at, Dtype dtype) {
  Tensor dh0 = Tensor::empty({p.B, p.H}, dtype);
  T* out = dh0.data<T>();
  const std::int64_t t0 = p.time_of(0, false);
  for (std::int64_t b = 0; b < p.B; ++b) {
    const T* d = D + (t0 * p.B + b) * p.H;
    const Kind k = p.kind(t0, b);
    const T* c = k == kStep ? coef_at(t0, b) : nullptr;
    for (std::int64_t h = 0; h < p.H; ++h) out[b * p.H + h] = k == kStep ? c[h] * d[h] : k == kPass ? d[h] : T(0);
  }
  return dh0;
}

// ---- linear_scan's backward ----------------------------------------------------------------------------
// Adjoint, run the other way: D_t = g_t + c_next ⊙ D_next (next = the row processed after t; by its kind: a step
// passes c ⊙ D, a restart nothing, a pass D itself), g zero on rows past the end. Then
//   db_t = D_t (zero past the end);  da_t = D_t ⊙ h_prev(t) on steps;  dh0 = the first row's c ⊙ D (a pass: D).
template <class T>
void linear_scan_grads(autograd::GradSink& sink, const Plan& p, const Tensor& a, const Tensor& y, const Tensor& h0) {
  const Tensor& g = sink.grad_output();
  const std::int64_t T_ = p.T, B = p.B, H = p.H;
  Tensor D = Tensor::empty(g.shape(), g.dtype());
  const T* pa = a.data<T>();
  T* pd = D.data<T>();
  auto a_at = [&](std::int64_t t, std::int64_t b) { return pa + t * p.a_st + b * p.a_sb; };
  run_adjoint<T>(p, p.mode == ScanMode::chunked, g.data<T>(), a_at, pd);

  const T* py = y.data<T>();
  const T* ph0 = h0.defined() ? h0.data<T>() : nullptr;
  if (sink.needs(2)) sink.add(2, initial_state_grad<T>(p, pd, a_at, g.dtype()));
  if (sink.needs(0)) {
    Tensor da = Tensor::empty({T_, B, H}, g.dtype());
    T* out = da.data<T>();
    detail::parallel_for(T_, std::max<std::int64_t>(1, detail::kElementwiseGrain / std::max<std::int64_t>(1, B * H)),
                         [&](std::int64_t i0, std::int64_t i1) {
                           for (std::int64_t i = i0; i < i1; ++i) {
                             const std::int64_t t = p.time_of(i, false);
                             for (std::int64_t b = 0; b < B; ++b) {
                               T* o = out + (t * B + b) * H;
                               const T* prev = state_read(p, i, b, py, ph0);
                               if (p.kind(t, b) != kStep || prev == nullptr) {
                                 std::fill(o, o + H, T(0));
                                 continue;
                               }
                               const T* d = pd + (t * B + b) * H;
                               for (std::int64_t h = 0; h < H; ++h) o[h] = d[h] * prev[h];
                             }
                           }
                         });
    sink.add(0, detail::sum_to(da, sink.input_shape(0)));
  }
  if (sink.needs(1)) {
    zero_pass_rows(p, pd);  // b past a row's end reaches nothing
    sink.add(1, std::move(D));
  }
}

}  // namespace

// h_t = a_t h_{t-1} + b_t.  Backward: D_t = g_t + a_{t+1} D_{t+1};  da_t = D_t h_{t-1};  db_t = D_t;  dh0 = a_0 D_0
Tensor linear_scan(const Tensor& a, const Tensor& b, const Tensor& h0, const ScanOptions& options) {
  detail::OpScope op_scope("linear_scan");
  constexpr const char* where = "linear_scan";
  auto plan = std::make_shared<Plan>(make_plan(where, a, b, h0, options));
  const Plan& p = *plan;
  // Contiguous handles whatever views came in (a broadcast a is read through its strides, never expanded).
  Tensor y = Tensor::empty(b.shape(), b.dtype());
  dispatch_floating(where, b.dtype(), [&]<class T>(T*) {
    const T* pa = a.data<T>();
    const T* pb = b.data<T>();
    auto row_at = [&](std::int64_t i, std::int64_t r) -> Row<T> {
      const std::int64_t t = p.time_of(i, false);
      const Kind k = p.kind(t, r);
      return {k, pa + t * p.a_st + r * p.a_sb, k == kPass ? nullptr : pb + (t * p.B + r) * p.H};
    };
    run_scan<T>(p, false, p.mode == ScanMode::chunked, h0.defined() ? h0.data<T>() : nullptr, row_at, y.data<T>());
    zero_pass_rows(p, y.data<T>());
  });
  if (autograd::needs_grad({&a, &b, &h0}))
    autograd::record(where, y, {&a, &b, &h0},
                     [plan = std::move(plan), a = a.detach(), y = y.detach(), h0 = h0.detach()](autograd::GradSink& s) {
                       dispatch_floating("linear_scan", y.dtype(),
                                         [&]<class T>(T*) { linear_scan_grads<T>(s, *plan, a, y, h0); });
                     });
  return y;
}

// ---- log_linear_scan ----------------------------------------------------------------------------------------
namespace {
template <class T>
T log_add_exp(T u, T v) {
  const T m = std::max(u, v);
  if (m == -std::numeric_limits<T>::infinity()) return m;
  return m + std::log1p(std::exp(-std::abs(u - v)));
}

// The log-space forward, sequential in time (rows split across threads): y = logaddexp(la + prev, lb) on steps,
// lb on restarts, prev on passes; prev at the first position is log_h0 (null: -inf).
template <class T>
void log_scan_forward(const Plan& p, const T* la, const T* lb, const T* init, T* y) {
  const std::int64_t T_ = p.T, B = p.B, H = p.H;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const std::int64_t grain = std::max<std::int64_t>(1, detail::kElementwiseGrain / std::max<std::int64_t>(1, T_ * H));
  detail::parallel_for(B, grain, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t i = 0; i < T_; ++i) {
      const std::int64_t t = p.time_of(i, false), tp = i > 0 ? p.time_of(i - 1, false) : -1;
      for (std::int64_t b = b0; b < b1; ++b) {
        const T* prev = tp >= 0 ? y + (tp * B + b) * H : (init ? init + b * H : nullptr);
        T* yr = y + (t * B + b) * H;
        const T* x = lb + (t * B + b) * H;
        const T* c = la + t * p.a_st + b * p.a_sb;
        switch (p.kind(t, b)) {
          case kStep:
            for (std::int64_t h = 0; h < H; ++h) yr[h] = log_add_exp(c[h] + (prev ? prev[h] : neg_inf), x[h]);
            break;
          case kRestart:
            std::memcpy(yr, x, static_cast<std::size_t>(H) * sizeof(T));
            break;
          case kPass:
            for (std::int64_t h = 0; h < H; ++h) yr[h] = prev ? prev[h] : neg_inf;
            break;
        }
      }
    }
  });
}

// Backward. On a step y_t = log(e^(la_t + y_prev) + e^(lb_t)): w_t = e^(la_t + y_prev - y_t) = dy_t/dy_prev =
// dy_t/dla_t, and dy_t/dlb_t = 1 - w_t. The adjoint D_t = g_t + w_next D_next is a linear scan with coefficients w.
template <class T>
void log_linear_scan_grads(autograd::GradSink& sink, const Plan& p, const Tensor& la, const Tensor& y,
                           const Tensor& h0) {
  const Tensor& g = sink.grad_output();
  const std::int64_t T_ = p.T, B = p.B, H = p.H;
  const T* pla = la.data<T>();
  const T* py = y.data<T>();
  const T* ph0 = h0.defined() ? h0.data<T>() : nullptr;
  // w for every step row (0 where the previous state is -inf; unused elsewhere).
  Tensor w = Tensor::empty(g.shape(), g.dtype());
  T* pw = w.data<T>();
  for (std::int64_t i = 0; i < T_; ++i) {
    const std::int64_t t = p.time_of(i, false);
    for (std::int64_t b = 0; b < B; ++b) {
      T* wr = pw + (t * B + b) * H;
      const T* prev = state_read(p, i, b, py, ph0);  // null: log h = -inf
      if (p.kind(t, b) != kStep || prev == nullptr) {
        std::fill(wr, wr + H, T(0));
        continue;
      }
      const T* c = pla + t * p.a_st + b * p.a_sb;
      const T* yr = py + (t * B + b) * H;
      for (std::int64_t h = 0; h < H; ++h) {
        const T e = c[h] + prev[h];
        wr[h] = e == -std::numeric_limits<T>::infinity() ? T(0) : std::exp(e - yr[h]);
      }
    }
  }
  Tensor D = Tensor::empty(g.shape(), g.dtype());
  T* pd = D.data<T>();
  auto w_at = [&](std::int64_t t, std::int64_t b) -> const T* { return pw + (t * B + b) * H; };
  // Sequential: the adjoint is small next to the forward's exp/log1p work.
  run_adjoint<T>(p, /*chunked=*/false, g.data<T>(), w_at, pd);
  if (sink.needs(2)) sink.add(2, initial_state_grad<T>(p, pd, w_at, g.dtype()));
  if (sink.needs(0)) {  // dla = D w (zero where w is)
    Tensor da = Tensor::empty(g.shape(), g.dtype());
    T* out = da.data<T>();
    for (std::int64_t e = 0; e < g.numel(); ++e) out[e] = pd[e] * pw[e];
    sink.add(0, detail::sum_to(da, sink.input_shape(0)));
  }
  if (sink.needs(1)) {  // dlb = D (1 - w) on steps, D on restarts, nothing past the end
    for (std::int64_t t = 0; t < T_; ++t)
      for (std::int64_t b = 0; b < B; ++b) {
        const std::int64_t r = (t * B + b) * H;
        const Kind k = p.kind(t, b);
        for (std::int64_t h = 0; h < H; ++h)
          pd[r + h] = k == kPass ? T(0) : k == kStep ? pd[r + h] * (T(1) - pw[r + h]) : pd[r + h];
      }
    sink.add(1, std::move(D));
  }
}
}  // namespace

// log h_t = logaddexp(log_a_t + log h_{t-1}, log_b_t).  Backward: see log_linear_scan_grads.
Tensor log_linear_scan(const Tensor& log_a, const Tensor& log_b, const Tensor& log_h0, const ScanOptions& options) {
  detail::OpScope op_scope("log_linear_scan");
  constexpr const char* where = "log_linear_scan";
  auto plan = std::make_shared<Plan>(make_plan(where, log_a, log_b, log_h0, options));
  const Plan& p = *plan;
  Tensor y = Tensor::empty(log_b.shape(), log_b.dtype());
  dispatch_floating(where, log_b.dtype(), [&]<class T>(T*) {
    log_scan_forward<T>(p, log_a.data<T>(), log_b.data<T>(), log_h0.defined() ? log_h0.data<T>() : nullptr,
                        y.data<T>());
    zero_pass_rows(p, y.data<T>());
  });
  if (autograd::needs_grad({&log_a, &log_b, &log_h0}))
    autograd::record(
        where, y, {&log_a, &log_b, &log_h0},
        [plan = std::move(plan), la = log_a.detach(), y = y.detach(), h0 = log_h0.detach()](autograd::GradSink& s) {
          dispatch_floating("log_linear_scan", y.dtype(),
                            [&]<class T>(T*) { log_linear_scan_grads<T>(s, *plan, la, y, h0); });
        });
  return y;
}

}  // namespace unroll
