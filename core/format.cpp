#include "format.hpp"

namespace unroll {
namespace {
constexpr std::int64_t kEdge = 3;  // entries shown at each end of a long dim

void append(std::string& out, const Tensor& t, const std::vector<double>& v, int d, std::int64_t base) {
  if (t.dim() == 0) {
    out += fmt::format("{:.6g}", v[0]);
    return;
  }
  const std::int64_t n = t.shape()[d], stride = t.shape().numel(d + 1, t.dim());
  out += '[';
  for (std::int64_t i = 0; i < n; ++i) {
    if (n > 2 * kEdge + 1 && i == kEdge) {
      out += "..., ";
      i = n - kEdge - 1;
      continue;
    }
    if (d + 1 == t.dim()) {
      out += t.dtype() == Dtype::int64 ? fmt::format("{}", static_cast<std::int64_t>(v[base + i]))
                                       : fmt::format("{:.6g}", v[base + i]);
    } else {
      append(out, t, v, d + 1, base + i * stride);
    }
    if (i + 1 < n) out += ", ";
  }
  out += ']';
}
}  // namespace

std::string to_string(const Tensor& t) {
  if (!t.defined()) return "tensor(undefined)";
  std::string out = "tensor(";
  append(out, t, t.to_vector<double>(), 0, 0);
  out += fmt::format(", dtype={}", t.dtype());
  if (t.requires_grad()) out += ", requires_grad";
  out += ')';
  return out;
}
}  // namespace unroll
