// conv1d (ops/conv.cpp) beyond the PyTorch cases in tests/ops/test_reference.cpp: values and all three
// gradients against plain loops at a size that splits across threads, causality, and K = 1 as a per-channel
// scale.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;

TEST_SUITE("ops/conv") {
  TEST_CASE("conv1d and its gradients match plain loops (T = 40, B = 3, C = 300, K = 4)") {
    constexpr std::int64_t T = 40, B = 3, C = 300, K = 4;
    Generator gen(3);
    Tensor x = randn({T, B, C}, Dtype::float64, gen).requires_grad_();
    Tensor w = randn({C, K}, Dtype::float64, gen).requires_grad_();
    Tensor b = randn({C}, Dtype::float64, gen).requires_grad_();
    Tensor g = randn({T, B, C}, Dtype::float64, gen);
    Tensor y = conv1d(x, w, b);
    sum(y * g).backward();
    const auto xv = x.to_vector(), wv = w.to_vector(), bv = b.to_vector(), gv = g.to_vector(), yv = y.to_vector();
    const auto dx = x.grad().to_vector(), dw = w.grad().to_vector(), db = b.grad().to_vector();
    std::vector<double> ey(yv.size()), edx(dx.size(), 0.0), edw(dw.size(), 0.0), edb(db.size(), 0.0);
    auto at = [](std::int64_t t, std::int64_t bb, std::int64_t c) {
      return static_cast<std::size_t>((t * B + bb) * C + c);
    };
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t bb = 0; bb < B; ++bb)
        for (std::int64_t c = 0; c < C; ++c) {
          double acc = bv[static_cast<std::size_t>(c)];
          const double gtc = gv[at(t, bb, c)];
          edb[static_cast<std::size_t>(c)] += gtc;
          for (std::int64_t k = 0; k < K; ++k) {
            const std::int64_t s = t - (K - 1) + k;
            if (s < 0) continue;
            const std::size_t wi = static_cast<std::size_t>(c * K + k);
            acc += wv[wi] * xv[at(s, bb, c)];
            edx[at(s, bb, c)] += wv[wi] * gtc;
            edw[wi] += xv[at(s, bb, c)] * gtc;
          }
          ey[at(t, bb, c)] = acc;
        }
    auto worst = [](const std::vector<double>& a, const std::vector<double>& e) {
      double m = 0;
      for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - e[i]) / (1 + std::abs(e[i])));
      return m;
    };
    CHECK(worst(yv, ey) < 1e-12);
    CHECK(worst(dx, edx) < 1e-12);
    CHECK(worst(dw, edw) < 1e-12);
    CHECK(worst(db, edb) < 1e-12);
  }

  TEST_CASE("conv1d is causal: a change at step t moves only outputs t .. t + K - 1") {
    Generator gen(4);
    Tensor x = randn({6, 2, 3}, Dtype::float64, gen);
    Tensor w = randn({3, 3}, Dtype::float64, gen);
    const auto before = conv1d(x, w).to_vector();
    Tensor x2 = copy_of(x);
    x2.data<double>()[2 * 6 + 1] += 1.0;  // step 2, batch 0, channel 1
    const auto after = conv1d(x2, w).to_vector();
    for (std::int64_t t = 0; t < 6; ++t) {
      const std::size_t i = static_cast<std::size_t>(t * 6 + 1);
      CAPTURE(t);
      if (t >= 2 && t <= 4)
        CHECK(after[i] - before[i] == doctest::Approx(w.to_vector()[static_cast<std::size_t>(3 + 2 - (t - 2))]));
      else
        CHECK(after[i] == before[i]);
    }
  }

  TEST_CASE("conv1d with K = 1 scales each channel: x * w + b, in float32 too") {
    for (Dtype dt : {Dtype::float64, Dtype::float32}) {
      Generator gen(8);
      Tensor x = randn({5, 2, 4}, dt, gen), w = randn({4, 1}, dt, gen), b = randn({4}, dt, gen);
      const auto y = conv1d(x, w, b).to_vector(), e = (x * reshape(w, {4}) + b).to_vector();
      for (std::size_t i = 0; i < y.size(); ++i) CHECK(y[i] == doctest::Approx(e[i]).epsilon(1e-6));
    }
  }

  TEST_CASE("conv1d of an empty time axis is empty; its weight gradient is zero") {
    Tensor x = zeros({0, 2, 3}, Dtype::float64).requires_grad_();
    Tensor w = ones({3, 2}, Dtype::float64).requires_grad_();
    Tensor y = conv1d(x, w);
    CHECK(y.shape() == Shape{0, 2, 3});
    sum(y).backward();
    CHECK(w.grad().to_vector() == std::vector<double>(6, 0.0));
  }
}
