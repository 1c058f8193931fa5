#pragma once
// Element types: float32 and float64 for values, int64 for indices.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <fmt/format.h>

namespace unroll {

enum class Dtype : std::uint8_t { float32, float64, int64 };

constexpr std::size_t dtype_size(Dtype d) { return d == Dtype::float32 ? 4 : 8; }
constexpr bool is_floating(Dtype d) { return d != Dtype::int64; }
constexpr std::string_view dtype_name(Dtype d) {
  switch (d) {
    case Dtype::float32:
      return "float32";
    case Dtype::float64:
      return "float64";
    case Dtype::int64:
      return "int64";
  }
  return "?";
}

/// The Dtype of a C++ element type: dtype_of<float> == Dtype::float32.
template <class T>
constexpr Dtype dtype_of();
template <>
constexpr Dtype dtype_of<float>() {
  return Dtype::float32;
}
template <>
constexpr Dtype dtype_of<double>() {
  return Dtype::float64;
}
template <>
constexpr Dtype dtype_of<std::int64_t>() {
  return Dtype::int64;
}

}  // namespace unroll

template <>
struct fmt::formatter<unroll::Dtype> : fmt::formatter<std::string_view> {
  auto format(unroll::Dtype d, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(unroll::dtype_name(d), ctx);
  }
};
