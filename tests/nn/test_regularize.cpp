// tests/nn/test_regularize.cpp — locked and embedding dropout, zoneout (also around a cell in run_cell),
// AR/TAR: the masks' statistics, identity or expectation outside training, gradients through fixed masks
// (gradcheck), determinism for a seed and shard count, and the errors for bad options.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;

namespace {
constexpr Dtype f64 = Dtype::float64;
using Pair = std::pair<Tensor, Tensor>;

// The fraction of elements of t equal to zero.
double zero_fraction(const Tensor& t) {
  const std::vector<double> v = t.to_vector();
  double zeros = 0;
  for (double e : v) zeros += e == 0 ? 1 : 0;
  return zeros / static_cast<double>(v.size());
}

// Fixed, non-uniform loss weights [T, B, F].
Tensor cos_weights_like(std::int64_t T, std::int64_t B, std::int64_t F) {
  Tensor w = Tensor::empty({T, B, F}, f64);
  double* q = w.data<double>();
  for (std::int64_t i = 0; i < w.numel(); ++i) q[i] = std::cos(0.3 * static_cast<double>(i));
  return w;
}

struct Tanh {  // a minimal cell for run_cell: h' = tanh(x + h)
  Tensor operator()(const Tensor& x, const Tensor& h) const { return tanh(x + h); }
};
struct PairCell {  // (h, c) state
  std::pair<Tensor, Tensor> operator()(const Tensor& x, const std::pair<Tensor, Tensor>& s) const {
    const Tensor c = 0.5 * s.second + tanh(x);
    return {tanh(c + s.first), c};
  }
};
}  // namespace

TEST_SUITE("nn/regularize") {
  TEST_CASE("locked dropout: one mask per row and feature, the same at every step; identity outside training") {
    Generator gen(1);
    const std::int64_t T = 6, B = 64, F = 256;
    const Tensor x = add(rand({T, B, F}, f64, gen), 0.5);  // no zeros of its own
    const double p = 0.3;
    const Tensor y = nn::locked_dropout(x, p, true, gen);
    const Tensor ratio = div(y, x);
    for (std::int64_t t = 1; t < T; ++t) CHECK(test_support::tolerance_ratio(ratio[t], ratio[0], 1e-12, 1e-12) <= 1.0);
    CHECK(std::abs(zero_fraction(ratio[0]) - p) < 0.02);  // 16,384 draws: 5 standard deviations
    int off_values = 0;  // neither dropped nor scaled by 1 / (1 - p)
    for (double r : ratio.to_vector()) off_values += r == 0 || std::abs(r - 1 / (1 - p)) < 1e-12 ? 0 : 1;
    CHECK(off_values == 0);
    CHECK(nn::locked_dropout(x, p, false, gen).raw() == x.raw());
    CHECK(nn::locked_dropout(x, 0, true, gen).raw() == x.raw());
    nn::LockedDropout module(p);
    module.eval();
    CHECK(module(x).raw() == x.raw());
  }

  TEST_CASE("embedding dropout: whole words dropped, the rest scaled; the dropped rows get no gradient") {
    Generator gen(2);
    nn::Embedding embed(500, 8, std::nullopt, f64);
    std::vector<double> ids;
    for (int i = 0; i < 2000; ++i) ids.push_back(static_cast<double>(i % 500));  // every word 4 times
    const Tensor idx = tensor(ids, {50, 40}, Dtype::int64);
    const double p = 0.25;
    const Tensor y = nn::embedding_dropout(embed, idx, p, true, gen);
    const Tensor plain = embed(idx);
    // Per word: all its occurrences dropped, or all kept and scaled.
    const Tensor flat_y = reshape(y, {2000, 8}), flat_plain = reshape(plain, {2000, 8});
    int dropped = 0;
    for (std::int64_t i = 0; i < 500; ++i) {
      const bool gone = zero_fraction(flat_y[i]) == 1.0;
      dropped += gone ? 1 : 0;
      for (std::int64_t r = i; r < 2000; r += 500) {
        const Tensor want = gone ? zeros({8}, f64) : mul(flat_plain[r], 1 / (1 - p));
        CHECK(test_support::tolerance_ratio(flat_y[r], want, 1e-15, 1e-15) <= 1.0);
      }
    }
    CHECK(std::abs(dropped / 500.0 - p) < 0.1);  // 500 draws: about 5 standard deviations
    embed.zero_grad();
    Generator again(2);
    sum(nn::embedding_dropout(embed, idx, p, true, again)).backward();
    const Tensor g = embed.weight.grad();
    for (std::int64_t i = 0; i < 500; ++i) {
      const bool gone = zero_fraction(flat_y[i]) == 1.0;  // the same mask: the same generator state
      CHECK(test_support::tolerance_ratio(g[i], gone ? zeros({8}, f64) : full({8}, 4 / (1 - p), f64), 1e-12, 1e-12) <=
            1.0);
    }
    CHECK(nn::embedding_dropout(embed, idx, p, false, gen).to_vector() == plain.to_vector());
  }

  TEST_CASE("zoneout: each unit keeps its old value with probability p; the expectation outside training") {
    Generator gen(3);
    const Tensor prev = add(rand({64, 256}, f64, gen), 1.0), next = sub(rand({64, 256}, f64, gen), 1.0);
    const double p = 0.15;
    const Tensor z = nn::zoneout(prev, next, p, true, gen);
    const std::vector<double> zv = z.to_vector(), pv = prev.to_vector(), nv = next.to_vector();
    double kept = 0;
    int neither = 0;  // each unit is exactly its old or its new value
    for (std::size_t i = 0; i < zv.size(); ++i) {
      neither += zv[i] == pv[i] || zv[i] == nv[i] ? 0 : 1;
      kept += zv[i] == pv[i] ? 1 : 0;
    }
    CHECK(neither == 0);
    CHECK(std::abs(kept / static_cast<double>(zv.size()) - p) < 0.02);
    const Tensor expected = add(mul(prev, p), mul(next, 1 - p));
    CHECK(test_support::tolerance_ratio(nn::zoneout(prev, next, p, false, gen), expected, 1e-15, 1e-15) <= 1.0);
    CHECK(nn::zoneout(prev, next, 0, true, gen).raw() == next.raw());
  }

  TEST_CASE("zoneout around any cell in run_cell: per state tensor, the expectation in eval") {
    Generator gen(4);
    const Tensor x = randn({5, 3, 4}, f64, gen);
    const std::pair<Tensor, Tensor> s0{randn({3, 4}, f64, gen), randn({3, 4}, f64, gen)};
    const PairCell cell;
    // Eval: each step is the expectation, written out by hand.
    auto step = nn::with_zoneout(cell, {0.2, 0.6}, false);
    const auto r = nn::run_cell(x, s0, step);
    std::pair<Tensor, Tensor> s = s0;
    for (std::int64_t t = 0; t < 5; ++t) {
      const auto n = cell(x[t], s);
      s = {add(mul(s.first, 0.2), mul(n.first, 0.8)), add(mul(s.second, 0.6), mul(n.second, 0.4))};
    }
    CHECK(test_support::tolerance_ratio(r.state.first, s.first, 1e-14, 1e-14) <= 1.0);
    CHECK(test_support::tolerance_ratio(r.state.second, s.second, 1e-14, 1e-14) <= 1.0);
    // Training with p = 0 is the cell itself.
    const auto plain = nn::run_cell(x, s0, cell);
    const auto none = nn::run_cell(x, s0, nn::with_zoneout(cell, {0.0}, true, &gen));
    CHECK(none.output.to_vector() == plain.output.to_vector());
    CHECK_THROWS_WITH_AS(nn::run_cell(x, s0, nn::with_zoneout(cell, {0.1, 0.1, 0.1}, true)).output,
                         "run_cell: step t=0 of 5: zoneout: one probability per state tensor or one for all; got 3 "
                         "probabilities for 2 state tensors",
                         ValueError);
  }

  TEST_CASE("gradients through fixed masks (gradcheck): locked dropout, embedding dropout, zoneout, AR, TAR") {
    Generator data(5);
    const Tensor x = randn({4, 3, 5}, f64, data).requires_grad_();
    auto r1 = autograd::gradcheck(
        "locked_dropout",
        [](const std::vector<Tensor>& in) {
          Generator g(11);  // the same mask at every evaluation
          return nn::locked_dropout(in[0], 0.4, true, g);
        },
        {x});
    CHECK_MESSAGE(r1.ok, r1.message);
    nn::Embedding embed(7, 3, std::nullopt, f64);
    const Tensor idx = tensor({1, 3, 3, 6, 0, 1}, {2, 3}, Dtype::int64);
    auto r2 = autograd::gradcheck(
        "embedding_dropout",
        [&](const std::vector<Tensor>&) {
          Generator g(12);
          return nn::embedding_dropout(embed, idx, 0.5, true, g);
        },
        {embed.weight});
    CHECK_MESSAGE(r2.ok, r2.message);
    const Tensor prev = randn({3, 5}, f64, data).requires_grad_(), next = randn({3, 5}, f64, data).requires_grad_();
    for (const bool training : {true, false}) {
      auto r3 = autograd::gradcheck(
          "zoneout",
          [&](const std::vector<Tensor>& in) {
            Generator g(13);
            return nn::zoneout(in[0], in[1], 0.3, training, g);
          },
          {prev, next});
      CHECK_MESSAGE(r3.ok, r3.message);
    }
    auto r4 = autograd::gradcheck(
        "AR + TAR",
        [](const std::vector<Tensor>& in) {
          return add(nn::activation_regularization(in[0], 2.0), nn::temporal_activation_regularization(in[0], 1.5));
        },
        {x});
    CHECK_MESSAGE(r4.ok, r4.message);
  }

  TEST_CASE("AR and TAR: AWD-LSTM's values") {
    const Tensor h = tensor({1, 2, 3, 4, 0, -2}, {3, 1, 2}, f64);  // T 3, B 1, F 2
    // AR: alpha · mean(h²) = 2 · (1 + 4 + 9 + 16 + 0 + 4) / 6
    CHECK(nn::activation_regularization(h, 2.0).item() == doctest::Approx(2.0 * 34 / 6).epsilon(1e-15));
    // TAR: beta · mean of the step differences squared: (2, 2), (-3, -6) -> (4 + 4 + 9 + 36) / 4
    CHECK(nn::temporal_activation_regularization(h, 0.5).item() == doctest::Approx(0.5 * 53 / 4).epsilon(1e-15));
  }

  TEST_CASE("deterministic for a seed and shard count") {
    const std::int64_t T = 5, B = 8, F = 6;
    const Tensor x = randn({T, B, F}, f64);
    nn::Embedding embed(20, F, std::nullopt, f64);
    const Tensor idx = randint({T, B}, 0, 20);
    auto grads = [&] {
      embed.zero_grad();
      autograd::sharded_backward(
          B,
          [&](const autograd::Shard& s) {
            const Tensor e = nn::embedding_dropout(embed, narrow(idx, 1, s.begin, s.size()), 0.3, true);
            const Tensor h = nn::locked_dropout(add(e, narrow(x, 1, s.begin, s.size())), 0.3, true);
            const auto r = nn::run_cell(h, zeros({s.size(), F}, f64), nn::with_zoneout(Tanh{}, {0.2}, true));
            return add(sum(r.output), nn::temporal_activation_regularization(r.output, 1.0));
          },
          {.shards = 2, .seed = 77, .sum_loss = true});
      return embed.weight.grad().to_vector();
    };
    const auto a = grads(), b = grads();
    CHECK(a == b);
    double nonzero = 0;
    for (double v : a) nonzero += v != 0 ? 1 : 0;
    CHECK(nonzero > 0);
  }

  TEST_CASE("weight drop in the built-in layers: the fused steps run the masked weight_hh, its gradient reaches the raw one") {
    const std::int64_t T = 5, B = 3, I = 4, H = 6;
    const double p = 0.4;
    const Tensor x = randn({T, B, I}, f64);
    for (const bool bidirectional : {false, true}) {
      CAPTURE(bidirectional);
      nn::RecurrentOptions o{.input_size = I, .hidden_size = H, .bidirectional = bidirectional, .dtype = f64};
      nn::LSTM plain(o);
      o.weight_drop = p;
      nn::LSTM dropped(o);
      dropped.load_state_dict(plain.state_dict());
      // The masks the layer draws, in its order (layer 0 forward, then reverse), from the same seed.
      manual_seed(21);
      std::vector<Tensor> masks;
      for (int d = 0; d < (bidirectional ? 2 : 1); ++d) masks.push_back(nn::dropout_mask({4 * H, H}, p, f64));
      for (std::size_t d = 0; d < masks.size(); ++d) {  // plain runs on the masked weights
        double* wp = plain.weights(0, d == 1).weight_hh.data<double>();
        const std::vector<double> m = masks[d].to_vector();
        for (std::size_t e = 0; e < m.size(); ++e) wp[e] *= m[e];
      }
      const Tensor w = cos_weights_like(T, B, (bidirectional ? 2 : 1) * H);
      sum(plain(x).output * w).backward();
      manual_seed(21);
      sum(dropped(x).output * w).backward();
      for (std::size_t d = 0; d < masks.size(); ++d) {
        const nn::RecurrentWeights &a = dropped.weights(0, d == 1), &b = plain.weights(0, d == 1);
        CHECK(test_support::tolerance_ratio(a.weight_ih.grad(), b.weight_ih.grad(), 1e-12, 1e-12) <= 1.0);
        // d loss / d raw weight = d loss / d masked weight * mask
        CHECK(test_support::tolerance_ratio(a.weight_hh.grad(), b.weight_hh.grad() * masks[d], 1e-12, 1e-12) <= 1.0);
      }
      // Eval: no drop.
      dropped.eval();
      o.weight_drop = 0;
      nn::LSTM none(o);
      none.load_state_dict(dropped.state_dict());
      CHECK(dropped(x).output.to_vector() == none(x).output.to_vector());
    }
    CHECK_THROWS_WITH_AS(nn::GRU({.input_size = 2, .hidden_size = 3, .weight_drop = 1.0}),
                         "GRU: weight_drop out of range; got 1, expected 0 <= weight_drop < 1", ValueError);
  }

  TEST_CASE("zoneout in the built-in layers equals with_zoneout around the same cell in run_cell") {
    const std::int64_t T = 6, B = 3, I = 2, H = 4;
    struct CellOps : nn::RecurrentWeights {  // PyTorch's LSTM cell from primitives, the layer's parameters
      Pair operator()(const Tensor& x, const Pair& s) const {
        auto g = chunk(linear(x, weight_ih, bias_ih) + linear(s.first, weight_hh, bias_hh), 4, 1);
        Tensor c = sigmoid(g[1]) * s.second + sigmoid(g[0]) * tanh(g[2]);
        return {sigmoid(g[3]) * tanh(c), c};
      }
    };
    default_generator().manual_seed(31);
    nn::LSTM lstm({.input_size = I, .hidden_size = H, .zoneout_h = 0.3, .zoneout_c = 0.2, .dtype = f64});
    CellOps cell;
    static_cast<nn::RecurrentWeights&>(cell) = lstm.weights(0);
    const Tensor x = randn({T, B, I}, f64), w = cos_weights_like(T, B, H);
    for (bool training : {true, false}) {
      CAPTURE(training);
      lstm.train(training);
      default_generator().manual_seed(5);
      Tensor y = lstm(x).output;
      sum(y * w).backward();
      const std::vector<double> grad = lstm.weights(0).weight_hh.grad().to_vector();
      lstm.zero_grad();
      default_generator().manual_seed(5);
      auto r = nn::run_cell(x, Pair{zeros({B, H}, f64), zeros({B, H}, f64)},
                            nn::with_zoneout(cell, {0.3, 0.2}, training));
      sum(r.output * w).backward();
      CHECK(test_support::tolerance_ratio(y, r.output, 1e-14, 1e-14) <= 1.0);
      CHECK(test_support::tolerance_ratio(tensor(grad, {4 * H, H}, f64), lstm.weights(0).weight_hh.grad(), 1e-13,
                                          1e-13) <= 1.0);
      lstm.zero_grad();
    }
    CHECK_THROWS_WITH_AS(nn::GRU({.input_size = 1, .hidden_size = 1, .zoneout_c = 0.1}),
                         "GRU: zoneout_c is for the LSTM's cell state; got zoneout_c=0.1, expected 0", ValueError);
    CHECK_THROWS_WITH_AS(nn::LSTM({.input_size = 1, .hidden_size = 1, .zoneout_h = 1.0}),
                         "LSTM: zoneout out of range; got zoneout_h=1 zoneout_c=0, expected 0 <= p < 1", ValueError);
  }

  TEST_CASE("bad options are one-line errors naming the regulariser") {
    const Tensor x = randn({3, 2, 4}, f64);
    CHECK_THROWS_WITH_AS(nn::locked_dropout(x, 1.0, true),
                         "locked_dropout: probability out of range; got p=1, expected 0 <= p < 1", ValueError);
    CHECK_THROWS_WITH_AS(nn::locked_dropout(x[0][0], 0.5, true),
                         "locked_dropout: input must be [T, B, ...]; got x=[4]", ShapeError);
    CHECK_THROWS_WITH_AS(nn::LockedDropout(-0.1), "LockedDropout: probability out of range; got p=-0.1, expected 0 <= p < 1",
                         ValueError);
    nn::Embedding embed(5, 2);
    CHECK_THROWS_WITH_AS(nn::embedding_dropout(embed, tensor({1}, {1}, Dtype::int64), 1.5, true),
                         "embedding_dropout: probability out of range; got p=1.5, expected 0 <= p < 1", ValueError);
    CHECK_THROWS_WITH_AS(nn::zoneout(x[0], x[1][0], 0.1, true),
                         "zoneout: the previous and the next state differ in shape; got [2, 4] and [4]", ShapeError);
    CHECK_THROWS_WITH_AS(nn::with_zoneout(Tanh{}, {}, true),
                         "zoneout: no probability; got none, expected one per state tensor or one for all", ValueError);
    CHECK_THROWS_WITH_AS(nn::with_zoneout(Tanh{}, {1.0}, true),
                         "zoneout: probability out of range; got p=1, expected 0 <= p < 1", ValueError);
    CHECK_THROWS_WITH_AS(nn::activation_regularization(x, -1),
                         "activation_regularization: alpha out of range; got alpha=-1, expected a finite value >= 0",
                         ValueError);
    CHECK_THROWS_WITH_AS(nn::temporal_activation_regularization(narrow(x, 0, 0, 1), 1),
                         "temporal_activation_regularization: output must be [T, ...] with T >= 2; got [1, 2, 4]",
                         ShapeError);
  }
}
