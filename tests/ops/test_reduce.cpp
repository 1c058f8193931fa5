// cumsum and logcumsumexp (ops/reduce.cpp) beyond the PyTorch cases in tests/ops/test_reference.cpp: far-out
// values (|x| = 1000) without inf or nan, a -inf (masked) step, float32 accumulation, and shapes large enough
// to split into lane tiles and across threads, checked against plain loops.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
// The running sum (log = false) or log-sum-exp (log = true) along dim 1 of x viewed as [outer, n, inner].
std::vector<double> running(const std::vector<double>& x, std::int64_t outer, std::int64_t n, std::int64_t inner,
                            bool log) {
  std::vector<double> y(x.size());
  for (std::int64_t o = 0; o < outer; ++o)
    for (std::int64_t i = 0; i < inner; ++i) {
      double acc = log ? -INFINITY : 0.0;
      for (std::int64_t r = 0; r < n; ++r) {
        const std::size_t k = static_cast<std::size_t>((o * n + r) * inner + i);
        if (log) {
          const double m = std::max(acc, x[k]);
          acc = m + std::log(std::exp(acc - m) + std::exp(x[k] - m));
        } else {
          acc += x[k];
        }
        y[k] = acc;
      }
    }
  return y;
}

double worst(const std::vector<double>& a, const std::vector<double>& b) {
  double w = 0;
  for (std::size_t i = 0; i < a.size(); ++i) w = std::max(w, std::abs(a[i] - b[i]) / (1 + std::abs(b[i])));
  return w;
}
}  // namespace

TEST_SUITE("ops/reduce") {
  TEST_CASE("logcumsumexp at +-1000: finite values and gradients, in float64 and float32") {
    for (Dtype dt : {Dtype::float64, Dtype::float32}) {
      CAPTURE(dt);
      Tensor x = tensor({1000, -1000, 999, 1001, -1000, -999, -1001, 2}, {2, 4}, dt).requires_grad_();
      Tensor y = logcumsumexp(x, 1);
      sum(y).backward();
      const auto v = y.to_vector(), g = x.grad().to_vector();
      const double l1 = std::log1p(std::exp(-1.0));
      CHECK(v[0] == 1000);
      CHECK(v[1] == 1000);
      CHECK(v[2] == doctest::Approx(1000 + l1));
      CHECK(v[3] == doctest::Approx(1001 + std::log1p(std::exp(-1.0) + std::exp(-2.0))));
      CHECK(v[5] == doctest::Approx(-999 + l1));
      CHECK(v[7] == doctest::Approx(2));
      for (double e : g) CHECK(std::isfinite(e));
      // Each y_i's weights e^(x_j - y_i) sum to 1, so with g = 1 a row's gradient sums to its length.
      CHECK(g[0] + g[1] + g[2] + g[3] == doctest::Approx(4));
      CHECK(g[4] + g[5] + g[6] + g[7] == doctest::Approx(4));
      CHECK(g[1] == 0);
    }
  }

  // PyTorch gives nan here (0 * inf); the limit as x_0 -> -inf is what a masked step should get.
  TEST_CASE("logcumsumexp: a leading -inf step has the limit gradient, not nan") {
    Tensor x = tensor({-INFINITY, 0, 1}, {3}, Dtype::float64).requires_grad_();
    Tensor y = logcumsumexp(x, 0);
    sum(y).backward();
    const auto v = y.to_vector(), g = x.grad().to_vector();
    CHECK(v[0] == -INFINITY);
    CHECK(v[1] == 0);
    CHECK(v[2] == doctest::Approx(std::log1p(std::exp(1.0))));
    const double e = std::exp(1.0);
    CHECK(g[0] == 1);  // y_0 = x_0; later steps weigh it e^(x_0 - y_i) = 0
    CHECK(g[1] == doctest::Approx(1 + 1 / (1 + e)));
    CHECK(g[2] == doctest::Approx(e / (1 + e)));
  }

  TEST_CASE("cumsum in float32 accumulates in double, as PyTorch on the CPU") {
    Tensor y = cumsum(tensor({1e8, 1, 1, 1, 1, -1e8}, {6}), 0);
    CHECK(y.dtype() == Dtype::float32);
    CHECK(y.to_vector().back() == 4);  // a float32 running sum would have lost the ones
  }

  TEST_CASE("cumsum and logcumsumexp over many lanes and steps match plain loops, with their gradients") {
    Generator gen(5);
    // [outer, n, inner] views: one block of 300 lanes (two tiles), 200 rows of one lane, and a middle dim.
    struct Case {
      Shape shape;
      int dim;
      std::int64_t outer, n, inner;
    };
    for (const Case& c :
         {Case{{600, 300}, 0, 1, 600, 300}, Case{{200, 700}, -1, 200, 700, 1}, Case{{3, 500, 70}, 1, 3, 500, 70}}) {
      CAPTURE(c.shape);
      Tensor x = randn(c.shape, Dtype::float64, gen, 0.0, 3.0);
      const auto xv = x.to_vector();
      CHECK(worst(cumsum(x, c.dim).to_vector(), running(xv, c.outer, c.n, c.inner, false)) < 1e-12);
      CHECK(worst(logcumsumexp(x, c.dim).to_vector(), running(xv, c.outer, c.n, c.inner, true)) < 1e-12);
      // cumsum's gradient is the running sum from the end: with g = 1 it counts the later steps.
      Tensor xg = x.detach().requires_grad_();
      sum(cumsum(xg, c.dim)).backward();
      const auto g = xg.grad().to_vector();
      bool counts = true;
      for (std::int64_t k = 0; k < static_cast<std::int64_t>(g.size()); ++k)
        counts = counts && g[static_cast<std::size_t>(k)] == static_cast<double>(c.n - (k / c.inner) % c.n);
      CHECK(counts);
      // logcumsumexp's: each step's weights sum to 1, so with g = 1 every lane's gradient sums to n.
      Tensor xl = x.detach().requires_grad_();
      sum(logcumsumexp(xl, c.dim)).backward();
      CHECK(sum(xl.grad()).item() == doctest::Approx(static_cast<double>(c.outer * c.inner * c.n)));
    }
  }

  TEST_CASE("cumsum and logcumsumexp: float64 gradcheck across a tile boundary (300 lanes)") {
    Generator gen(6);
    Tensor x = randn({3, 300}, Dtype::float64, gen).requires_grad_();
    for (bool log : {false, true}) {
      auto r = autograd::gradcheck(
          log ? "logcumsumexp" : "cumsum",
          [&](const std::vector<Tensor>& p) { return log ? logcumsumexp(p[0], 0) : cumsum(p[0], 0); }, {x});
      CHECK_MESSAGE(r.ok, r.message);
    }
  }

  TEST_CASE("cumsum and logcumsumexp of empty and 0-d tensors") {
    CHECK(cumsum(zeros({0, 3}), 0).shape() == Shape{0, 3});
    CHECK(logcumsumexp(zeros({2, 0}), 0).shape() == Shape{2, 0});
    CHECK(cumsum(full({}, 2.5), -1).item() == 2.5);
    CHECK(logcumsumexp(full({}, -3.0), 0).item() == -3.0);
  }
}
