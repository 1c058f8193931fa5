// nn::CRF: the forward algorithm and the gold score against a brute-force enumeration of all K^n tag
// sequences, Viterbi against the enumeration's argmax, gradients by finite differences (float64), PyTorch
// reference values (tests/fixtures/crf.json, tools/make_crf_fixtures.py), errors.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;

namespace {
constexpr Dtype f64 = Dtype::float64;

Tensor tags_of(std::vector<std::int64_t> v, const Shape& shape) { return index_tensor(v, shape); }

// Every tag sequence of length n over K tags, by brute force: log Z, the best sequence and its score.
struct Enumerated {
  double log_z;
  std::vector<std::int64_t> best;
};
Enumerated enumerate(const nn::CRF& crf, const Tensor& emissions, std::int64_t b, std::int64_t n) {
  const std::int64_t K = crf.num_tags, B = emissions.size(1);
  const auto e = emissions.to_vector<double>(), tr = crf.transitions.to_vector<double>(),
             st = crf.start_transitions.to_vector<double>(), en = crf.end_transitions.to_vector<double>();
  std::vector<std::int64_t> y(static_cast<std::size_t>(n), 0);
  double top = -INFINITY, sum = 0;
  Enumerated out{0, {}};
  while (true) {
    double s = st[static_cast<std::size_t>(y[0])] + en[static_cast<std::size_t>(y.back())];
    for (std::int64_t t = 0; t < n; ++t) {
      s += e[static_cast<std::size_t>((t * B + b) * K + y[static_cast<std::size_t>(t)])];
      if (t > 0) s += tr[static_cast<std::size_t>(y[static_cast<std::size_t>(t - 1)] * K + y[static_cast<std::size_t>(t)])];
    }
    sum += std::exp(s);
    if (s > top) top = s, out.best = y;
    std::int64_t t = n - 1;  // next sequence, like an odometer
    while (t >= 0 && ++y[static_cast<std::size_t>(t)] == K) y[static_cast<std::size_t>(t--)] = 0;
    if (t < 0) break;
  }
  out.log_z = std::log(sum);
  return out;
}
}  // namespace

TEST_SUITE("nn/crf") {
  TEST_CASE("parameters: pytorch-crf's names and shapes, U(-0.1, 0.1)") {
    manual_seed(1);
    nn::CRF crf(5);
    const StateDict sd = crf.state_dict();
    CHECK(sd.at("start_transitions").shape() == Shape{5});
    CHECK(sd.at("end_transitions").shape() == Shape{5});
    CHECK(sd.at("transitions").shape() == Shape{5, 5});
    for (double v : crf.transitions.to_vector()) CHECK(std::abs(v) <= 0.1);
  }

  TEST_CASE("log Z, the gold score and Viterbi against all K^n sequences, with lengths") {
    manual_seed(2);
    const std::int64_t T = 4, B = 3, K = 3;
    nn::CRF crf(K, f64);
    for (Tensor* p : {&crf.start_transitions, &crf.end_transitions, &crf.transitions}) {
      NoGradGuard no_grad;
      copy_(*p, randn(p->shape(), f64));  // larger than the init, so the paths differ clearly
    }
    const Tensor em = randn({T, B, K}, f64);
    const std::vector<std::int64_t> lengths = {4, 1, 3};
    const Tensor tags = tags_of({0, 2, 1, 1, 0, 2, 2, 0, 0, 1, 0, 1}, {T, B});
    const auto log_z = crf.log_partition(em, lengths).to_vector();
    const auto score = crf.score(em, tags, lengths).to_vector();
    const auto paths = crf.decode(em, lengths);
    const auto y = tags.to_vector<std::int64_t>();
    const auto e = em.to_vector();
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t n = lengths[static_cast<std::size_t>(b)];
      const Enumerated want = enumerate(crf, em, b, n);
      CHECK(log_z[static_cast<std::size_t>(b)] == doctest::Approx(want.log_z).epsilon(1e-12));
      CHECK(paths[static_cast<std::size_t>(b)] == want.best);
      // The gold score by hand.
      double s = crf.start_transitions.to_vector()[static_cast<std::size_t>(y[static_cast<std::size_t>(b)])];
      for (std::int64_t t = 0; t < n; ++t) {
        const std::int64_t tag = y[static_cast<std::size_t>(t * B + b)];
        s += e[static_cast<std::size_t>((t * B + b) * K + tag)];
        if (t > 0) s += crf.transitions.to_vector()[static_cast<std::size_t>(y[static_cast<std::size_t>((t - 1) * B + b)] * K + tag)];
      }
      s += crf.end_transitions.to_vector()[static_cast<std::size_t>(y[static_cast<std::size_t>((n - 1) * B + b)])];
      CHECK(score[static_cast<std::size_t>(b)] == doctest::Approx(s).epsilon(1e-12));
    }
    // nll = log Z - score; its reductions.
    const auto none = crf.nll(em, tags, lengths, Reduction::none).to_vector();
    double total = 0;
    for (std::int64_t b = 0; b < B; ++b) {
      CHECK(none[static_cast<std::size_t>(b)] == doctest::Approx(log_z[static_cast<std::size_t>(b)] - score[static_cast<std::size_t>(b)]));
      total += none[static_cast<std::size_t>(b)];
    }
    CHECK(crf.nll(em, tags, lengths, Reduction::sum).item() == doctest::Approx(total));
    CHECK(crf.nll(em, tags, lengths).item() == doctest::Approx(total / B));
  }

  TEST_CASE("gradients of the nll (emissions and all three parameters) by finite differences") {
    manual_seed(3);
    nn::CRF crf(4, f64);
    Generator gen(5);
    const Tensor em = test_support::random_leaf({5, 2, 4}, gen, 1.0);
    const Tensor tags = tags_of({0, 3, 1, 2, 2, 2, 3, 0, 1, 1}, {5, 2});
    const std::vector<std::int64_t> lengths = {5, 3};
    const auto r = autograd::gradcheck(
        "crf nll",
        [&](const std::vector<Tensor>& in) {
          crf.start_transitions = in[1], crf.end_transitions = in[2], crf.transitions = in[3];
          return crf.nll(in[0], tags, lengths, Reduction::none);
        },
        {em, crf.start_transitions, crf.end_transitions, crf.transitions});
    CHECK_MESSAGE(r.ok, r.message);
  }

  TEST_CASE("PyTorch reference (tools/make_crf_fixtures.py): nll, gradients, Viterbi") {
    const nlohmann::json fx = test_support::load_fixture("crf.json");
    for (const auto& c : fx.at("cases")) {
      CAPTURE(c.at("name").get<std::string>());
      const std::int64_t K = c.at("num_tags").get<std::int64_t>();
      nn::CRF crf(K, f64);
      StateDict sd;
      for (const auto& [name, t] : c.at("state_dict").items()) sd.insert(name, test_support::to_tensor(t));
      crf.load_state_dict(sd);
      const Tensor em = test_support::to_tensor(c.at("emissions")).requires_grad_();
      const Tensor tags = test_support::to_tensor(c.at("tags"));
      const auto lengths = c.at("lengths").get<std::vector<std::int64_t>>();
      const Tensor nll = crf.nll(em, tags, lengths, Reduction::none);
      CHECK(test_support::tolerance_ratio(nll, test_support::to_tensor(c.at("nll")), 1e-12, 1e-12) <= 1.0);
      sum(nll).backward();
      CHECK(test_support::tolerance_ratio(em.grad(), test_support::to_tensor(c.at("grads").at("emissions")), 1e-12, 1e-12) <= 1.0);
      for (const auto& [name, g] : c.at("grads").items()) {
        if (name == "emissions") continue;
        CAPTURE(name);
        const Tensor& p = name == "start_transitions" ? crf.start_transitions
                          : name == "end_transitions" ? crf.end_transitions
                                                      : crf.transitions;
        const Tensor got = p.grad().defined() ? p.grad() : zeros(p.shape(), f64);  // not reached: zero
        CHECK(test_support::tolerance_ratio(got, test_support::to_tensor(g), 1e-12, 1e-12) <= 1.0);
      }
      CHECK(crf.decode(em, lengths) == c.at("viterbi").get<std::vector<std::vector<std::int64_t>>>());
    }
  }

  TEST_CASE("errors name the CRF and what is wrong") {
    nn::CRF crf(3);
    const Tensor em = zeros({4, 2, 3});
    CHECK_THROWS_WITH_AS(crf.log_partition(zeros({4, 2, 5})),
                         "CRF::log_partition: emissions have the wrong number of tags; got [4, 2, 5], expected 3",
                         ShapeError);
    CHECK_THROWS_WITH_AS(crf.log_partition(zeros({4, 3})), doctest::Contains("emissions must be [T, B, num_tags]"),
                         ShapeError);
    const std::vector<std::int64_t> bad = {4, 0};
    CHECK_THROWS_WITH_AS(crf.log_partition(em, bad),
                         "CRF::log_partition: length out of range; got lengths[1] = 0, expected 1 <= length <= 4 (T)",
                         ValueError);
    const std::vector<std::int64_t> three = {4, 4, 4};
    CHECK_THROWS_AS(crf.decode(em, three), ShapeError);
    CHECK_THROWS_WITH_AS(crf.nll(em, tags_of({0, 1, 2, 3, 0, 0, 0, 0}, {4, 2})),
                         "CRF::score: tag out of range; got tags[1, 1] = 3, expected 0 <= tag < 3 (num_tags)", IndexError);
    CHECK_THROWS_AS(crf.nll(em, tags_of({0, 1, 2, 0}, {2, 2})), ShapeError);
    CHECK_THROWS_AS(crf.nll(em, zeros({4, 2})), DtypeError);
    CHECK_THROWS_WITH_AS(crf.log_partition(zeros({4, 2, 3}, Dtype::float64)),
                         "CRF::log_partition: emissions and the CRF's parameters differ in dtype; got float64, expected "
                         "float32",
                         DtypeError);
    CHECK_THROWS_AS(nn::CRF(0), ValueError);
  }
}
