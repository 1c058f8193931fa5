#pragma once
// Fused recurrent steps for the standard cells: each is ONE tape node doing the hidden-to-hidden gate GEMM
// and all of the cell's pointwise math in one pass, with a hand-written backward. The input projection
// gx = x W_ih^T + b_ih is computed outside (for a whole sequence at once by the sequence layers, with
// linear() on [T*B, I]), so a step only multiplies by W_hh. Formulas and gate orders are PyTorch's.
//
// `mask` (optional, [B], same dtype, 1 = step / 0 = hold) implements variable-length batches without
// packing: a row whose sequence has ended keeps its state unchanged and passes its gradient straight
// through, so final states are each sequence's own last step.
#include <utility>

#include "../core/tensor.hpp"

namespace unroll {

enum class RnnActivation { tanh, relu };

/// Elman step: h' = act(gx + h W_hh^T + b_hh).  gx [B, H], h [B, H], w_hh [H, H], b_hh [H] or undefined -> [B, H].
Tensor rnn_step(const Tensor& gx, const Tensor& h, const Tensor& w_hh, const Tensor& b_hh, RnnActivation act,
                const Tensor& mask = {});

/// LSTM step: gates = gx + h W_hh^T + b_hh split (i, f, g, o); c' = σ(f) c + σ(i) tanh(g); h' = σ(o) tanh(c').
/// gx [B, 4H], h and c [B, H], w_hh [4H, H], b_hh [4H] or undefined -> {h', c'}.
std::pair<Tensor, Tensor> lstm_step(const Tensor& gx, const Tensor& h, const Tensor& c, const Tensor& w_hh,
                                    const Tensor& b_hh, const Tensor& mask = {});

/// GRU step: with gh = h W_hh^T + b_hh, both split (r, z, n): r = σ(gx_r + gh_r), z = σ(gx_z + gh_z),
/// n = tanh(gx_n + r ⊙ gh_n), h' = (1 - z) n + z h.  gx [B, 3H], h [B, H], w_hh [3H, H] -> [B, H].
Tensor gru_step(const Tensor& gx, const Tensor& h, const Tensor& w_hh, const Tensor& b_hh, const Tensor& mask = {});

}  // namespace unroll
