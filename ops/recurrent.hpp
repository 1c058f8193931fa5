#pragma once
// Fused recurrent steps for the standard cells: each is ONE tape node doing the hidden-to-hidden gate GEMM
// and all of the cell's pointwise math in one pass, with a hand-written backward. The input projection
// gx = x W_ih^T + b_ih is computed outside (for a whole sequence at once by the sequence layers, with
// linear() on [T*B, I]), so a step only multiplies by W_hh. Formulas and gate orders are PyTorch's.
//
// `mask` (optional, [B], same dtype, 1 = step / 0 = hold) implements variable-length batches without
// packing: a row whose sequence has ended keeps its state unchanged and passes its gradient straight
// through, so final states are each sequence's own last step.
#include <memory>
#include <utility>

#include "../core/tensor.hpp"

namespace unroll {

enum class RnnActivation { tanh, relu };

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

/// Elman step: h' = act(gx + h W_hh^T + b_hh).  gx [B, H], h [B, H], w_hh [H, H], b_hh [H] or undefined -> [B, H].
Tensor rnn_step(const Tensor& gx, const Tensor& h, const HiddenWeight& w_hh, const Tensor& b_hh, RnnActivation act,
                const Tensor& mask = {});

/// LSTM step: gates = gx + h W_hh^T + b_hh split (i, f, g, o); c' = σ(f) c + σ(i) tanh(g); h' = σ(o) tanh(c').
/// gx [B, 4H], h and c [B, H], w_hh [4H, H], b_hh [4H] or undefined -> {h', c'}.
std::pair<Tensor, Tensor> lstm_step(const Tensor& gx, const Tensor& h, const Tensor& c, const HiddenWeight& w_hh,
                                    const Tensor& b_hh, const Tensor& mask = {});

/// GRU step: with gh = h W_hh^T + b_hh, both split (r, z, n): r = σ(gx_r + gh_r), z = σ(gx_z + gh_z),
/// n = tanh(gx_n + r ⊙ gh_n), h' = (1 - z) n + z h.  gx [B, 3H], h [B, H], w_hh [3H, H] -> [B, H].
Tensor gru_step(const Tensor& gx, const Tensor& h, const HiddenWeight& w_hh, const Tensor& b_hh, const Tensor& mask = {});

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
/// T steps at once: dW_hh += dGXᵀ·H_prev with K = T*B, instead of one K = B product per step (OpenBLAS runs
/// that shape at two thirds of the speed: bench/RESULTS.md), and db_ih, db_hh += the sum of all T*B rows of
/// dGX. The steps then get `w_hh.detach()` and, as their bias, `b_ih + b_hh` detached (the biases may be
/// undefined): the bias is added in the steps' register tiles rather than by a pass over the [T, B, G*H]
/// projection. Valid only for steps whose gate gradient is exactly their gx gradient: rnn_step and
/// lstm_step (not gru_step, whose n gate scales the hidden part by r). StateError in backward if `history`
/// was not filled in to match.
Tensor with_hidden_weight_grad(const Tensor& gx, const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh,
                               std::shared_ptr<const HiddenHistory> history);

}  // namespace unroll
