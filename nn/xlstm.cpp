#include "xlstm.hpp"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "../ops/elementwise.hpp"
#include "../ops/matmul.hpp"
#include "../ops/reduce.hpp"
#include "../ops/shape_ops.hpp"
#include "init.hpp"

namespace unroll::nn {
namespace {
std::string shape_or_undefined(const Tensor& t) {
  return t.defined() ? fmt::format("{}", t.shape()) : std::string("undefined");
}

// Elementwise max of two equal shapes, exact (no a - b round-off), as one reduction over a new last dim: the
// gradient goes to a where a >= b, else to b, which is torch.maximum's away from ties.
Tensor maximum(const Tensor& a, const Tensor& b) {
  const std::int64_t d = a.dim();
  return max(stack({a, b}, d), d);
}

void check_sizes(const char* where, std::int64_t input_size, std::int64_t hidden_size, std::int64_t heads) {
  UNROLL_CHECK(input_size >= 1 && hidden_size >= 1 && heads >= 1, ValueError,
               "{}: sizes must be positive; got input_size={} hidden_size={} heads={}", where, input_size, hidden_size,
               heads);
  UNROLL_CHECK(hidden_size % heads == 0, ValueError,
               "{}: hidden_size must be divisible by heads; got hidden_size={} and heads={}", where, hidden_size,
               heads);
}

void check_input(const char* where, const Tensor& x, std::int64_t input_size) {
  UNROLL_CHECK(x.defined() && x.dim() == 3 && x.shape()[2] == input_size && x.shape()[0] >= 1, ShapeError,
               "{}: input must be [T, B, {}] with T >= 1; got x={}", where, input_size, shape_or_undefined(x));
}

void check_step_input(const char* where, const Tensor& x_t, std::int64_t input_size) {
  UNROLL_CHECK(x_t.defined() && x_t.dim() == 2 && x_t.shape()[1] == input_size, ShapeError,
               "{}: step input must be [B, {}]; got x_t={}", where, input_size, shape_or_undefined(x_t));
}

// One state tensor against its expected shape and the input's dtype.
void check_state_tensor(const char* where, const char* name, const Tensor& t, const Shape& expected, Dtype dtype) {
  UNROLL_CHECK(t.defined() && t.shape() == expected, ShapeError, "{}: state.{} must be {}; got {}", where, name,
               expected, shape_or_undefined(t));
  UNROLL_CHECK(t.dtype() == dtype, DtypeError, "{}: state.{} must have the input's dtype; got {}, expected {}", where,
               name, t.dtype(), dtype);
}

// [.., heads·D] -> [.., heads, D] on the last dim (a view: no copy).
Tensor split_heads(const Tensor& t, std::int64_t heads) {
  std::vector<std::int64_t> s = t.shape().vec();
  const std::int64_t H = s.back();
  s.back() = heads;
  s.push_back(H / heads);
  return reshape(t, s);
}
}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// sLSTM

SLSTM::SLSTM(std::int64_t input_size, std::int64_t hidden_size, std::int64_t heads, Dtype dtype)
    // The sizes are checked before the first member is built, so a bad heads is this message, not Linear's.
    : igate((check_sizes("SLSTM", input_size, hidden_size, heads), input_size), hidden_size, true, dtype),
      fgate(input_size, hidden_size, true, dtype),
      zgate(input_size, hidden_size, true, dtype),
      ogate(input_size, hidden_size, true, dtype),
      input_size_(input_size),
      hidden_size_(hidden_size),
      heads_(heads) {
  register_module("igate", igate);
  register_module("fgate", fgate);
  register_module("zgate", zgate);
  register_module("ogate", ogate);
  const std::int64_t D = hidden_size / heads;
  recurrent_kernel = Tensor::empty({heads, D, 4 * D}, dtype);
  register_parameter("recurrent_kernel", recurrent_kernel);
  reset_parameters();
}

// The gate Linears keep their own init; R gets nn::Linear's bound for a layer whose fan-in is one head's D.
void SLSTM::reset_parameters() {
  for (Linear* l : {&igate, &fgate, &zgate, &ogate}) l->reset_parameters();
  const double bound = 1.0 / std::sqrt(static_cast<double>(hidden_size_ / heads_));
  init::uniform_(recurrent_kernel, -bound, bound);
}

SLSTMState SLSTM::initial_state(std::int64_t batch, Dtype dtype) const {
  const Shape s{batch, hidden_size_};
  return {zeros(s, dtype), zeros(s, dtype), zeros(s, dtype), zeros(s, dtype)};
}

void SLSTM::check_state(const SLSTMState& s, std::int64_t batch, Dtype dtype) const {
  const Shape expected{batch, hidden_size_};
  check_state_tensor("SLSTM", "h", s.h, expected, dtype);
  check_state_tensor("SLSTM", "c", s.c, expected, dtype);
  check_state_tensor("SLSTM", "n", s.n, expected, dtype);
  check_state_tensor("SLSTM", "m", s.m, expected, dtype);
}

// xg [B, 4, H]: W_g x + b_g for g = i, f, z, o. R h_{t-1} per head: h [B, heads, D] as [heads, B, D] times
// R [heads, D, 4D] -> [heads, B, 4, D] -> [B, 4, heads, D] = [B, 4, H], the layout of xg.
SLSTMState SLSTM::step_from_gates(const Tensor& xg, const SLSTMState& s) const {
  const std::int64_t B = xg.shape()[0], H = hidden_size_, D = H / heads_;
  Tensor rec;
  if (heads_ == 1) {
    rec = reshape(matmul(s.h, reshape(recurrent_kernel, {D, 4 * D})), {B, 4, H});
  } else {
    const Tensor h = transpose(reshape(s.h, {B, heads_, D}), 0, 1);
    rec = reshape(permute(reshape(matmul(h, recurrent_kernel), {heads_, B, 4, D}), {1, 2, 0, 3}), {B, 4, H});
  }
  const Tensor g = xg + rec;
  const Tensor gi = select(g, 1, 0), log_f = logsigmoid(select(g, 1, 1)), gz = select(g, 1, 2), go = select(g, 1, 3);
  const Tensor log_f_m = log_f + s.m;
  const Tensor m = maximum(log_f_m, gi);
  const Tensor i = exp(gi - m), f = exp(log_f_m - m);
  const Tensor c = f * s.c + i * tanh(gz);
  const Tensor n = f * s.n + i;
  return {sigmoid(go) * c / n, c, n, m};
}

SLSTMState SLSTM::step(const Tensor& x_t, const SLSTMState& state) const {
  check_step_input("SLSTM", x_t, input_size_);
  check_state(state, x_t.shape()[0], x_t.dtype());
  const Tensor xg = stack({igate(x_t), fgate(x_t), zgate(x_t), ogate(x_t)}, 1);
  return step_from_gates(xg, state);
}

SequenceOutput<SLSTMState> SLSTM::forward(const Tensor& x, const SLSTMState& state) const {
  check_input("SLSTM", x, input_size_);
  const std::int64_t B = x.shape()[1];
  const bool given = state.h.defined() || state.c.defined() || state.n.defined() || state.m.defined();
  if (given) check_state(state, B, x.dtype());
  // The input half of every gate of every step: one GEMM per gate with M = T·B, not four per step.
  const Tensor xg = stack({igate(x), fgate(x), zgate(x), ogate(x)}, 2);  // [T, B, 4, H]
  return run_cell(xg, given ? state : initial_state(B, x.dtype()),
                  [this](const Tensor& xg_t, const SLSTMState& s) { return step_from_gates(xg_t, s); });
}

// ---------------------------------------------------------------------------------------------------------------
// mLSTM

struct MLSTM::Projections {
  Tensor q, k, v, o;  // [.., H]; k already scaled by 1/√D
  Tensor i, log_f;    // [.., heads]: ĩ and log f = logsigmoid(f̃)
};

MLSTM::MLSTM(std::int64_t input_size, std::int64_t hidden_size, std::int64_t heads, MLSTMForm form, Dtype dtype)
    : q_proj((check_sizes("MLSTM", input_size, hidden_size, heads), input_size), hidden_size, true, dtype),
      k_proj(input_size, hidden_size, true, dtype),
      v_proj(input_size, hidden_size, true, dtype),
      igate(input_size, heads, true, dtype),
      fgate(input_size, heads, true, dtype),
      ogate(input_size, hidden_size, true, dtype),
      input_size_(input_size),
      hidden_size_(hidden_size),
      heads_(heads),
      form_(form) {
  register_module("q_proj", q_proj);
  register_module("k_proj", k_proj);
  register_module("v_proj", v_proj);
  register_module("igate", igate);
  register_module("fgate", fgate);
  register_module("ogate", ogate);
}

MLSTMState MLSTM::initial_state(std::int64_t batch, Dtype dtype) const {
  const std::int64_t D = hidden_size_ / heads_;
  return {zeros({batch, hidden_size_}, dtype), zeros({batch, heads_, D, D}, dtype), zeros({batch, heads_, D}, dtype),
          zeros({batch, heads_}, dtype)};
}

void MLSTM::check_state(const MLSTMState& s, std::int64_t batch, Dtype dtype, bool need_h) const {
  const std::int64_t D = hidden_size_ / heads_;
  if (need_h) check_state_tensor("MLSTM", "h", s.h, Shape{batch, hidden_size_}, dtype);
  check_state_tensor("MLSTM", "C", s.C, Shape{batch, heads_, D, D}, dtype);
  check_state_tensor("MLSTM", "n", s.n, Shape{batch, heads_, D}, dtype);
  check_state_tensor("MLSTM", "m", s.m, Shape{batch, heads_}, dtype);
}

MLSTM::Projections MLSTM::project(const Tensor& x) const {
  const double k_scale = 1.0 / std::sqrt(static_cast<double>(hidden_size_ / heads_));
  return {q_proj(x), k_proj(x) * k_scale, v_proj(x), sigmoid(ogate(x)), igate(x), logsigmoid(fgate(x))};
}

// One step for every head at once; p's tensors are [B, H] and [B, heads].
MLSTMState MLSTM::step_from(const Projections& p, const MLSTMState& s) const {
  const std::int64_t B = p.q.shape()[0], H = hidden_size_, D = H / heads_, BH = B * heads_;
  const Tensor log_f_m = p.log_f + s.m;
  const Tensor m = maximum(log_f_m, p.i);                                      // [B, heads]
  const Tensor i = exp(p.i - m), f = exp(log_f_m - m);                         // i', f' ≤ 1
  const Tensor q = split_heads(p.q, heads_), k = split_heads(p.k, heads_);     // [B, heads, D]
  const Tensor vk = unsqueeze(split_heads(p.v, heads_), 3) * unsqueeze(k, 2);  // v kᵀ: [B, heads, D, D]
  const Tensor C = reshape(f, {B, heads_, 1, 1}) * s.C + reshape(i, {B, heads_, 1, 1}) * vk;
  const Tensor n = unsqueeze(f, 2) * s.n + unsqueeze(i, 2) * k;
  const Tensor num = reshape(matmul(reshape(C, {BH, D, D}), reshape(q, {BH, D, 1})), {B, heads_, D});  // C q
  const Tensor den = maximum(abs(sum(n * q, {2})), exp(neg(m)));                                       // [B, heads]
  return {p.o * reshape(num / unsqueeze(den, 2), {B, H}), C, n, m};
}

MLSTMState MLSTM::step(const Tensor& x_t, const MLSTMState& state) const {
  check_step_input("MLSTM", x_t, input_size_);
  check_state(state, x_t.shape()[0], x_t.dtype(), true);
  return step_from(project(x_t), state);
}

SequenceOutput<MLSTMState> MLSTM::forward(const Tensor& x, const MLSTMState& state, MLSTMForm form) const {
  check_input("MLSTM", x, input_size_);
  const std::int64_t B = x.shape()[1];
  const bool given = state.C.defined() || state.n.defined() || state.m.defined();
  if (given) check_state(state, B, x.dtype(), state.h.defined());  // h is not read, but a given one must fit
  if (form == MLSTMForm::parallel) return parallel(x, given ? state : MLSTMState{});
  MLSTMState start = given ? state : initial_state(B, x.dtype());
  if (!start.h.defined()) start.h = zeros({B, hidden_size_}, x.dtype());  // run_cell needs every tensor defined
  // Every step's projections from one GEMM each over all T·B rows, packed along the last dim so that run_cell
  // hands the step one slice per time step.
  const Projections all = project(x);
  const std::int64_t H = hidden_size_, NH = heads_;
  const Tensor packed = cat({all.q, all.k, all.v, all.o, all.i, all.log_f}, 2);  // [T, B, 4H + 2 heads]
  return run_cell(packed, std::move(start), [&](const Tensor& p_t, const MLSTMState& s) {
    const Projections p{narrow(p_t, 1, 0, H),     narrow(p_t, 1, H, H),      narrow(p_t, 1, 2 * H, H),
                        narrow(p_t, 1, 3 * H, H), narrow(p_t, 1, 4 * H, NH), narrow(p_t, 1, 4 * H + NH, NH)};
    return step_from(p, s);
  });
}

// The parallel form with an initial state (xLSTM's chunkwise form with a single chunk). Per batch row and head,
// write F_t = Σ_{j≤t} log f_j (F_0 = 0) and let C̄_t = e^{m_t} C_t be the unstabilised memory, so that
// C̄_t = f_t C̄_{t-1} + e^{ĩ_t} v_t k_tᵀ with C̄_0 = e^{m_0} C_0. Unrolled:
//   C̄_t = e^{F_t + m_0} C_0 + Σ_{s≤t} e^{F_t - F_s + ĩ_s} v_s k_sᵀ,
// and by induction on m_t = max(log f_t + m_{t-1}, ĩ_t) the stabiliser is the largest of those log weights:
//   m_t = max(a_t, max_{s≤t} D̃_ts),  a_t = F_t + m_0 (the initial state's weight),  D̃_ts = F_t - F_s + ĩ_s.
// So with the weights w_t0 = e^{a_t - m_t} and D'_ts = e^{D̃_ts - m_t} (0 for s > t), all ≤ 1:
//   C_t q_t   = w_t0 C_0 q_t + Σ_s D'_ts (k_s·q_t) v_s     -> rows: w0 ⊙ (Q C_0ᵀ) + ((Q Kᵀ) ⊙ D') V
//   n_tᵀ q_t  = w_t0 n_0·q_t + Σ_s D'_ts (k_s·q_t)        -> w0 ⊙ (Q n_0) + row sums of (Q Kᵀ) ⊙ D'
//   h̃_t = C_t q_t / max(|n_tᵀ q_t|, e^{-m_t}), exactly the recurrent step's value.
// The final state is row T of the same weights: C_T = w_T0 C_0 + Σ_s D'_Ts v_s k_sᵀ = w_T0 C_0 + (V ⊙ D'_T)ᵀ K,
// n_T = w_T0 n_0 + Kᵀ D'_T, m_T. The initial state's term stays in the max even when the state is zero (m_0 = 0),
// as the recurrent form's zero start does, so the two forms agree for every input (the paper's parallel form
// leaves it out, which differs only when every ĩ_s lies below F_t, through the e^{-m_t} floor).
// In float32, F_t - F_s cancels: its error grows with |F_t| (long sequences, small f), as in the official kernel.
SequenceOutput<MLSTMState> MLSTM::parallel(const Tensor& x, const MLSTMState& s) const {
  const std::int64_t T = x.shape()[0], B = x.shape()[1], H = hidden_size_, NH = heads_, D = H / NH, BH = B * NH;
  const Dtype dt = x.dtype();
  const Projections p = project(x);  // [T, B, H] and [T, B, heads]
  // [T, B, H] -> [B·heads, T, D] and [T, B, heads] -> [B·heads, T]: one attention problem per (row, head).
  const auto heads_first = [&](const Tensor& t) {
    return reshape(permute(reshape(t, {T, B, NH, D}), {1, 2, 0, 3}), {BH, T, D});
  };
  const auto gates_first = [&](const Tensor& t) { return reshape(permute(t, {1, 2, 0}), {BH, T}); };
  const Tensor Q = heads_first(p.q), K = heads_first(p.k), V = heads_first(p.v);
  const Tensor F = cumsum(gates_first(p.log_f), 1), ig = gates_first(p.i);  // [BH, T]
  const Tensor a = s.m.defined() ? F + reshape(s.m, {BH, 1}) : F;           // m_0 = 0 without a state
  std::vector<double> upper(static_cast<std::size_t>(T * T), 0.0);          // s > t: not yet written
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t j = t + 1; j < T; ++j) upper[static_cast<std::size_t>(t * T + j)] = 1.0;
  const Tensor future = tensor(upper, {T, T}, dt);
  const Tensor log_d =
      masked_fill(unsqueeze(F, 2) - unsqueeze(F - ig, 1), future, -std::numeric_limits<double>::infinity());
  const Tensor log_w = cat({unsqueeze(a, 2), log_d}, 2);  // [BH, T, 1 + T]: column 0 is the initial state
  const Tensor m = max(log_w, 2, true);                   // [BH, T, 1]
  const Tensor w = exp(log_w - m);
  const Tensor w0 = narrow(w, 2, 0, 1), d = narrow(w, 2, 1, T);
  const Tensor P = matmul(Q, transpose(K, 1, 2)) * d;  // (q_t·k_s) D'_ts: [BH, T, T]
  Tensor num = matmul(P, V);                           // [BH, T, D]
  Tensor nq = sum(P, {2}, true);                       // [BH, T, 1]
  Tensor C0, n0;
  if (s.C.defined()) {
    C0 = reshape(s.C, {BH, D, D});
    n0 = reshape(s.n, {BH, D, 1});
    num = num + w0 * matmul(Q, transpose(C0, 1, 2));
    nq = nq + w0 * matmul(Q, n0);
  }
  const Tensor h_tilde = num / maximum(abs(nq), exp(neg(m)));
  const Tensor out = p.o * reshape(permute(reshape(h_tilde, {B, NH, T, D}), {2, 0, 1, 3}), {T, B, H});

  const Tensor w_last = narrow(w, 1, T - 1, 1);                              // [BH, 1, 1 + T]
  const Tensor wT0 = narrow(w_last, 2, 0, 1), wT = narrow(w_last, 2, 1, T);  // [BH, 1, 1], [BH, 1, T]
  Tensor C = matmul(transpose(V * reshape(wT, {BH, T, 1}), 1, 2), K);        // Σ_s D'_Ts v_s k_sᵀ: [BH, D, D]
  Tensor n = reshape(matmul(wT, K), {BH, D, 1});
  if (s.C.defined()) {
    C = C + wT0 * C0;
    n = n + wT0 * n0;
  }
  MLSTMState final_state{out[T - 1], reshape(C, {B, NH, D, D}), reshape(n, {B, NH, D}),
                         reshape(narrow(m, 1, T - 1, 1), {B, NH})};
  return {out, std::move(final_state)};
}

}  // namespace unroll::nn
