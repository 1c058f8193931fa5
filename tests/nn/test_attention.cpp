// Attention layers: MultiheadAttention, TransformerEncoderLayer (post- and pre-norm), additive and
// multiplicative attention against PyTorch (tests/fixtures/attention.json, tools/make_attention_fixtures.py:
// outputs, weights and every gradient after loading PyTorch's state dict), gradients by finite differences
// (float64), parameter names and initialisation, positional encodings, errors.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;

namespace {
constexpr Dtype f64 = Dtype::float64;
Tensor ints(std::vector<std::int64_t> v, const Shape& shape) { return index_tensor(v, shape); }
constexpr double kTol = 1e-11;

Tensor fx_tensor(const nlohmann::json& c, const char* key) {
  return c.at(key).is_null() ? Tensor() : test_support::to_tensor(c.at(key));
}

void load(nn::Module& m, const nlohmann::json& c) {
  StateDict sd;
  for (const auto& [name, t] : c.at("state_dict").items()) sd.insert(name, test_support::to_tensor(t));
  m.load_state_dict(sd);
}

bool close(const Tensor& got, const nlohmann::json& want) {
  const double r = test_support::tolerance_ratio(got, test_support::to_tensor(want), kTol, kTol);
  if (r > 1.0) MESSAGE("tolerance ratio " << r);
  return r <= 1.0;
}

// Every parameter's gradient against the fixture's.
void check_parameter_grads(const nn::Module& m, const nlohmann::json& grads) {
  const StateDict params = m.named_parameters();
  for (const auto& [name, t] : params) {
    CAPTURE(name);
    REQUIRE(grads.contains(name));
    CHECK(close(t.grad(), grads.at(name)));
  }
}
}  // namespace

TEST_SUITE("nn/attention") {
  TEST_CASE("MultiheadAttention: PyTorch's names, shapes and initialisation") {
    manual_seed(3);
    nn::MultiheadAttention mha(16, 4);
    std::vector<std::string> names;
    for (const auto& [name, t] : mha.named_parameters()) names.push_back(name);
    CHECK(names == std::vector<std::string>{"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"});
    CHECK(mha.in_proj_weight.shape() == Shape{48, 16});
    const double xavier = std::sqrt(6.0 / (16 + 48));
    for (double w : mha.in_proj_weight.to_vector()) CHECK(std::abs(w) <= xavier);
    for (double b : mha.in_proj_bias.to_vector()) CHECK(b == 0.0);
    for (double b : mha.out_proj.bias.to_vector()) CHECK(b == 0.0);
    for (double w : mha.out_proj.weight.to_vector()) CHECK(std::abs(w) <= 0.25);
    nn::MultiheadAttention no_bias(8, 2, 0.0, false);
    CHECK(no_bias.named_parameters().size() == 2);
  }

  TEST_CASE("MultiheadAttention: PyTorch reference (self, cross, causal + padded, float mask without bias)") {
    const nlohmann::json fx = test_support::load_fixture("attention.json");
    for (const auto& c : fx.at("mha")) {
      CAPTURE(c.at("name").get<std::string>());
      nn::MultiheadAttention mha(c.at("embed_dim"), c.at("num_heads"), 0.0, c.at("bias").get<bool>(),
                                 c.at("batch_first").get<bool>(), f64);
      load(mha, c);
      const bool self = c.at("self_attention").get<bool>();
      const Tensor query = fx_tensor(c, "query").requires_grad_();
      const Tensor key = self ? query : fx_tensor(c, "key").requires_grad_();
      const Tensor value = self ? query : fx_tensor(c, "value").requires_grad_();
      nn::MultiheadAttentionOptions o;
      o.key_padding_mask = fx_tensor(c, "key_padding_mask");
      o.attn_mask = fx_tensor(c, "attn_mask");
      o.average_attn_weights = c.at("average_attn_weights").get<bool>();
      const auto r = mha(query, key, value, o);
      CHECK(close(r.output, c.at("out")));
      CHECK(close(r.weights, c.at("weights")));
      r.output.backward(test_support::to_tensor(c.at("grad_out")));
      CHECK(close(query.grad(), c.at("grads").at("query")));
      if (!self) {
        CHECK(close(key.grad(), c.at("grads").at("key")));
        CHECK(close(value.grad(), c.at("grads").at("value")));
      }
      check_parameter_grads(mha, c.at("grads"));
    }
  }

  TEST_CASE("MultiheadAttention: is_causal equals the explicit causal mask; unbatched equals a batch of one") {
    manual_seed(4);
    nn::MultiheadAttention mha(8, 2, 0.0, true, true, f64);
    Generator gen(4);
    const Tensor x = randn({2, 5, 8}, f64, gen);
    nn::MultiheadAttentionOptions causal, masked;
    causal.is_causal = true;
    std::vector<std::int64_t> m;
    for (int i = 0; i < 5; ++i)
      for (int j = 0; j < 5; ++j) m.push_back(j > i ? 1 : 0);
    masked.attn_mask = index_tensor(m, {5, 5});
    CHECK(test_support::tolerance_ratio(mha(x, x, x, causal).output, mha(x, x, x, masked).output, 1e-14, 1e-14) <= 1);
    const Tensor x0 = select(x, 0, 0);
    const auto one = mha(x0, x0, x0);
    CHECK(one.output.shape() == Shape{5, 8});
    CHECK(one.weights.shape() == Shape{5, 5});
    CHECK(test_support::tolerance_ratio(one.output, select(mha(x, x, x).output, 0, 0), 1e-14, 1e-14) <= 1);
  }

  TEST_CASE("MultiheadAttention: gradcheck with dropout and a key padding mask (self and cross)") {
    manual_seed(5);
    nn::MultiheadAttention mha(6, 3, 0.2, true, false, f64);
    Generator gen(5);
    const Tensor x = test_support::random_leaf({4, 2, 6}, gen), mem = test_support::random_leaf({3, 2, 6}, gen);
    nn::MultiheadAttentionOptions o;
    o.key_padding_mask = ints({0, 0, 1, 0, 0, 0}, {2, 3});
    o.need_weights = false;
    const auto r = autograd::gradcheck("mha",
                                       [&](const std::vector<Tensor>& in) {
                                         Generator g(7);
                                         mha.generator = &g;
                                         mha.in_proj_weight = in[2];
                                         return mha(in[0], in[1], in[1], o).output + mha(in[0], in[0], in[0]).output;
                                       },
                                       {x, mem, mha.in_proj_weight});
    mha.generator = nullptr;
    CHECK_MESSAGE(r.ok, r.message);
  }

  TEST_CASE("MultiheadAttention: a detached copy of the query is not self-attention (no k, v gradient into x)") {
    manual_seed(8);
    nn::MultiheadAttention mha(4, 2, 0.0, true, true, f64);
    Generator gen(8);
    Tensor x = test_support::random_leaf({1, 3, 4}, gen);
    sum(mha(x, x.detach(), x.detach()).output).backward();
    const Tensor g_detached = tensor(x.grad().to_vector(), x.shape(), f64);
    x.zero_grad();
    const Tensor kv = tensor(x.to_vector(), x.shape(), f64);  // same values, other storage
    sum(mha(x, kv, kv).output).backward();
    CHECK(test_support::tolerance_ratio(g_detached, x.grad(), 1e-15, 1e-15) <= 1.0);
  }

  TEST_CASE("MultiheadAttention: errors") {
    nn::MultiheadAttention mha(8, 2);
    CHECK_THROWS_WITH_AS(nn::MultiheadAttention(10, 3), doctest::Contains("embed_dim must be a positive multiple"),
                         ValueError);
    const Tensor x = zeros({5, 2, 8});
    CHECK_THROWS_WITH_AS(mha(x, zeros({5, 2, 6}), zeros({5, 2, 6})),
                         doctest::Contains("MultiheadAttention: expected query [L, N, E]"), ShapeError);
    CHECK_THROWS_AS(mha(x, zeros({5, 3, 8}), zeros({5, 3, 8})), ShapeError);
    nn::MultiheadAttentionOptions o;
    o.key_padding_mask = zeros({2, 5});
    CHECK_THROWS_AS(mha(x, x, x, o), DtypeError);
    o.key_padding_mask = ints({0, 0, 0, 0}, {2, 2});
    CHECK_THROWS_WITH_AS(mha(x, x, x, o), doctest::Contains("key_padding_mask must be [N, S]"), ShapeError);
    o.key_padding_mask = Tensor();
    o.attn_mask = zeros({4, 5});
    CHECK_THROWS_WITH_AS(mha(x, x, x, o), doctest::Contains("attn_mask must be [L, S] or [N * num_heads, L, S]"),
                         ShapeError);
  }

  TEST_CASE("TransformerEncoderLayer: PyTorch reference (post-norm relu, pre-norm gelu with masks)") {
    const nlohmann::json fx = test_support::load_fixture("attention.json");
    for (const auto& c : fx.at("encoder_layer")) {
      CAPTURE(c.at("name").get<std::string>());
      nn::TransformerEncoderLayerOptions o;
      o.d_model = c.at("d_model"), o.nhead = c.at("nhead"), o.dim_feedforward = c.at("dim_feedforward");
      o.dropout = 0.0;
      o.activation = nn::parse_activation("test", c.at("activation").get<std::string>());
      o.layer_norm_eps = c.at("layer_norm_eps");
      o.batch_first = c.at("batch_first"), o.norm_first = c.at("norm_first"), o.dtype = f64;
      nn::TransformerEncoderLayer layer(o);
      std::vector<std::string> names;
      for (const auto& [name, t] : layer.named_parameters()) names.push_back(name);
      std::vector<std::string> want;
      for (const auto& [name, t] : c.at("state_dict").items()) want.push_back(name);
      std::sort(names.begin(), names.end());
      std::sort(want.begin(), want.end());
      CHECK(names == want);
      load(layer, c);
      const Tensor src = fx_tensor(c, "src").requires_grad_();
      const Tensor out = layer(src, fx_tensor(c, "src_mask"), fx_tensor(c, "src_key_padding_mask"));
      CHECK(close(out, c.at("out")));
      out.backward(test_support::to_tensor(c.at("grad_out")));
      CHECK(close(src.grad(), c.at("grads").at("src")));
      check_parameter_grads(layer, c.at("grads"));
    }
  }

  TEST_CASE("TransformerEncoder: layers.N names, final norm, gradcheck") {
    nn::TransformerEncoderLayerOptions o;
    o.d_model = 4, o.nhead = 2, o.dim_feedforward = 6, o.dropout = 0.0, o.batch_first = true, o.dtype = f64;
    nn::TransformerEncoder enc(o, 2, true);
    const StateDict sd = enc.named_parameters();
    CHECK(sd.contains("layers.0.self_attn.in_proj_weight"));
    CHECK(sd.contains("layers.1.linear2.bias"));
    CHECK(sd.contains("norm.weight"));
    CHECK(enc.layers.size() == 2);
    Generator gen(6);
    const Tensor x = test_support::random_leaf({2, 3, 4}, gen);
    const auto r =
        autograd::gradcheck("encoder", [&](const std::vector<Tensor>& in) { return enc(in[0], {}, {}, true); }, {x});
    CHECK_MESSAGE(r.ok, r.message);
  }

  TEST_CASE("positional encodings: the sinusoid table, offsets, the learned table's gradient, errors") {
    nn::SinusoidalPositionalEncoding pe(6, 10, f64);
    const auto t = pe.pe.to_vector();
    for (int pos : {0, 3, 9})
      for (int i = 0; i < 6; ++i) {
        const double angle = pos / std::pow(10000.0, (i - i % 2) / 6.0);
        CHECK(t[static_cast<std::size_t>(pos * 6 + i)] == doctest::Approx(i % 2 ? std::cos(angle) : std::sin(angle)));
      }
    CHECK(pe.named_parameters().empty());
    const Tensor x = zeros({2, 3, 6}, f64);
    const auto y = pe(x, true, 4).to_vector();
    CHECK(y[0] == doctest::Approx(t[4 * 6]));
    CHECK(y[18] == doctest::Approx(t[4 * 6]));  // second batch row, same position
    CHECK(pe(zeros({3, 2, 6}, f64), false).to_vector()[6] == doctest::Approx(t[0]));
    CHECK_THROWS_WITH_AS(pe(x, true, 8), doctest::Contains("past max_len=10"), ValueError);
    CHECK_THROWS_AS(pe(zeros({2, 3, 5}, f64)), ShapeError);
    nn::LearnedPositionalEncoding learned(10, 6, f64);
    sum(learned(x, true, 2)).backward();
    const auto g = learned.weight.grad().to_vector();
    CHECK(g[0] == 0.0);
    CHECK(g[2 * 6] == 2.0);  // two batch rows at position 2
    CHECK(g[5 * 6] == 0.0);
  }

  TEST_CASE("additive and multiplicative attention: PyTorch reference") {
    const nlohmann::json fx = test_support::load_fixture("attention.json");
    for (const char* kind : {"additive", "multiplicative"}) {
      for (const auto& c : fx.at(kind)) {
        CAPTURE(c.at("name").get<std::string>());
        std::unique_ptr<nn::AdditiveAttention> add;
        std::unique_ptr<nn::MultiplicativeAttention> mul;
        nn::Module* m = nullptr;
        if (std::string(kind) == "additive") {
          add = std::make_unique<nn::AdditiveAttention>(c.at("query_dim"), c.at("key_dim"), c.at("hidden"), f64);
          m = add.get();
        } else {
          mul = std::make_unique<nn::MultiplicativeAttention>(
              c.at("query_dim"), c.at("key_dim"), nn::parse_luong_score("test", c.at("score").get<std::string>()), f64);
          m = mul.get();
        }
        load(*m, c);
        const Tensor query = fx_tensor(c, "query").requires_grad_();
        const Tensor keys = fx_tensor(c, "keys").requires_grad_();
        const bool same = c.at("values_are_keys").get<bool>();
        const Tensor values = same ? keys : fx_tensor(c, "values").requires_grad_();
        const Tensor mask = fx_tensor(c, "key_padding_mask");
        const nn::AttentionResult r =
            add ? add->forward(query, keys, values, mask) : mul->forward(query, keys, values, mask);
        CHECK(close(r.context, c.at("context")));
        CHECK(close(r.weights, c.at("weights")));
        r.context.backward(test_support::to_tensor(c.at("grad_context")));
        CHECK(close(query.grad(), c.at("grads").at("query")));
        CHECK(close(keys.grad(), c.at("grads").at("keys")));
        if (!same) CHECK(close(values.grad(), c.at("grads").at("values")));
        check_parameter_grads(*m, c.at("grads"));
      }
    }
  }

  TEST_CASE("additive and multiplicative attention: errors") {
    nn::AdditiveAttention add(4, 6, 5);
    const Tensor keys = zeros({2, 3, 6}), q = zeros({2, 4});
    CHECK_THROWS_WITH_AS(add(q, zeros({2, 3, 5}), keys), doctest::Contains("AdditiveAttention: keys must be [N, S, 6]"),
                         ShapeError);
    CHECK_THROWS_AS(add(zeros({3, 4}), keys, keys), ShapeError);
    CHECK_THROWS_AS(add(q, keys, zeros({2, 4, 6})), ShapeError);
    CHECK_THROWS_WITH_AS(add(q, keys, keys, ints({0, 0, 0, 1, 1, 1}, {2, 3})),
                         doctest::Contains("hides every key of batch row 1"), ValueError);
    CHECK_THROWS_WITH_AS(nn::MultiplicativeAttention(4, 6, nn::LuongScore::dot),
                         doctest::Contains("dot scores need query_dim == key_dim"), ValueError);
    CHECK_THROWS_AS(nn::parse_luong_score("x", "concat"), ValueError);
    CHECK_THROWS_AS(nn::parse_activation("x", "tanh"), ValueError);
  }
}
