#pragma once
// xLSTM's two cells (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory"), composed from unroll's
// differentiable ops. Both have an exponential input gate i = exp(ĩ) and a forget gate kept in log space,
// log f = logsigmoid(f̃) (as the official NX-AI/xlstm vanilla kernels), made safe by the stabiliser state
//   m_t = max(log f_t + m_{t-1}, ĩ_t),  i'_t = exp(ĩ_t - m_t),  f'_t = exp(log f_t + m_{t-1} - m_t) (both ≤ 1):
// the states are stored divided by e^{m_t}, which cancels in every output, so no exp can overflow.
//
// sLSTM: scalar memory with memory mixing: the gates see h_{t-1} through a recurrent matrix R that is
// block-diagonal per head. The recurrence is not linear in the state, so it runs step by step on run_cell
// (nn/sequence.hpp): `SLSTM::step` is a custom cell (`run_cell(x, state, cell.as_step())`), and `forward` is
// run_cell over the same step after one GEMM per gate for the inputs of every step.
//
// mLSTM: a matrix memory C [B, heads, D, D] per head, written with the outer product v kᵀ and read with q; no
// memory mixing, so all T steps can also be computed at once. Two forms, equal to round-off (tested):
//   recurrent  `MLSTM::step` on run_cell, one step at a time, O(T D²) per head;
//   parallel   a causal T×T "attention" matrix with log-space decay weights, O(T² D) per head, taking an
//              initial state and returning the final one (xLSTM's chunkwise form with one chunk), so a
//              language model can carry state across truncated-BPTT windows either way.
//
// The default (undefined) initial state is all zeros, m included, in both cells and both forms.
#include <cstdint>
#include <tuple>

#include "layers.hpp"
#include "module.hpp"
#include "sequence.hpp"

namespace unroll::nn {

/// sLSTM state, each [B, H]: h the last output (read by the gates: memory mixing), c the cell, n the normaliser,
/// m the stabiliser. h comes first so that run_cell's default output is h.
struct SLSTMState {
  Tensor h, c, n, m;
  auto tensors() { return std::tie(h, c, n, m); }
  auto tensors() const { return std::tie(h, c, n, m); }
};

/// mLSTM state: h [B, H] the last output (carried only so that run_cell can emit it; the step does not read it,
/// and it may be undefined in a state given to forward), C [B, heads, D, D] the matrix memory, n [B, heads, D] the
/// normaliser, m [B, heads] the stabiliser. A state given to run_cell with as_step() needs h too: run_cell
/// replaces a state with any undefined tensor by initial_state.
struct MLSTMState {
  Tensor h, C, n, m;
  auto tensors() { return std::tie(h, C, n, m); }
  auto tensors() const { return std::tie(h, C, n, m); }
};

/// A cell's `step` and `initial_state` as one run_cell step (operator() of the cells runs a whole sequence).
template <class Cell, class State>
struct CellStepOf {
  const Cell* cell;
  State operator()(const Tensor& x_t, const State& state) const { return cell->step(x_t, state); }
  State initial_state(std::int64_t batch, Dtype dtype) const { return cell->initial_state(batch, dtype); }
};

/// sLSTM with `heads` heads of D = hidden_size / heads units. Per step (gate order i, f, z, o, as the official
/// code), with r_g the gate g's block of R h_{t-1}:
///   ĩ, f̃, z̃, õ = W_g x_t + b_g + r_g;  log f = logsigmoid(f̃);  m_t = max(log f + m_{t-1}, ĩ)
///   c_t = f' c_{t-1} + i' tanh(z̃);  n_t = f' n_{t-1} + i';  h_t = σ(õ) ⊙ c_t / n_t
/// Parameters (nn::Linear's PyTorch-default init, U(±1/√fan_in)):
///   igate, fgate, zgate, ogate   nn::Linear input_size -> hidden_size: weight [H, I], bias [H]
///   recurrent_kernel             [heads, D, 4·D]: head k's gates, in the order i, f, z, o along the last dim,
///                                are h_{t-1}[k·D:(k+1)·D] · recurrent_kernel[k]; U(±1/√D)
class SLSTM : public Module {
 public:
  SLSTM(std::int64_t input_size, std::int64_t hidden_size, std::int64_t heads = 1, Dtype dtype = Dtype::float32);

  /// x [T, B, I], state (undefined: zeros) -> {every h_t [T, B, H], the final state}.
  SequenceOutput<SLSTMState> forward(const Tensor& x, const SLSTMState& state = {}) const;
  SequenceOutput<SLSTMState> operator()(const Tensor& x, const SLSTMState& state = {}) const {
    return forward(x, state);
  }
  /// One step: x_t [B, I], state (each [B, H], defined) -> the next state. A run_cell step.
  SLSTMState step(const Tensor& x_t, const SLSTMState& state) const;
  /// The cell as a run_cell step that also gives its initial_state: run_cell(x, SLSTMState{}, cell.as_step()).
  CellStepOf<SLSTM, SLSTMState> as_step() const { return {this}; }
  /// Zeros, each [batch, H].
  SLSTMState initial_state(std::int64_t batch, Dtype dtype) const;
  void reset_parameters();

  std::int64_t input_size() const { return input_size_; }
  std::int64_t hidden_size() const { return hidden_size_; }
  std::int64_t heads() const { return heads_; }

  Linear igate, fgate, zgate, ogate;
  Tensor recurrent_kernel;

 private:
  // One step from the input part of the gates, xg [B, 4, H] (W x + b, gates i, f, z, o).
  SLSTMState step_from_gates(const Tensor& xg, const SLSTMState& s) const;
  void check_state(const SLSTMState& s, std::int64_t batch, Dtype dtype) const;

  std::int64_t input_size_, hidden_size_, heads_;
};

/// How MLSTM::forward computes the sequence.
enum class MLSTMForm {
  recurrent,  ///< step by step on run_cell: O(T·D²) per head, memory O(T·D²) saved for backward
  parallel,   ///< all steps at once: O(T²·D) per head, memory O(T²)
};

/// mLSTM with `heads` heads of D = hidden_size / heads. Per step and head (ĩ, f̃ scalars per head):
///   q = W_q x + b_q,  k = (W_k x + b_k) / √D,  v = W_v x + b_v,  o = σ(W_o x + b_o)
///   log f = logsigmoid(f̃),  m_t = max(log f + m_{t-1}, ĩ),  i' = exp(ĩ - m_t),  f' = exp(log f + m_{t-1} - m_t)
///   C_t = f' C_{t-1} + i' v kᵀ,  n_t = f' n_{t-1} + i' k,  h_t = o ⊙ C_t q / max(|n_tᵀ q|, exp(-m_t))
/// (heads concatenated to H). Parameters (nn::Linear each, PyTorch-default init; names as the official code):
///   q_proj, k_proj, v_proj, ogate   input_size -> hidden_size: weight [H, I], bias [H]
///   igate, fgate                    input_size -> heads:       weight [heads, I], bias [heads]
class MLSTM : public Module {
 public:
  MLSTM(std::int64_t input_size, std::int64_t hidden_size, std::int64_t heads = 1, MLSTMForm form = MLSTMForm::parallel,
        Dtype dtype = Dtype::float32);

  /// x [T, B, I], state (C, n, m all undefined: zeros; h is not read) -> {every h_t [T, B, H], the final state},
  /// in the form given (default: the one chosen at construction).
  SequenceOutput<MLSTMState> forward(const Tensor& x, const MLSTMState& state = {}) const {
    return forward(x, state, form_);
  }
  SequenceOutput<MLSTMState> forward(const Tensor& x, const MLSTMState& state, MLSTMForm form) const;
  SequenceOutput<MLSTMState> operator()(const Tensor& x, const MLSTMState& state = {}) const {
    return forward(x, state);
  }
  /// One step: x_t [B, I], state (C, n, m defined) -> the next state, its h the step's output. A run_cell step.
  MLSTMState step(const Tensor& x_t, const MLSTMState& state) const;
  /// The cell as a run_cell step that also gives its initial_state: run_cell(x, MLSTMState{}, cell.as_step()).
  CellStepOf<MLSTM, MLSTMState> as_step() const { return {this}; }
  /// Zeros: h [batch, H], C [batch, heads, D, D], n [batch, heads, D], m [batch, heads].
  MLSTMState initial_state(std::int64_t batch, Dtype dtype) const;

  std::int64_t input_size() const { return input_size_; }
  std::int64_t hidden_size() const { return hidden_size_; }
  std::int64_t heads() const { return heads_; }
  MLSTMForm form() const { return form_; }

  Linear q_proj, k_proj, v_proj, igate, fgate, ogate;

 private:
  struct Projections;  // q, k, v, ĩ, log f, o for one step or all of them
  Projections project(const Tensor& x) const;
  MLSTMState step_from(const Projections& p, const MLSTMState& s) const;
  SequenceOutput<MLSTMState> parallel(const Tensor& x, const MLSTMState& s) const;
  void check_state(const MLSTMState& s, std::int64_t batch, Dtype dtype, bool need_h) const;

  std::int64_t input_size_, hidden_size_, heads_;
  MLSTMForm form_;
};

}  // namespace unroll::nn
