#pragma once
// Attention layers: nn.MultiheadAttention and nn.TransformerEncoderLayer/TransformerEncoder with PyTorch's
// parameter names, layout and initialisation (a state dict moves between the two), positional encodings,
// and the additive (Bahdanau) and multiplicative (Luong) attention an RNN decoder attends with.
// Masks: unroll has no bool dtype, so an int64 tensor plays PyTorch's bool masks (nonzero = true) with
// PyTorch's meaning for each argument; a floating mask is added to the scores.
#include <cstdint>
#include <memory>
#include <string>

#include "../core/random.hpp"
#include "../ops/attention.hpp"
#include "layers.hpp"
#include "module.hpp"

namespace unroll::nn {

/// The per-call arguments of MultiheadAttention::forward (PyTorch's keyword arguments).
struct MultiheadAttentionOptions {
  /// int64 [N, S] (nonzero = key s of batch row n is padding, ignored) or undefined.
  Tensor key_padding_mask;
  /// [L, S] or [N * num_heads, L, S]: int64 (nonzero = query l may NOT attend key s, as PyTorch's bool
  /// attn_mask) or floating (added to the scores; a constant: unlike PyTorch, it gets no gradient).
  Tensor attn_mask;
  /// Query l attends keys s <= l only. Unlike PyTorch (where it is a hint that attn_mask is causal), it
  /// applies the causal mask itself, so no [L, S] mask is needed; with attn_mask as well, both apply.
  bool is_causal = false;
  bool need_weights = true;          ///< also return the attention weights (without gradient)
  bool average_attn_weights = true;  ///< weights averaged over heads [N, L, S], else [N, num_heads, L, S]
};

struct MultiheadAttentionOutput {
  Tensor output;   ///< [L, N, E] ([N, L, E] with batch_first; [L, E] for unbatched input)
  /// Softmax weights, or undefined when !need_weights. Without gradient, and before dropout (PyTorch returns
  /// them after dropout while training).
  Tensor weights;
};

/// Multi-head attention (Vaswani et al.), PyTorch's nn.MultiheadAttention with kdim = vdim = embed_dim:
/// in_proj_weight [3E, E] (q, k, v rows in that order; xavier_uniform), in_proj_bias [3E] (zeros),
/// out_proj.weight [E, E] (Linear's init), out_proj.bias [E] (zeros). Inputs are [L, N, E] (or [N, L, E] with
/// batch_first, or unbatched [L, E]). When query, key and value are the same tensor (self-attention) the three
/// projections run as one product. Dropout on the weights while training.
class MultiheadAttention : public Module {
 public:
  MultiheadAttention(std::int64_t embed_dim, std::int64_t num_heads, double dropout = 0.0, bool bias = true,
                     bool batch_first = false, Dtype dtype = Dtype::float32);
  MultiheadAttentionOutput forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                   const MultiheadAttentionOptions& options = {}) const;
  MultiheadAttentionOutput operator()(const Tensor& query, const Tensor& key, const Tensor& value,
                                      const MultiheadAttentionOptions& options = {}) const {
    return forward(query, key, value, options);
  }
  void reset_parameters();

  Tensor in_proj_weight, in_proj_bias;  ///< in_proj_bias undefined without bias
  Linear out_proj;
  std::int64_t embed_dim, num_heads, head_dim;
  double dropout;
  bool batch_first;
  Generator* generator = nullptr;  ///< for dropout; null: the thread's default generator
};

enum class Activation { relu, gelu };
/// "relu" or "gelu" -> Activation; ValueError naming `where` otherwise.
Activation parse_activation(const char* where, const std::string& name);

struct TransformerEncoderLayerOptions {
  std::int64_t d_model = 512;
  std::int64_t nhead = 8;
  std::int64_t dim_feedforward = 2048;
  double dropout = 0.1;
  Activation activation = Activation::relu;
  double layer_norm_eps = 1e-5;
  bool batch_first = false;
  bool norm_first = false;  ///< pre-norm: x + f(norm(x)); post-norm (PyTorch's default): norm(x + f(x))
  Dtype dtype = Dtype::float32;
};

/// PyTorch's nn.TransformerEncoderLayer: self_attn, linear1, dropout, linear2, norm1, norm2, dropout1,
/// dropout2, with its names and initialisation.
///   post-norm: x = norm1(x + sa(x)); x = norm2(x + ff(x))
///   pre-norm:  x = x + sa(norm1(x)); x = x + ff(norm2(x))
/// sa(x) = dropout1(self_attn(x, x, x)), ff(x) = dropout2(linear2(dropout(act(linear1(x))))).
class TransformerEncoderLayer : public Module {
 public:
  explicit TransformerEncoderLayer(const TransformerEncoderLayerOptions& options);
  /// src [S, N, E] ([N, S, E] with batch_first); src_mask and src_key_padding_mask as MultiheadAttention's
  /// attn_mask and key_padding_mask; is_causal applies the causal mask.
  Tensor forward(const Tensor& src, const Tensor& src_mask = {}, const Tensor& src_key_padding_mask = {},
                 bool is_causal = false) const;
  Tensor operator()(const Tensor& src, const Tensor& src_mask = {}, const Tensor& src_key_padding_mask = {},
                    bool is_causal = false) const {
    return forward(src, src_mask, src_key_padding_mask, is_causal);
  }

  TransformerEncoderLayerOptions options;
  MultiheadAttention self_attn;
  Linear linear1;
  Dropout dropout;
  Linear linear2;
  LayerNorm norm1, norm2;
  Dropout dropout1, dropout2;
};

/// num_layers TransformerEncoderLayers ("layers.0." ...), then an optional final LayerNorm ("norm."), with
/// PyTorch's nn.TransformerEncoder(layer, num_layers, norm) names. Unlike PyTorch, which deep-copies one layer
/// (so every layer starts with the same weights), each layer is initialised on its own.
class TransformerEncoder : public Module {
 public:
  TransformerEncoder(const TransformerEncoderLayerOptions& layer, std::int64_t num_layers, bool final_norm = false);
  Tensor forward(const Tensor& src, const Tensor& mask = {}, const Tensor& src_key_padding_mask = {},
                 bool is_causal = false) const;
  Tensor operator()(const Tensor& src, const Tensor& mask = {}, const Tensor& src_key_padding_mask = {},
                    bool is_causal = false) const {
    return forward(src, mask, src_key_padding_mask, is_causal);
  }

  ModuleList<TransformerEncoderLayer> layers;
  std::unique_ptr<LayerNorm> norm;  ///< null without final_norm
};

/// Adds the fixed sinusoids of "Attention is all you need": pe[pos, 2i] = sin(pos / 10000^(2i/d)),
/// pe[pos, 2i+1] = cos(pos / 10000^(2i/d)). No parameters (pe is recomputed, not saved in the state dict).
class SinusoidalPositionalEncoding : public Module {
 public:
  explicit SinusoidalPositionalEncoding(std::int64_t d_model, std::int64_t max_len = 5000,
                                        Dtype dtype = Dtype::float32);
  /// x [N, T, d] (batch_first) or [T, N, d] -> x + pe[offset : offset + T]; offset: the first position (a
  /// decoder fed one step at a time passes its step). ValueError past max_len.
  Tensor forward(const Tensor& x, bool batch_first = true, std::int64_t offset = 0) const;
  Tensor operator()(const Tensor& x, bool batch_first = true, std::int64_t offset = 0) const {
    return forward(x, batch_first, offset);
  }
  Tensor pe;  ///< [max_len, d_model]
};

/// A trained position embedding added to x: weight [max_len, d_model] ~ N(0, 0.02^2) (BERT's and GPT-2's init).
class LearnedPositionalEncoding : public Module {
 public:
  LearnedPositionalEncoding(std::int64_t max_len, std::int64_t d_model, Dtype dtype = Dtype::float32);
  Tensor forward(const Tensor& x, bool batch_first = true, std::int64_t offset = 0) const;
  Tensor operator()(const Tensor& x, bool batch_first = true, std::int64_t offset = 0) const {
    return forward(x, batch_first, offset);
  }
  void reset_parameters();
  Tensor weight;
};

/// What an RNN decoder's attention returns for one step.
struct AttentionResult {
  Tensor context;  ///< [N, Dv]: the weighted sum of the values
  Tensor weights;  ///< [N, S]: softmax over the keys (differentiable)
};

/// Additive attention (Bahdanau, Cho & Bengio 2015): score(q, k_s) = v . tanh(W_q q + W_k k_s + b).
/// query_proj.weight [H, Dq] (no bias), key_proj.weight [H, Dk], key_proj.bias [H], v.weight [1, H]
/// (no bias); Linear's init. The keys' projection does not depend on the step: compute it once per
/// sequence with project_keys and call attend at every step.
class AdditiveAttention : public Module {
 public:
  AdditiveAttention(std::int64_t query_dim, std::int64_t key_dim, std::int64_t hidden_dim,
                    Dtype dtype = Dtype::float32);
  /// keys [N, S, Dk] -> [N, S, H].
  Tensor project_keys(const Tensor& keys) const;
  /// query [N, Dq], projected_keys [N, S, H], values [N, S, Dv], key_padding_mask int64 [N, S] (nonzero =
  /// padding; every row must keep a key) or undefined.
  AttentionResult attend(const Tensor& query, const Tensor& projected_keys, const Tensor& values,
                         const Tensor& key_padding_mask = {}) const;
  /// project_keys and attend in one call.
  AttentionResult forward(const Tensor& query, const Tensor& keys, const Tensor& values,
                          const Tensor& key_padding_mask = {}) const {
    return attend(query, project_keys(keys), values, key_padding_mask);
  }
  AttentionResult operator()(const Tensor& query, const Tensor& keys, const Tensor& values,
                             const Tensor& key_padding_mask = {}) const {
    return forward(query, keys, values, key_padding_mask);
  }
  Linear query_proj, key_proj, v;
};

/// Luong et al. 2015's scores: dot (q . k_s), general (q . W k_s) and scaled_dot (q . k_s / sqrt(Dk)).
enum class LuongScore { dot, general, scaled_dot };
LuongScore parse_luong_score(const char* where, const std::string& name);

/// Multiplicative attention (Luong): general has key_proj.weight [Dq, Dk] (no bias; Linear's init); dot and
/// scaled_dot have no parameters and need Dq == Dk. Same calling pattern as AdditiveAttention.
class MultiplicativeAttention : public Module {
 public:
  MultiplicativeAttention(std::int64_t query_dim, std::int64_t key_dim, LuongScore score = LuongScore::general,
                          Dtype dtype = Dtype::float32);
  /// keys [N, S, Dk] -> [N, S, Dq] (general) or the keys themselves.
  Tensor project_keys(const Tensor& keys) const;
  AttentionResult attend(const Tensor& query, const Tensor& projected_keys, const Tensor& values,
                         const Tensor& key_padding_mask = {}) const;
  AttentionResult forward(const Tensor& query, const Tensor& keys, const Tensor& values,
                          const Tensor& key_padding_mask = {}) const {
    return attend(query, project_keys(keys), values, key_padding_mask);
  }
  AttentionResult operator()(const Tensor& query, const Tensor& keys, const Tensor& values,
                             const Tensor& key_padding_mask = {}) const {
    return forward(query, keys, values, key_padding_mask);
  }
  LuongScore score;
  std::int64_t query_dim, key_dim;
  std::unique_ptr<Linear> key_proj;  ///< general only
};

}  // namespace unroll::nn
