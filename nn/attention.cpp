#include "attention.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include "../autograd/tape.hpp"
#include "../ops/elementwise.hpp"
#include "../ops/linear.hpp"
#include "../ops/matmul.hpp"
#include "../ops/reduce.hpp"
#include "../ops/shape_ops.hpp"
#include "init.hpp"

namespace unroll::nn {
namespace {

// int64 mask (nonzero = forbidden) -> int64 mask (nonzero = allowed), the convention of the attention op.
Tensor allowed_from_forbidden(const Tensor& forbidden) {
  const auto v = forbidden.to_vector<std::int64_t>();
  std::vector<std::int64_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = v[i] == 0 ? 1 : 0;
  return index_tensor(out, forbidden.shape());
}

// The same tensor to autograd as well as in value: a view with the same data but cut from the graph (x.detach())
// must not share x's packed projection, or the k and v gradients would flow into x.
bool same_tensor(const Tensor& a, const Tensor& b) {
  return a.same_data(b) && a.shape() == b.shape() && a.leaf() == b.leaf() && a.tape_key() == b.tape_key();
}

// The shared end of the RNN decoder attentions: masked softmax over the keys and the weighted sum.
AttentionResult softmax_and_context(const char* where, const Tensor& scores, const Tensor& values,
                                    const Tensor& key_padding_mask) {
  const std::int64_t N = scores.size(0), S = scores.size(1);
  UNROLL_CHECK(values.dim() == 3 && values.size(0) == N && values.size(1) == S, ShapeError,
               "{}: values must be [N, S, Dv] with the keys' N and S; got values={}, keys [{}, {}, ...]", where,
               values.shape(), N, S);
  Tensor s = scores;
  if (key_padding_mask.defined()) {
    UNROLL_CHECK(key_padding_mask.dtype() == Dtype::int64, DtypeError,
                 "{}: key_padding_mask must be int64 (nonzero = padding); got {}", where, key_padding_mask.dtype());
    UNROLL_CHECK(key_padding_mask.shape() == Shape({N, S}), ShapeError,
                 "{}: key_padding_mask must be [N, S]; got {}, expected [{}, {}]", where, key_padding_mask.shape(), N,
                 S);
    const auto m = key_padding_mask.to_vector<std::int64_t>();
    for (std::int64_t n = 0; n < N; ++n) {
      bool any = false;
      for (std::int64_t j = 0; j < S && !any; ++j) any = m[static_cast<std::size_t>(n * S + j)] == 0;
      UNROLL_CHECK(any || S == 0, ValueError,
                   "{}: key_padding_mask hides every key of batch row {}; expected at least one key to attend to",
                   where, n);
    }
    s = masked_fill(s, key_padding_mask, -std::numeric_limits<double>::infinity());
  }
  Tensor w = softmax(s, 1);
  Tensor context = reshape(matmul(unsqueeze(w, 1), values), {N, values.size(2)});
  return {std::move(context), std::move(w)};
}

}  // namespace

// ---------------------------------------------------------------------------------------------- MultiheadAttention

MultiheadAttention::MultiheadAttention(std::int64_t embed_dim_, std::int64_t num_heads_, double dropout_, bool bias,
                                       bool batch_first_, Dtype dtype)
    : out_proj(embed_dim_, embed_dim_, bias, dtype),
      embed_dim(embed_dim_),
      num_heads(num_heads_),
      head_dim(num_heads_ > 0 ? embed_dim_ / num_heads_ : 0),
      dropout(dropout_),
      batch_first(batch_first_) {
  UNROLL_CHECK(embed_dim > 0 && num_heads > 0 && head_dim * num_heads == embed_dim, ValueError,
               "MultiheadAttention: embed_dim must be a positive multiple of num_heads; got embed_dim={} num_heads={}",
               embed_dim, num_heads);
  UNROLL_CHECK(dropout >= 0 && dropout <= 1, ValueError,
               "MultiheadAttention: dropout out of range; got {}, expected 0 <= dropout <= 1", dropout);
  in_proj_weight = Tensor::empty({3 * embed_dim, embed_dim}, dtype);
  register_parameter("in_proj_weight", in_proj_weight);
  if (bias) {
    in_proj_bias = Tensor::empty({3 * embed_dim}, dtype);
    register_parameter("in_proj_bias", in_proj_bias);
  }
  register_module("out_proj", out_proj);
  reset_parameters();
}

// PyTorch's _reset_parameters: xavier_uniform_ on the packed projection (fan over all 3E rows), zero biases;
// out_proj.weight keeps Linear's init.
void MultiheadAttention::reset_parameters() {
  init::xavier_uniform_(in_proj_weight);
  out_proj.reset_parameters();
  if (in_proj_bias.defined()) init::zeros_(in_proj_bias);
  if (out_proj.bias.defined()) init::zeros_(out_proj.bias);
}

MultiheadAttentionOutput MultiheadAttention::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                                     const MultiheadAttentionOptions& o) const {
  constexpr const char* where = "MultiheadAttention";
  for (const Tensor* t : {&query, &key, &value})
    UNROLL_CHECK(t->defined(), StateError, "{}: {} is undefined; got an undefined tensor, expected a tensor", where,
                 t == &query ? "query"
                 : t == &key ? "key"
                             : "value");
  const int D = query.dim();
  UNROLL_CHECK((D == 2 || D == 3) && key.dim() == D && value.dim() == D, ShapeError,
               "{}: query, key and value must all be 3-D (batched) or 2-D (unbatched); got query={}, key={}, value={}",
               where, query.shape(), key.shape(), value.shape());
  const bool unbatched = D == 2;
  // The inputs stay in their own layout ([N, T, E], or [T, N, E] sequence first; unbatched input is a batch of
  // one): splitting the heads is one permute either way, so sequence-first input costs no extra transposes.
  const bool seq_first = !batch_first && !unbatched;
  auto as_3d = [&](const Tensor& x) { return unbatched ? unsqueeze(x, 0) : x; };
  const int ti = unbatched ? 0 : batch_first ? 1 : 0;  // the time dim of the inputs
  const std::int64_t L = query.size(ti), S = key.size(ti);
  const std::int64_t N = unbatched ? 1 : query.size(batch_first ? 0 : 1);
  const bool same_batch = unbatched || (key.size(batch_first ? 0 : 1) == N && value.size(batch_first ? 0 : 1) == N);
  UNROLL_CHECK(query.size(-1) == embed_dim && key.size(-1) == embed_dim && value.size(-1) == embed_dim &&
                   value.size(ti) == S && same_batch,
               ShapeError, "{}: expected query [{}], key and value [{}] with E={} ({}); got query={}, key={}, value={}",
               where,
               unbatched     ? "L, E"
               : batch_first ? "N, L, E"
                             : "L, N, E",
               unbatched     ? "S, E"
               : batch_first ? "N, S, E"
                             : "S, N, E",
               embed_dim, batch_first ? "batch_first" : "sequence first", query.shape(), key.shape(), value.shape());
  const std::int64_t H = num_heads, d = head_dim, E = embed_dim;
  const bool has_bias = in_proj_bias.defined();

  // [N, T, k E] (or [T, N, k E]) packed projections -> k tensors [N, H, T, d]
  auto split_heads = [&](const Tensor& packed, std::int64_t T, std::int64_t k) {
    Tensor r = seq_first ? permute(reshape(packed, {T, N, k, H, d}), {2, 1, 3, 0, 4})
                         : permute(reshape(packed, {N, T, k, H, d}), {2, 0, 3, 1, 4});
    std::vector<Tensor> out;
    for (std::int64_t i = 0; i < k; ++i) out.push_back(select(r, 0, i));
    return out;
  };
  auto project = [&](const Tensor& x, std::int64_t first, std::int64_t count) {
    return linear(as_3d(x), narrow(in_proj_weight, 0, first * E, count * E),
                  has_bias ? narrow(in_proj_bias, 0, first * E, count * E) : Tensor());
  };
  std::vector<Tensor> qkv;
  const bool self_attention = same_tensor(query, key) && same_tensor(key, value);
  if (self_attention) {
    qkv = split_heads(linear(as_3d(query), in_proj_weight, in_proj_bias), L, 3);
  } else {
    qkv = split_heads(project(query, 0, 1), L, 1);
    if (same_tensor(key, value)) {
      for (Tensor& t : split_heads(project(key, 1, 2), S, 2)) qkv.push_back(std::move(t));
    } else {
      qkv.push_back(split_heads(project(key, 1, 1), S, 1)[0]);
      qkv.push_back(split_heads(project(value, 2, 1), S, 1)[0]);
    }
  }

  AttentionOptions ao;
  if (o.key_padding_mask.defined()) {
    const Tensor& m = o.key_padding_mask;
    UNROLL_CHECK(m.dtype() == Dtype::int64, DtypeError,
                 "{}: key_padding_mask must be int64 (nonzero = padding, PyTorch's bool mask); got {}", where,
                 m.dtype());
    UNROLL_CHECK(m.shape() == (unbatched ? Shape({S}) : Shape({N, S})), ShapeError,
                 "{}: key_padding_mask must be [N, S]; got {}, expected [{}, {}]", where, m.shape(), N, S);
    ao.key_padding_mask = unbatched ? reshape(m, {1, S}) : m;
  }
  if (o.attn_mask.defined()) {
    const Tensor& m = o.attn_mask;
    const bool ok2 = m.shape() == Shape({L, S}), ok3 = m.shape() == Shape({N * H, L, S});
    UNROLL_CHECK(ok2 || ok3, ShapeError,
                 "{}: attn_mask must be [L, S] or [N * num_heads, L, S]; got {}, expected [{}, {}] or [{}, {}, {}]",
                 where, m.shape(), L, S, N * H, L, S);
    UNROLL_CHECK(
        m.dtype() == Dtype::int64 || m.dtype() == query.dtype(), DtypeError,
        "{}: attn_mask must be int64 (nonzero = may not attend) or the query's dtype (added); got {}, query {}", where,
        m.dtype(), query.dtype());
    Tensor mask = m.dtype() == Dtype::int64 ? allowed_from_forbidden(m) : m.detach();
    ao.attn_mask = ok3 ? reshape(mask, {N, H, L, S}) : mask;
  }
  ao.is_causal = o.is_causal;
  ao.dropout_p = is_training() ? dropout : 0.0;
  ao.generator = generator;
  Tensor weights;
  if (o.need_weights) ao.weights = &weights;

  Tensor heads = scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], ao);              // [N, H, L, d]
  Tensor out = seq_first ? out_proj(reshape(permute(heads, {2, 0, 1, 3}), {L, N, E}))   // [L, N, E]
                         : out_proj(reshape(permute(heads, {0, 2, 1, 3}), {N, L, E}));  // [N, L, E]
  if (unbatched) out = squeeze(out, 0);
  if (o.need_weights) {
    const autograd::NoGradGuard no_grad;
    if (o.average_attn_weights) weights = mean(weights, {1});
    if (unbatched) weights = squeeze(weights, 0);
  }
  return {std::move(out), std::move(weights)};
}

// ------------------------------------------------------------------------------------------------- Transformer

Activation parse_activation(const char* where, const std::string& name) {
  if (name == "relu") return Activation::relu;
  if (name == "gelu") return Activation::gelu;
  detail::throw_error<ValueError>("{}: unknown activation; got '{}', expected relu or gelu", where, name);
}

TransformerEncoderLayer::TransformerEncoderLayer(const TransformerEncoderLayerOptions& o)
    : options(o),
      self_attn(o.d_model, o.nhead, o.dropout, true, o.batch_first, o.dtype),
      linear1(o.d_model, o.dim_feedforward, true, o.dtype),
      dropout(o.dropout),
      linear2(o.dim_feedforward, o.d_model, true, o.dtype),
      norm1({o.d_model}, o.layer_norm_eps, true, o.dtype),
      norm2({o.d_model}, o.layer_norm_eps, true, o.dtype),
      dropout1(o.dropout),
      dropout2(o.dropout) {
  register_module("self_attn", self_attn);
  register_module("linear1", linear1);
  register_module("dropout", dropout);
  register_module("linear2", linear2);
  register_module("norm1", norm1);
  register_module("norm2", norm2);
  register_module("dropout1", dropout1);
  register_module("dropout2", dropout2);
}

Tensor TransformerEncoderLayer::forward(const Tensor& src, const Tensor& src_mask, const Tensor& src_key_padding_mask,
                                        bool is_causal) const {
  auto self_attention_block = [&](const Tensor& x) {
    MultiheadAttentionOptions mo;
    mo.attn_mask = src_mask;
    mo.key_padding_mask = src_key_padding_mask;
    mo.is_causal = is_causal;
    mo.need_weights = false;
    return dropout1(self_attn(x, x, x, mo).output);
  };
  auto feed_forward_block = [&](const Tensor& x) {
    Tensor h = linear1(x);
    h = options.activation == Activation::relu ? relu(h) : gelu(h);
    return dropout2(linear2(dropout(h)));
  };
  Tensor x = src;
  if (options.norm_first) {
    x = x + self_attention_block(norm1(x));
    x = x + feed_forward_block(norm2(x));
  } else {
    x = norm1(x + self_attention_block(x));
    x = norm2(x + feed_forward_block(x));
  }
  return x;
}

TransformerEncoder::TransformerEncoder(const TransformerEncoderLayerOptions& layer, std::int64_t num_layers,
                                       bool final_norm) {
  UNROLL_CHECK(num_layers >= 1, ValueError, "TransformerEncoder: num_layers must be >= 1; got {}", num_layers);
  for (std::int64_t i = 0; i < num_layers; ++i) layers.emplace_back(layer);
  register_module("layers", layers);
  if (final_norm) {
    norm =
        std::make_unique<LayerNorm>(std::vector<std::int64_t>{layer.d_model}, layer.layer_norm_eps, true, layer.dtype);
    register_module("norm", *norm);
  }
}

Tensor TransformerEncoder::forward(const Tensor& src, const Tensor& mask, const Tensor& src_key_padding_mask,
                                   bool is_causal) const {
  Tensor x = src;
  for (std::size_t i = 0; i < layers.size(); ++i) x = layers[i](x, mask, src_key_padding_mask, is_causal);
  return norm ? (*norm)(x) : x;
}

// ------------------------------------------------------------------------------------------ positional encodings

namespace {
// x [N, T, d] or [T, N, d] + table[offset : offset + T] broadcast over the batch.
Tensor add_positions(const char* where, const Tensor& x, const Tensor& table, bool batch_first, std::int64_t offset) {
  UNROLL_CHECK(x.dim() == 3 && x.size(2) == table.size(1), ShapeError, "{}: expected x {} with d_model={}; got {}",
               where, batch_first ? "[N, T, d]" : "[T, N, d]", table.size(1), x.shape());
  const std::int64_t T = x.size(batch_first ? 1 : 0);
  UNROLL_CHECK(offset >= 0 && offset + T <= table.size(0), ValueError,
               "{}: positions {}..{} are past max_len={}; construct it with a larger max_len", where, offset,
               offset + T - 1, table.size(0));
  Tensor rows = narrow(table, 0, offset, T);
  return x + (batch_first ? unsqueeze(rows, 0) : unsqueeze(rows, 1));
}
}  // namespace

SinusoidalPositionalEncoding::SinusoidalPositionalEncoding(std::int64_t d_model, std::int64_t max_len, Dtype dtype) {
  UNROLL_CHECK(d_model > 0 && max_len > 0, ValueError,
               "SinusoidalPositionalEncoding: sizes must be positive; got d_model={} max_len={}", d_model, max_len);
  std::vector<double> v(static_cast<std::size_t>(max_len * d_model));
  for (std::int64_t pos = 0; pos < max_len; ++pos)
    for (std::int64_t i = 0; i < d_model; ++i) {
      const double freq = std::pow(10000.0, -static_cast<double>(i - i % 2) / static_cast<double>(d_model));
      v[static_cast<std::size_t>(pos * d_model + i)] =
          i % 2 == 0 ? std::sin(static_cast<double>(pos) * freq) : std::cos(static_cast<double>(pos) * freq);
    }
  pe = tensor(v, {max_len, d_model}, dtype);
}

Tensor SinusoidalPositionalEncoding::forward(const Tensor& x, bool batch_first, std::int64_t offset) const {
  return add_positions("SinusoidalPositionalEncoding", x, pe.dtype() == x.dtype() ? pe : unroll::to(pe, x.dtype()),
                       batch_first, offset);
}

LearnedPositionalEncoding::LearnedPositionalEncoding(std::int64_t max_len, std::int64_t d_model, Dtype dtype) {
  UNROLL_CHECK(d_model > 0 && max_len > 0, ValueError,
               "LearnedPositionalEncoding: sizes must be positive; got max_len={} d_model={}", max_len, d_model);
  weight = Tensor::empty({max_len, d_model}, dtype);
  register_parameter("weight", weight);
  reset_parameters();
}

void LearnedPositionalEncoding::reset_parameters() { init::normal_(weight, 0.0, 0.02); }

Tensor LearnedPositionalEncoding::forward(const Tensor& x, bool batch_first, std::int64_t offset) const {
  return add_positions("LearnedPositionalEncoding", x, weight, batch_first, offset);
}

// ------------------------------------------------------------------------------------- RNN decoder attention

AdditiveAttention::AdditiveAttention(std::int64_t query_dim, std::int64_t key_dim, std::int64_t hidden_dim, Dtype dtype)
    : query_proj(query_dim, hidden_dim, false, dtype),
      key_proj(key_dim, hidden_dim, true, dtype),
      v(hidden_dim, 1, false, dtype) {
  register_module("query_proj", query_proj);
  register_module("key_proj", key_proj);
  register_module("v", v);
}

Tensor AdditiveAttention::project_keys(const Tensor& keys) const {
  UNROLL_CHECK(keys.dim() == 3 && keys.size(2) == key_proj.weight.size(1), ShapeError,
               "AdditiveAttention: keys must be [N, S, {}]; got {}", key_proj.weight.size(1), keys.shape());
  return key_proj(keys);
}

AttentionResult AdditiveAttention::attend(const Tensor& query, const Tensor& projected_keys, const Tensor& values,
                                          const Tensor& key_padding_mask) const {
  constexpr const char* where = "AdditiveAttention";
  const std::int64_t Hd = v.weight.size(1);
  UNROLL_CHECK(projected_keys.dim() == 3 && projected_keys.size(2) == Hd, ShapeError,
               "{}: projected_keys must be [N, S, {}] (from project_keys); got {}", where, Hd, projected_keys.shape());
  const std::int64_t N = projected_keys.size(0), S = projected_keys.size(1);
  UNROLL_CHECK(query.dim() == 2 && query.size(0) == N && query.size(1) == query_proj.weight.size(1), ShapeError,
               "{}: query must be [N, Dq] = [{}, {}]; got {}", where, N, query_proj.weight.size(1), query.shape());
  Tensor e = tanh(unsqueeze(query_proj(query), 1) + projected_keys);  // [N, S, H]
  return softmax_and_context(where, reshape(v(e), {N, S}), values, key_padding_mask);
}

LuongScore parse_luong_score(const char* where, const std::string& name) {
  if (name == "dot") return LuongScore::dot;
  if (name == "general") return LuongScore::general;
  if (name == "scaled_dot") return LuongScore::scaled_dot;
  detail::throw_error<ValueError>("{}: unknown score; got '{}', expected dot, general or scaled_dot", where, name);
}

MultiplicativeAttention::MultiplicativeAttention(std::int64_t query_dim_, std::int64_t key_dim_, LuongScore score_,
                                                 Dtype dtype)
    : score(score_), query_dim(query_dim_), key_dim(key_dim_) {
  if (score == LuongScore::general) {
    key_proj = std::make_unique<Linear>(key_dim, query_dim, false, dtype);
    register_module("key_proj", *key_proj);
  } else {
    UNROLL_CHECK(query_dim == key_dim, ValueError,
                 "MultiplicativeAttention: dot scores need query_dim == key_dim; got {} and {} (use general)",
                 query_dim, key_dim);
  }
}

Tensor MultiplicativeAttention::project_keys(const Tensor& keys) const {
  UNROLL_CHECK(keys.dim() == 3 && keys.size(2) == key_dim, ShapeError,
               "MultiplicativeAttention: keys must be [N, S, {}]; got {}", key_dim, keys.shape());
  return key_proj ? (*key_proj)(keys) : keys;
}

AttentionResult MultiplicativeAttention::attend(const Tensor& query, const Tensor& projected_keys, const Tensor& values,
                                                const Tensor& key_padding_mask) const {
  constexpr const char* where = "MultiplicativeAttention";
  UNROLL_CHECK(projected_keys.dim() == 3 && projected_keys.size(2) == query_dim, ShapeError,
               "{}: projected_keys must be [N, S, {}] (from project_keys); got {}", where, query_dim,
               projected_keys.shape());
  const std::int64_t N = projected_keys.size(0), S = projected_keys.size(1);
  UNROLL_CHECK(query.dim() == 2 && query.size(0) == N && query.size(1) == query_dim, ShapeError,
               "{}: query must be [N, Dq] = [{}, {}]; got {}", where, N, query_dim, query.shape());
  Tensor s = reshape(matmul(projected_keys, unsqueeze(query, 2)), {N, S});
  if (score == LuongScore::scaled_dot) s = s * (1.0 / std::sqrt(static_cast<double>(key_dim)));
  return softmax_and_context(where, s, values, key_padding_mask);
}

}  // namespace unroll::nn
