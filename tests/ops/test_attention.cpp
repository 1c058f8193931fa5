// scaled_dot_product_attention: gradients by finite differences (float64) with every kind of mask and with
// dropout, PyTorch reference values (tests/fixtures/attention.json, tools/make_attention_fixtures.py), the
// fully masked row, float32 against float64, and the error texts.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;

namespace {
constexpr Dtype f64 = Dtype::float64;
Tensor ints(std::vector<std::int64_t> v, const Shape& shape) { return index_tensor(v, shape); }

// The definition, op by op: softmax(q k^T * scale + mask) v.
Tensor reference_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& additive, double scale) {
  Tensor s =
      matmul(reshape(q, {-1, q.size(-2), q.size(-1)}), transpose(reshape(k, {-1, k.size(-2), k.size(-1)}), 1, 2));
  s = reshape(s * scale, [&] {
    auto d = q.shape().vec();
    d.back() = k.size(-2);
    return d;
  }());
  if (additive.defined()) s = s + additive;
  Tensor w = softmax(s, -1);
  Tensor o = matmul(reshape(w, {-1, q.size(-2), k.size(-2)}), reshape(v, {-1, v.size(-2), v.size(-1)}));
  auto d = q.shape().vec();
  d.back() = v.size(-1);
  return reshape(o, d);
}
}  // namespace

TEST_SUITE("ops/attention") {
  TEST_CASE("gradcheck: no mask, int64 mask, float mask, key padding, causal, custom scale") {
    Generator gen(11);
    const Tensor q = test_support::random_leaf({2, 3, 4, 5}, gen), k = test_support::random_leaf({2, 3, 6, 5}, gen),
                 v = test_support::random_leaf({2, 3, 6, 3}, gen);
    const Tensor allow = ints({1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1}, {4, 6});
    const Tensor additive = randn({2, 1, 4, 6}, f64, gen);
    const Tensor padding = ints({0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0}, {2, 6});
    std::vector<std::pair<const char*, AttentionOptions>> cases(6);
    cases[0].first = "plain";
    cases[1].first = "int64 mask", cases[1].second.attn_mask = allow;
    cases[2].first = "float mask", cases[2].second.attn_mask = additive;
    cases[3].first = "key padding", cases[3].second.key_padding_mask = padding;
    cases[4].first = "causal", cases[4].second.is_causal = true;
    cases[5].first = "scale + all", cases[5].second.scale = 0.7, cases[5].second.attn_mask = additive,
    cases[5].second.key_padding_mask = padding, cases[5].second.is_causal = true;
    for (const auto& [name, opt] : cases) {
      CAPTURE(name);
      const auto r = autograd::gradcheck(
          name, [&](const std::vector<Tensor>& in) { return scaled_dot_product_attention(in[0], in[1], in[2], opt); },
          {q, k, v});
      CHECK_MESSAGE(r.ok, r.message);
    }
  }

  TEST_CASE("gradcheck with dropout (the same mask drawn for every evaluation)") {
    Generator gen(12);
    const Tensor q = test_support::random_leaf({3, 4, 5}, gen), k = test_support::random_leaf({3, 6, 5}, gen),
                 v = test_support::random_leaf({3, 6, 2}, gen);
    const auto r = autograd::gradcheck("dropout",
                                       [&](const std::vector<Tensor>& in) {
                                         Generator g(99);
                                         AttentionOptions o;
                                         o.dropout_p = 0.3, o.generator = &g;
                                         return scaled_dot_product_attention(in[0], in[1], in[2], o);
                                       },
                                       {q, k, v});
    CHECK_MESSAGE(r.ok, r.message);
  }

  TEST_CASE("matches the op-by-op definition; weights are the softmax; float32 agrees with float64") {
    Generator gen(13);
    const Tensor q = randn({2, 2, 7, 8}, f64, gen), k = randn({2, 2, 9, 8}, f64, gen),
                 v = randn({2, 2, 9, 4}, f64, gen);
    const Tensor additive = randn({7, 9}, f64, gen);
    AttentionOptions o;
    o.attn_mask = additive;
    Tensor w;
    o.weights = &w;
    const Tensor out = scaled_dot_product_attention(q, k, v, o);
    const Tensor ref = reference_attention(q, k, v, additive, 1 / std::sqrt(8.0));
    CHECK(test_support::tolerance_ratio(out, ref, 1e-13, 1e-12) <= 1.0);
    CHECK(w.shape() == Shape{2, 2, 7, 9});
    for (double s : sum(w, {-1}).to_vector()) CHECK(s == doctest::Approx(1.0).epsilon(1e-14));
    AttentionOptions o32;
    o32.attn_mask = to(additive, Dtype::float32);
    const Tensor out32 =
        scaled_dot_product_attention(to(q, Dtype::float32), to(k, Dtype::float32), to(v, Dtype::float32), o32);
    CHECK(test_support::tolerance_ratio(to(out32, f64), ref, 1e-5, 1e-5) <= 1.0);
  }

  TEST_CASE("a query whose keys are all masked gets zeros, not nan, and zero gradients") {
    Generator gen(14);
    const Tensor q = test_support::random_leaf({1, 2, 3}, gen), k = test_support::random_leaf({1, 2, 3}, gen),
                 v = test_support::random_leaf({1, 2, 3}, gen);
    AttentionOptions o;
    o.attn_mask = ints({0, 0, 1, 1}, {2, 2});  // query 0 may attend nothing
    const Tensor out = scaled_dot_product_attention(q, k, v, o);
    const auto y = out.to_vector();
    for (int j = 0; j < 3; ++j) CHECK(y[static_cast<std::size_t>(j)] == 0.0);
    for (int j = 3; j < 6; ++j) CHECK(std::isfinite(y[static_cast<std::size_t>(j)]));
    sum(out).backward();
    const auto gq = q.grad().to_vector();
    for (int j = 0; j < 3; ++j) CHECK(gq[static_cast<std::size_t>(j)] == 0.0);
    for (double g : k.grad().to_vector()) CHECK(std::isfinite(g));
  }

  TEST_CASE("a nan score gives a nan row (a diverged input is not hidden as a masked one)") {
    const Tensor q = tensor({NAN, 1.0, 0.5, 0.5}, {2, 2}, f64), k = tensor({1.0, 0.0, 0.0, 1.0}, {2, 2}, f64);
    const auto y = scaled_dot_product_attention(q, k, k).to_vector();
    CHECK(std::isnan(y[0]));
    CHECK(std::isnan(y[1]));
    CHECK(std::isfinite(y[2]));
    CHECK(std::isfinite(y[3]));
  }

  TEST_CASE("dropout: p = 0 is the plain op, p = 1 gives zeros, the mean is kept") {
    Generator gen(15);
    const Tensor q = randn({4, 16, 8}, f64, gen), k = randn({4, 16, 8}, f64, gen), v = randn({4, 16, 8}, f64, gen);
    const Tensor plain = scaled_dot_product_attention(q, k, v);
    AttentionOptions o;
    Generator g(1);
    o.generator = &g;
    o.dropout_p = 1;
    for (double x : scaled_dot_product_attention(q, k, v, o).to_vector()) CHECK(x == 0.0);
    // Averaged over many masks, dropout's output is the plain output (inverted dropout keeps the expectation).
    o.dropout_p = 0.5;
    Tensor acc = zeros(plain.shape(), f64);
    constexpr int kDraws = 400;
    for (int i = 0; i < kDraws; ++i) acc = acc + scaled_dot_product_attention(q, k, v, o);
    const Tensor mean_out = acc * (1.0 / kDraws);
    CHECK(test_support::tolerance_ratio(mean_out, plain, 0.15, 0.0) <= 1.0);
  }

  TEST_CASE("PyTorch reference (tools/make_attention_fixtures.py): outputs, weights, gradients") {
    const nlohmann::json fx = test_support::load_fixture("attention.json");
    for (const auto& c : fx.at("sdpa")) {
      CAPTURE(c.at("name").get<std::string>());
      const Tensor q = test_support::to_tensor(c.at("q")).requires_grad_();
      const Tensor k = test_support::to_tensor(c.at("k")).requires_grad_();
      const Tensor v = test_support::to_tensor(c.at("v")).requires_grad_();
      AttentionOptions o;
      if (!c.at("attn_mask").is_null()) o.attn_mask = test_support::to_tensor(c.at("attn_mask"));
      o.is_causal = c.at("is_causal").get<bool>();
      if (!c.at("scale").is_null()) o.scale = c.at("scale").get<double>();
      Tensor w;
      o.weights = &w;
      const Tensor out = scaled_dot_product_attention(q, k, v, o);
      CHECK(test_support::tolerance_ratio(out, test_support::to_tensor(c.at("out")), 1e-12, 1e-12) <= 1.0);
      CHECK(test_support::tolerance_ratio(w, test_support::to_tensor(c.at("weights")), 1e-12, 1e-12) <= 1.0);
      out.backward(test_support::to_tensor(c.at("grad_out")));
      for (const auto& [name, t] : {std::pair{"q", q}, std::pair{"k", k}, std::pair{"v", v}}) {
        CAPTURE(name);
        CHECK(test_support::tolerance_ratio(t.grad(), test_support::to_tensor(c.at("grads").at(name)), 1e-12, 1e-12) <=
              1.0);
      }
    }
  }

  TEST_CASE("errors name the op and the shapes") {
    const Tensor q = zeros({2, 3, 4}, f64), k = zeros({2, 5, 4}, f64), v = zeros({2, 5, 6}, f64);
    CHECK_THROWS_WITH_AS(scaled_dot_product_attention(q, zeros({2, 5, 3}, f64), v),
                         doctest::Contains("scaled_dot_product_attention: expected q [..., Tq, E]"), ShapeError);
    CHECK_THROWS_AS(scaled_dot_product_attention(q, k, zeros({2, 4, 6}, f64)), ShapeError);
    CHECK_THROWS_AS(scaled_dot_product_attention(q, zeros({3, 5, 4}, f64), zeros({3, 5, 6}, f64)), ShapeError);
    CHECK_THROWS_AS(scaled_dot_product_attention(zeros({3, 4}, f64), k, v), ShapeError);
    CHECK_THROWS_AS(scaled_dot_product_attention(q, zeros({2, 5, 4}), v), DtypeError);
    AttentionOptions o;
    o.attn_mask = zeros({3, 4}, f64);
    CHECK_THROWS_WITH_AS(
        scaled_dot_product_attention(q, k, v, o),
        doctest::Contains("attn_mask does not broadcast to the scores; got attn_mask=[3, 4], scores [2, 3, 5]"),
        ShapeError);
    o.attn_mask = zeros({3, 5});  // float32 for float64 q
    CHECK_THROWS_AS(scaled_dot_product_attention(q, k, v, o), DtypeError);
    o.attn_mask = Tensor();
    o.key_padding_mask = ints({0, 0, 0, 0, 1}, {1, 5});
    CHECK_THROWS_WITH_AS(scaled_dot_product_attention(q, k, v, o),
                         doctest::Contains("key_padding_mask must be [N, Tk]"), ShapeError);
    o.key_padding_mask = zeros({2, 5}, f64);
    CHECK_THROWS_AS(scaled_dot_product_attention(q, k, v, o), DtypeError);
    o.key_padding_mask = Tensor();
    o.dropout_p = 1.5;
    CHECK_THROWS_AS(scaled_dot_product_attention(q, k, v, o), ValueError);
  }
}
