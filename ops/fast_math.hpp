#pragma once
// Internal: branch-free float32 exp/tanh/sigmoid that the compiler vectorises (libm's tanhf is a call per
// element and dominated the cost of a small recurrent step). Accuracy is within a few ulp of libm;
// float64 keeps using libm, so gradchecks and float64 fixtures are unaffected (tests/ops/test_fast_math.cpp).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

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
      1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 +
                                          r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
  const std::int32_t e = (static_cast<std::int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(e);
}

/// e^x - 1 for x >= 0, accurate relative to the result also near 0 (where e^x - 1 itself would cancel).
inline float expm1_nonneg(float x) {
  x = std::min(x, 88.0f);
  constexpr float kMagic = 12582912.0f;
  const float n = (x * 1.44269504088896341f + kMagic) - kMagic;
  const float r = (x - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
  // e^r - 1 to degree 7 (no constant term): error < 1e-8 relative on |r| <= 0.347
  const float q =
      r *
      (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
  const float s = std::bit_cast<float>((static_cast<std::int32_t>(n) + 127) << 23);  // 2^n, n >= 0
  return s * q + (s - 1.0f);  // 2^n e^r - 1; both terms >= 0, so nothing cancels
}

/// tanh x = E / (E + 2) with E = e^{2|x|} - 1, sign restored: one exponential and one division, accurate
/// to a few ulp everywhere (the plain 1 - 2 / (e^{2x} + 1) loses relative accuracy near 0).
inline float tanh_approx(float x) {
  const float e = expm1_nonneg(2.0f * std::fabs(x));
  return std::copysign(e / (e + 2.0f), x);
}

/// 1 / (1 + e^-x).
inline float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

/// The activations every kernel uses: float32 through the approximations above, float64 through libm.
template <class T>
T sigmoid_of(T v) {
  if constexpr (std::is_same_v<T, float>)
    return sigmoid_approx(v);
  else
    return T(1) / (T(1) + std::exp(-v));
}
template <class T>
T tanh_of(T v) {
  if constexpr (std::is_same_v<T, float>)
    return tanh_approx(v);
  else
    return std::tanh(v);
}

}  // namespace unroll::detail
