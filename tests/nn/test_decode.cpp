// Decoding: greedy and beam search against exhaustive search on a toy decoder whose next-token distribution
// depends on the previous token and the row (a Markov chain per row, so the best sequence can be enumerated),
// state reordering across beams, length normalisation, scheduled sampling, errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
constexpr Dtype f64 = Dtype::float64;
Tensor ints(std::vector<std::int64_t> v, const Shape& shape) { return index_tensor(v, shape); }
constexpr std::int64_t V = 4, kBos = 0, kEos = 1;

// log p(next | prev) for each row: table[row][prev][next], next != bos.
struct Toy {
  std::vector<std::vector<std::vector<double>>> table;
  explicit Toy(std::int64_t rows, std::uint64_t seed) {
    Generator g(seed);
    table.assign(static_cast<std::size_t>(rows), std::vector<std::vector<double>>(V, std::vector<double>(V)));
    for (auto& r : table)
      for (auto& p : r) {
        double s = 0;
        for (std::int64_t v = 0; v < V; ++v) s += (p[static_cast<std::size_t>(v)] = v == kBos ? 0 : 0.05 + g.uniform());
        for (auto& x : p) x = x > 0 ? std::log(x / s) : -INFINITY;
      }
  }
  // state[0]: the row id of each decoder row (as float64 [M, 1]), state[1]: the steps taken [M, 1]. Reordering
  // both through the search must keep them consistent with the tokens.
  nn::DecodeStep step() const {
    return [this](const Tensor& tokens, nn::DecodeState& state) {
      const auto tok = tokens.to_vector<std::int64_t>();
      const auto row = state[0].to_vector();
      const std::int64_t M = tokens.size(0);
      std::vector<double> out(static_cast<std::size_t>(M * V));
      for (std::int64_t m = 0; m < M; ++m)
        for (std::int64_t v = 0; v < V; ++v)
          out[static_cast<std::size_t>(m * V + v)] =
              table[static_cast<std::size_t>(row[static_cast<std::size_t>(m)])]
                   [static_cast<std::size_t>(tok[static_cast<std::size_t>(m)])][static_cast<std::size_t>(v)];
      state[1] = state[1] + 1.0;
      return tensor(out, {M, V}, f64);
    };
  }
  nn::DecodeState initial(std::int64_t rows) const {
    std::vector<double> ids;
    for (std::int64_t r = 0; r < rows; ++r) ids.push_back(static_cast<double>(r));
    return {tensor(ids, {rows, 1}, f64), zeros({rows, 1}, f64)};
  }
  // The best sequence by exhaustive search over every sequence of up to max_len tokens (ending at eos or cut).
  nn::Hypothesis best(std::int64_t row, std::int64_t max_len, double alpha) const {
    nn::Hypothesis top;
    top.score = -INFINITY;
    std::function<void(std::vector<std::int64_t>&, double)> go = [&](std::vector<std::int64_t>& seq, double lp) {
      const std::int64_t prev = seq.empty() ? kBos : seq.back();
      for (std::int64_t v = 1; v < V; ++v) {
        const double l =
            lp + table[static_cast<std::size_t>(row)][static_cast<std::size_t>(prev)][static_cast<std::size_t>(v)];
        seq.push_back(v);
        if (v == kEos || static_cast<std::int64_t>(seq.size()) == max_len) {
          const double s = l / std::pow(static_cast<double>(seq.size()), alpha);
          if (s > top.score) top = {seq, l, s};
        } else {
          go(seq, l);
        }
        seq.pop_back();
      }
    };
    std::vector<std::int64_t> seq;
    go(seq, 0.0);
    return top;
  }
};
}  // namespace

TEST_SUITE("nn/decode") {
  TEST_CASE("greedy decoding follows the argmax of every row, stops each row at eos") {
    const Toy toy(3, 1);
    const auto out = nn::greedy_decode(toy.step(), toy.initial(3), 3, {.bos = kBos, .eos = kEos, .max_length = 6});
    REQUIRE(out.size() == 3);
    for (std::int64_t r = 0; r < 3; ++r) {
      std::int64_t prev = kBos;
      const auto& seq = out[static_cast<std::size_t>(r)];
      CHECK(!seq.empty());
      CHECK(seq.size() <= 6);
      for (std::size_t t = 0; t < seq.size(); ++t) {
        const auto& p = toy.table[static_cast<std::size_t>(r)][static_cast<std::size_t>(prev)];
        CHECK(seq[t] == std::max_element(p.begin(), p.end()) - p.begin());
        CHECK((seq[t] != kEos || t + 1 == seq.size()));
        prev = seq[t];
      }
    }
  }

  TEST_CASE("beam search with a wide beam finds the exhaustive optimum, for several length penalties") {
    for (double alpha : {0.0, 0.6, 1.0}) {
      CAPTURE(alpha);
      const Toy toy(4, 2);
      nn::BeamSearchOptions o;
      o.bos = kBos, o.eos = kEos, o.max_length = 5, o.beam_size = 64, o.length_penalty = alpha, o.num_return = 3;
      const auto out = nn::beam_search(toy.step(), toy.initial(4), 4, o);
      REQUIRE(out.size() == 4);
      for (std::int64_t r = 0; r < 4; ++r) {
        CAPTURE(r);
        const auto want = toy.best(r, 5, alpha);
        const auto& got = out[static_cast<std::size_t>(r)];
        REQUIRE(got.size() == 3);
        CHECK(got[0].tokens == want.tokens);
        CHECK(got[0].score == doctest::Approx(want.score).epsilon(1e-12));
        CHECK(got[0].score >= got[1].score);
        CHECK(got[1].score >= got[2].score);
        // log_prob is the sum along the chosen tokens
        double lp = 0;
        std::int64_t prev = kBos;
        for (std::int64_t t : got[1].tokens) {
          lp += toy.table[static_cast<std::size_t>(r)][static_cast<std::size_t>(prev)][static_cast<std::size_t>(t)];
          prev = t;
        }
        CHECK(got[1].log_prob == doctest::Approx(lp).epsilon(1e-12));
      }
    }
  }

  TEST_CASE("beam size 1 is greedy decoding; a narrow beam never scores below greedy") {
    const Toy toy(5, 3);
    const auto greedy = nn::greedy_decode(toy.step(), toy.initial(5), 5, {.bos = kBos, .eos = kEos, .max_length = 7});
    nn::BeamSearchOptions o;
    o.bos = kBos, o.eos = kEos, o.max_length = 7, o.beam_size = 1, o.length_penalty = 0;
    const auto one = nn::beam_search(toy.step(), toy.initial(5), 5, o);
    o.beam_size = 3;
    const auto three = nn::beam_search(toy.step(), toy.initial(5), 5, o);
    for (std::size_t r = 0; r < 5; ++r) {
      CHECK(one[r][0].tokens == greedy[r]);
      CHECK(three[r][0].score >= one[r][0].score - 1e-12);
    }
  }

  TEST_CASE("scheduled sampling: the decay schedule and the mix of gold and predicted tokens") {
    CHECK(nn::inverse_sigmoid_decay(0, 100) == doctest::Approx(100.0 / 101.0));
    CHECK(nn::inverse_sigmoid_decay(100000, 100) < 1e-10);
    CHECK(nn::inverse_sigmoid_decay(500, 100) < nn::inverse_sigmoid_decay(400, 100));
    const Tensor gold = ints({0, 1, 2, 3, 0, 1, 2, 3}, {8});
    const Tensor logits = tensor(std::vector<double>(8 * 5, 0.0), {8, 5}, f64) +
                          reshape(tensor({0, 0, 0, 0, 9}, {1, 5}, f64), {1, 5});  // argmax 4 everywhere
    Generator g(1);
    CHECK(nn::scheduled_sampling_inputs(gold, logits, 1.0, g).to_vector<std::int64_t>() ==
          gold.to_vector<std::int64_t>());
    for (std::int64_t t : nn::scheduled_sampling_inputs(gold, logits, 0.0, g).to_vector<std::int64_t>()) CHECK(t == 4);
    int from_gold = 0;
    for (int i = 0; i < 200; ++i)
      for (std::int64_t t : nn::scheduled_sampling_inputs(gold, logits, 0.25, g).to_vector<std::int64_t>())
        from_gold += t != 4;
    CHECK(from_gold == doctest::Approx(0.25 * 1600).epsilon(0.15));
    int sampled4 = 0;
    for (int i = 0; i < 100; ++i)
      for (std::int64_t t : nn::scheduled_sampling_inputs(gold, logits, 0.0, g, true).to_vector<std::int64_t>())
        sampled4 += t == 4;
    CHECK(sampled4 > 780);  // p(4) = e^9 / (e^9 + 4) ~ 0.9995
  }

  TEST_CASE("errors") {
    const Toy toy(2, 4);
    nn::BeamSearchOptions o;
    o.bos = kBos, o.eos = kEos;
    o.num_return = 5;
    CHECK_THROWS_WITH_AS(nn::beam_search(toy.step(), toy.initial(2), 2, o), doctest::Contains("num_return must be in"),
                         ValueError);
    o.num_return = 1;
    CHECK_THROWS_WITH_AS(nn::beam_search(toy.step(), toy.initial(3), 2, o),
                         doctest::Contains("state tensor 0 must have the batch (2 rows) on dim 0"), ShapeError);
    const nn::DecodeStep nan_step = [](const Tensor& tokens, nn::DecodeState&) {
      return full({tokens.size(0), 4}, NAN, f64);
    };
    CHECK_THROWS_WITH_AS(nn::beam_search(nan_step, {}, 2, o), doctest::Contains("no finite log-probability for batch row 0"),
                         NonFiniteError);
    const nn::DecodeStep bad = [](const Tensor& tokens, nn::DecodeState&) { return zeros({tokens.size(0), 3, 1}); };
    CHECK_THROWS_WITH_AS(nn::greedy_decode(bad, {}, 2), doctest::Contains("greedy_decode: the step must return"),
                         ShapeError);
    CHECK_THROWS_AS(nn::greedy_decode(toy.step(), toy.initial(2), 0), ValueError);
    Generator g(1);
    CHECK_THROWS_AS(nn::scheduled_sampling_inputs(index_tensor({0, 1}), zeros({3, 4}), 0.5, g), ShapeError);
    CHECK_THROWS_AS(nn::scheduled_sampling_inputs(index_tensor({0, 1}), zeros({2, 4}), 1.5, g), ValueError);
  }
}
