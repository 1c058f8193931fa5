// The float32 exp/tanh/sigmoid behind the elementwise ops and the fused recurrent steps (ops/fast_math.hpp):
// error against libm in double, measured in ulp of the float result, over the whole useful range —
// tiny arguments (where tanh must stay accurate relative to x), the transition region, and saturation.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include <unroll/ops/fast_math.hpp>

namespace {
// Arguments: a dense linear grid over [-lo, hi] and both signs of 10^u for u in [-30, log10(hi)].
std::vector<float> arguments(float hi) {
  std::vector<float> xs;
  for (int i = -200000; i <= 200000; ++i) xs.push_back(hi * static_cast<float>(i) / 200000.0f);
  for (double u = -30; u <= std::log10(hi); u += 1e-4) {
    xs.push_back(static_cast<float>(std::pow(10.0, u)));
    xs.push_back(-static_cast<float>(std::pow(10.0, u)));
  }
  return xs;
}
template <class F, class R>
double worst_ulp(F f, R ref, float hi) {
  double worst = 0;
  for (float x : arguments(hi)) {
    const double r = ref(static_cast<double>(x));
    if (r == 0 || !std::isfinite(r) || std::fabs(r) < std::numeric_limits<float>::min()) continue;
    const double ulp = std::ldexp(1.0, std::ilogb(static_cast<float>(r)) - 23);
    worst = std::max(worst, std::fabs(static_cast<double>(f(x)) - r) / ulp);
  }
  return worst;
}
}  // namespace

TEST_SUITE("ops/fast_math") {
  TEST_CASE("float32 tanh, sigmoid and exp are within a few ulp of libm") {
    using namespace unroll::detail;
    const double tanh_err = worst_ulp(
        tanh_approx, [](double x) { return std::tanh(x); }, 20.0f);
    const double sigmoid_err = worst_ulp(
        sigmoid_approx, [](double x) { return 1.0 / (1.0 + std::exp(-x)); }, 80.0f);
    const double exp_err = worst_ulp(
        exp_approx, [](double x) { return std::exp(x); }, 80.0f);
    MESSAGE("worst error in ulp: tanh " << tanh_err << ", sigmoid " << sigmoid_err << ", exp " << exp_err);
    CHECK(tanh_err <= 4.0);
    CHECK(sigmoid_err <= 4.0);
    CHECK(exp_err <= 2.0);
  }

  TEST_CASE("float32 tanh: exact at 0 and odd, saturates to +-1, passes NaN through") {
    using unroll::detail::tanh_approx;
    CHECK(tanh_approx(0.0f) == 0.0f);
    CHECK(std::signbit(tanh_approx(-0.0f)));
    CHECK(tanh_approx(1e-20f) == 1e-20f);
    for (float x : {1e-6f, 0.01f, 0.3f, 0.55f, 1.0f, 4.0f}) CHECK(tanh_approx(-x) == -tanh_approx(x));
    for (float x : {10.0f, 100.0f, 1e30f, std::numeric_limits<float>::infinity()}) {
      CHECK(tanh_approx(x) == 1.0f);
      CHECK(tanh_approx(-x) == -1.0f);
    }
    CHECK(std::isnan(tanh_approx(std::numeric_limits<float>::quiet_NaN())));
  }
}
