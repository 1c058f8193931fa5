// Seeded random numbers: reproducibility, state save/restore, distribution statistics, argument errors.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <set>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
constexpr Dtype f64 = Dtype::float64;

std::vector<double> draw_all(Generator& g) {
  std::vector<double> out;
  for (double v : uniform({16}, -2.0, 3.0, f64, g).to_vector()) out.push_back(v);
  for (double v : randn({17}, f64, g).to_vector()) out.push_back(v);  // odd count: leaves a cached normal
  for (double v : bernoulli({16}, 0.4, f64, g).to_vector()) out.push_back(v);
  for (auto v : randint({16}, -5, 100, g).to_vector<std::int64_t>()) out.push_back(static_cast<double>(v));
  for (double v : randn({3}, f64, g).to_vector()) out.push_back(v);
  return out;
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}
double std_of(const std::vector<double>& v) {
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size() - 1));
}
}  // namespace

TEST_SUITE("core/random") {
  TEST_CASE("the same seed gives identical sequences for every distribution") {
    Generator a(123), b(123);
    const auto va = draw_all(a);
    CHECK(va == draw_all(b));
    CHECK(va.size() == 68);
  }

  TEST_CASE("different seeds give different sequences") {
    Generator a(1), b(2);
    CHECK(a.next_u64() != b.next_u64());
    Generator c(1), d(2);
    CHECK(draw_all(c) != draw_all(d));
  }

  TEST_CASE("manual_seed restarts the stream and drops a cached normal") {
    Generator g(99);
    const double first = g.normal();
    g.manual_seed(99);
    g.normal();
    g.normal();
    g.normal();  // leaves the spare of the second pair cached
    g.manual_seed(99);
    CHECK(g.normal() == first);
  }

  TEST_CASE("the default generator is reseeded by manual_seed") {
    manual_seed(2024);
    const auto a = randn({8}, f64).to_vector();
    manual_seed(2024);
    CHECK(randn({8}, f64).to_vector() == a);
  }

  TEST_CASE("state() and set_state() resume the exact stream, including the cached normal") {
    Generator g(5);
    g.normal();  // one of a pair consumed: the other is cached
    const Generator::State st = g.state();
    CHECK(st.has_spare);
    const double n1 = g.normal(), n2 = g.normal(), n3 = g.normal();
    const std::uint64_t u = g.next_u64();
    g.set_state(st);
    CHECK(g.normal() == n1);
    CHECK(g.normal() == n2);
    CHECK(g.normal() == n3);
    CHECK(g.next_u64() == u);
    Generator fresh(0);
    fresh.set_state(st);
    CHECK(fresh.normal() == n1);
    CHECK(fresh.normal() == n2);
  }

  TEST_CASE("randn over 100k samples has the requested mean and standard deviation") {
    constexpr std::int64_t n = 100000;
    Generator g(31);
    const auto v = randn({n}, f64, g).to_vector();
    // Standard errors: mean 1/sqrt(n) ~ 0.0032, std ~ 1/sqrt(2n) ~ 0.0022; allow 5 of them.
    CHECK(std::abs(mean_of(v)) < 5 / std::sqrt(double(n)));
    CHECK(std::abs(std_of(v) - 1.0) < 5 / std::sqrt(2.0 * n));
    const auto w = randn({n}, f64, g, 3.0, 2.0).to_vector();
    CHECK(std::abs(mean_of(w) - 3.0) < 10 / std::sqrt(double(n)));
    CHECK(std::abs(std_of(w) - 2.0) < 10 / std::sqrt(2.0 * n));
  }

  TEST_CASE("uniform, bernoulli and randint stay in range with the right frequencies") {
    constexpr std::int64_t n = 100000;
    Generator g(77);
    const auto u = uniform({n}, -1.0, 3.0, f64, g).to_vector();
    bool in_range = true;
    for (double x : u) in_range = in_range && x >= -1.0 && x < 3.0;
    CHECK(in_range);
    CHECK(std::abs(mean_of(u) - 1.0) < 5 * (4.0 / std::sqrt(12.0)) / std::sqrt(double(n)));

    const auto b = bernoulli({n}, 0.25, f64, g).to_vector();
    bool binary = true;
    for (double x : b) binary = binary && (x == 0.0 || x == 1.0);
    CHECK(binary);
    CHECK(std::abs(mean_of(b) - 0.25) < 5 * std::sqrt(0.25 * 0.75 / n));

    const auto r = randint({n}, -3, 4, g).to_vector<std::int64_t>();
    CHECK(randint({1}, 0, 1, g).dtype() == Dtype::int64);
    std::set<std::int64_t> seen(r.begin(), r.end());
    CHECK(seen == std::set<std::int64_t>{-3, -2, -1, 0, 1, 2, 3});
  }

  TEST_CASE("the largest draw stays below the upper bound after rounding") {
    // A draw of 1 - 2^-53 rounds to 1.0f in float32, and 1 + (1 - 2^-53) rounds to 2.0 in float64.
    // Force it: next_u64() == ~0 needs s[1] with rotl(s[1] * 5, 7) * 9 == ~0.
    auto inverse = [](std::uint64_t a) {  // multiplicative inverse of an odd number mod 2^64 (Newton)
      std::uint64_t x = a;
      for (int i = 0; i < 6; ++i) x *= 2 - a * x;
      return x;
    };
    Generator g(0);
    Generator::State st = g.state();
    st.s[1] = std::rotr(~std::uint64_t{0} * inverse(9), 7) * inverse(5);
    g.set_state(st);
    Generator probe = g;
    REQUIRE(probe.next_u64() == ~std::uint64_t{0});
    CHECK(rand({1}, Dtype::float32, g).item() < 1.0);
    g.set_state(st);
    CHECK(uniform({1}, 1.0, 2.0, f64, g).item() < 2.0);
    g.set_state(st);
    CHECK(uniform({1}, 1.0, 2.0, f64, g).item() >= 1.0);
  }

  TEST_CASE("invalid arguments throw ValueError") {
    CHECK_THROWS_WITH_AS(bernoulli({2}, 1.5), "bernoulli: probability out of range; got 1.5, expected in [0, 1]",
                         ValueError);
    CHECK_THROWS_WITH_AS(uniform({2}, 1.0, 0.0), "uniform: empty range; got low=1 and high=0, expected low <= high",
                         ValueError);
    CHECK_THROWS_WITH_AS(randint({2}, 5, 5), "randint: empty range; got low=5 and high=5, expected low < high",
                         ValueError);
    CHECK_THROWS_WITH_AS(randn({2}, f64, default_generator(), 0.0, -1.0),
                         "randn: negative standard deviation; got -1, expected >= 0", ValueError);
  }
}
