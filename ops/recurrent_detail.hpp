#pragma once
// Internal: what the sequence layers (nn/rnn.cpp) use to run the fused steps of ops/recurrent.hpp fast —
// a weight_hh packed once per sequence, the one-GEMM weight_hh gradient, and one traits entry per step op.
// Adding a fused step: its op and kernels in ops/recurrent.cpp, its StepTraits entry below, its tests
// (docs/DESIGN.md, "Adding a fused cell").
#include <cstdint>
#include <memory>

#include "../core/tensor.hpp"
#include "recurrent.hpp"

namespace unroll::detail {

/// A step's weight_hh W [G*H, H]. Any Tensor converts to one, and a step then multiplies by W with
/// detail::gemm. HiddenWeight::prepare, made once for all T steps of a sequence, also holds W copied into
/// the layouts of the step's two products (Wᵀ for the forward h·Wᵀ, W for the backward dG·W) for
/// detail::gemm_packed, where the products would otherwise go to BLAS, which re-packs W in every call.
/// The copies are a snapshot of W: prepare again after W changes (the sequence layers prepare on every call).
class HiddenWeight {
 public:
  HiddenWeight(const Tensor& w) : w_(w) {}  // NOLINT(google-explicit-constructor): any Tensor is an unpacked weight
  /// For steps with `batch` rows: packed when the products would otherwise go to BLAS
  /// (detail::goes_to_blas), the backward copy only in grad mode.
  static HiddenWeight prepare(const Tensor& w, std::int64_t batch);
  /// Packed whatever the size (tests; the backward copy only in grad mode).
  static HiddenWeight packed(const Tensor& w);

  const Tensor& tensor() const { return w_; }
  bool is_packed() const { return packs_ != nullptr; }
  struct Packs;  // ops/recurrent.cpp
  const std::shared_ptr<const Packs>& packs() const { return packs_; }

 private:
  Tensor w_;
  std::shared_ptr<const Packs> packs_;  // null: unpacked
};

/// The step ops of ops/recurrent.hpp with a prepared weight_hh (same checks, values and gradients).
Tensor rnn_step(const Tensor& gx, const Tensor& h, const HiddenWeight& w_hh, const Tensor& b_hh, RnnActivation act,
                const Tensor& mask = {});
std::pair<Tensor, Tensor> lstm_step(const Tensor& gx, const Tensor& h, const Tensor& c, const HiddenWeight& w_hh,
                                    const Tensor& b_hh, const Tensor& mask = {});
Tensor gru_step(const Tensor& gx, const Tensor& h, const HiddenWeight& w_hh, const Tensor& b_hh,
                const Tensor& mask = {});

/// The hidden states a sequence's steps read, for with_hidden_weight_grad. Filled in by the caller after the
/// steps have run (before backward): step t read states[t - 1] (states[t + 1] when reverse), and the first
/// step (t = 0, or T - 1 when reverse) read `initial`. So the layer's stacked step outputs serve as they
/// are, with no stacked copy of the steps' inputs.
struct HiddenHistory {
  Tensor initial;  // [B, H]; undefined: zeros (the product with it is skipped)
  Tensor states;   // [T, B, H]: each step's output, before any length mask zeroes rows past the end
  bool reverse = false;
};

/// For sequence layers: `gx` [T, B, G*H] (the input gates of every step, without b_ih) passed through
/// unchanged, but recorded so that its backward also computes the hidden-to-hidden and bias gradients of all
/// T steps at once: dW_hh += dGXᵀ·H_prev in one GEMM with K = T*B instead of one K = B product per step,
/// and db_ih, db_hh += the sum of all T*B rows of dGX. The steps then get `w_hh.detach()` and, as their
/// bias, `b_ih + b_hh` detached (the biases may be undefined), which they add in their register tiles
/// rather than in a pass over the [T, B, G*H] projection. Valid only for steps whose StepTraits say
/// `gate_grad_is_input_grad`. StateError in backward if `history` was not filled in to match.
Tensor with_hidden_weight_grad(const Tensor& gx, const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh,
                               std::shared_ptr<const HiddenHistory> history);

/// A recurrent state: h, plus c for the steps that carry a cell state.
struct StepState {
  Tensor h, c;
};

/// One entry per fused step op: everything a sequence layer needs to know to run it.
struct StepTraits {
  const char* op;       ///< the op's name, as its errors give it
  std::int64_t gates;   ///< H-wide gate blocks in gx, weight_ih, weight_hh and the biases
  bool has_cell_state;  ///< carries c besides h
  /// The step's gate gradient is exactly its gx gradient (every gate adds its hidden part unscaled), so
  /// with_hidden_weight_grad may compute weight_hh's and the biases' gradients for all steps at once.
  bool gate_grad_is_input_grad;
  /// state <- the step on gx [B, G*H]; `b` the step's bias [G*H] or undefined; `mask` [B] or undefined.
  void (*step)(const Tensor& gx, StepState& state, const HiddenWeight& w_hh, const Tensor& b, const Tensor& mask);
};
extern const StepTraits rnn_tanh_step_traits, rnn_relu_step_traits, lstm_step_traits, gru_step_traits;

}  // namespace unroll::detail
