#pragma once
// Scaled dot-product attention as ONE op: softmax(q k^T * scale + mask) v over any leading (batch, head)
// dims, recorded as one tape node. It keeps only the attention weights [..., Tq, Tk] (and the dropout mask
// when dropout is on) besides handles to q, k and v; the scores, the masked scores and the gradient of the
// weights live in one [Tq, Tk] scratch per thread. Masks follow PyTorch's conventions; unroll has no bool
// dtype, so an int64 tensor plays the bool mask (nonzero = true).
#include <optional>

#include "../core/random.hpp"
#include "../core/tensor.hpp"

namespace unroll {

struct AttentionOptions {
  /// Broadcastable to [..., Tq, Tk] (NumPy rules, aligned from the right). int64: nonzero = query i may
  /// attend key j (torch.nn.functional.scaled_dot_product_attention's bool mask); floating (q's dtype):
  /// added to the scores, -inf forbids. A constant: no gradient reaches a floating mask.
  Tensor attn_mask;
  /// int64 [N, Tk] for q [N, ..., Tq, E] (N is q's first dim, the batch): nonzero = key j of batch row n is
  /// padding, ignored by every query of that row (nn.MultiheadAttention's key_padding_mask). q must be >= 3-D.
  Tensor key_padding_mask;
  /// Query i attends keys j <= i only (top-left aligned, as PyTorch's is_causal), on top of any mask.
  bool is_causal = false;
  /// Multiplies q k^T; default 1/sqrt(E).
  std::optional<double> scale;
  /// Dropout on the attention weights, inverted (kept weights scaled by 1/(1-p)); 0 in evaluation.
  double dropout_p = 0;
  Generator* generator = nullptr;  ///< for the dropout mask; null: the thread's default generator
  /// If set, receives the attention weights [..., Tq, Tk] before dropout, without gradient. They share
  /// storage with what backward keeps: read them, do not modify them in place.
  Tensor* weights = nullptr;
};

/// q [..., Tq, E], k [..., Tk, E], v [..., Tk, Ev] with equal leading dims -> [..., Tq, Ev].
/// A query row whose keys are all masked gets zero weights, a zero output and zero gradients (PyTorch's
/// math path gives nan there).
/// Backward: dV = P^T dO;  dP = dO V^T;  dS = P (dP - rowsum(dP P)) * scale;  dQ = dS K;  dK = dS^T Q
/// (P the weights after dropout where dV and dP are concerned).
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const AttentionOptions& options = {});

}  // namespace unroll
