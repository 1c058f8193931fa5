#pragma once
// fmt formatting of tensors: fmt::format("{}", t) -> "tensor([[1, 2], [3, 4]], dtype=float32)".
// (Shape and Dtype formatters live beside their types.)
#include <string>

#include <fmt/format.h>

#include "tensor.hpp"

namespace unroll {
/// Human-readable text of a tensor; large tensors show their first and last 3 entries per dim.
std::string to_string(const Tensor& t);
}  // namespace unroll

template <>
struct fmt::formatter<unroll::Tensor> : fmt::formatter<std::string> {
  auto format(const unroll::Tensor& t, fmt::format_context& ctx) const {
    return fmt::formatter<std::string>::format(unroll::to_string(t), ctx);
  }
};
