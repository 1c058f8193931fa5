#pragma once
// Internal: branch-free float32 exp/tanh/sigmoid that the compiler vectorises (libm's tanhf is a call per
// element and dominated the cost of a small recurrent step). Accuracy is within a few ulp of libm;
// float64 keeps using libm, so gradchecks and float64 fixtures are unaffected.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace unroll::detail {

/// e^x for x in float range; saturates (no inf) beyond |x| ~ 87, which callers here do not distinguish.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  // x = n ln2 + r with |r| <= ln2 / 2; round n with the 1.5 * 2^23 trick (round-to-nearest, vectorisable)
  constexpr float kMagic = 12582912.0f;
  const float n = (x * 1.44269504088896341f + kMagic) - kMagic;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  // Taylor polynomial of e^r to degree 7: error < 1e-8 relative on |r| <= 0.347
  const float p =
      1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
  const std::int32_t e = (static_cast<std::int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(e);
}

/// tanh x: odd Taylor series below |x| = 0.55 (where 1 - 2/(e^2x + 1) loses relative accuracy), else via exp.
inline float tanh_approx(float x) {
  const float ax = std::fabs(x);
  // Both branches are computed (that is what vectorises), so the polynomial gets a clamped argument: on a
  // large |x| it would overflow to inf, and 0 * inf in the blend below would make the result NaN.
  const float xs = std::min(std::max(x, -0.55f), 0.55f);
  const float x2 = xs * xs;
  const float small =
      xs * (1.0f + x2 * (-1.0f / 3 + x2 * (2.0f / 15 + x2 * (-17.0f / 315 + x2 * (62.0f / 2835 + x2 * (-1382.0f / 155925 +
      x2 * (21844.0f / 6081075 + x2 * (-929569.0f / 638512875))))))));
  const float big = std::copysign(1.0f - 2.0f / (exp_approx(2.0f * ax) + 1.0f), x);
  const float use_small = static_cast<float>(ax < 0.55f);
  return use_small * small + (1.0f - use_small) * big;
}

/// 1 / (1 + e^-x).
inline float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

}  // namespace unroll::detail
