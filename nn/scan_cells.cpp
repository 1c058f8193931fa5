#include "scan_cells.hpp"

#include "../ops/elementwise.hpp"
#include "../ops/shape_ops.hpp"
#include "rnn.hpp"

namespace unroll::nn {
namespace {
// Checks x [T, B, I] for `where` (a cell with `input_size` inputs).
void check_input(const char* where, const Tensor& x, std::int64_t input_size) {
  UNROLL_CHECK(x.defined() && x.dim() == 3 && x.shape()[2] == input_size, ShapeError,
               "{}: input must be [T, B, {}]; got x={}", where, input_size,
               x.defined() ? fmt::format("{}", x.shape()) : std::string("undefined"));
}
// log h0 for the log-space scan: undefined stays undefined (h0 = 0).
Tensor log_or_none(const Tensor& h0) { return h0.defined() ? log(h0) : Tensor(); }
// exp of a log-space scan's output, zero past each row's length (the scan pads log h with 0, i.e. h = 1).
Tensor exp_masked(const char* where, const Tensor& log_h, const ScanOptions& o) {
  Tensor h = exp(log_h);
  if (o.lengths.empty()) return h;
  const std::int64_t T = log_h.shape()[0], B = log_h.shape()[1];
  return h * reshape(detail::length_mask(where, o.lengths, T, B, log_h.dtype()), {T, B, 1});
}
}  // namespace

// g(x) = relu(x) + σ(min(x, 0)): x + 0.5 above zero (σ(0) = 0.5), σ(x) below.
Tensor min_rnn_g(const Tensor& x) { return relu(x) + sigmoid(clamp(x, std::nullopt, 0.0)); }
// log g(x) = logσ(min(x, 0)) + log(1 + 2 relu(x)): log 0.5 + log(1 + 2x) = log(x + 0.5) above zero, logσ(x) below.
Tensor min_rnn_log_g(const Tensor& x) { return logsigmoid(clamp(x, std::nullopt, 0.0)) + log(relu(x) * 2.0 + 1.0); }

MinGRU::MinGRU(std::int64_t input_size, std::int64_t hidden_size, bool log_space, bool bias, Dtype dtype)
    : linear_z(input_size, hidden_size, bias, dtype),
      linear_h(input_size, hidden_size, bias, dtype),
      log_space_(log_space) {
  register_module("linear_z", linear_z);
  register_module("linear_h", linear_h);
}

// a = 1 - z, b = z h~ (log space: log a = -softplus(k), log b = -softplus(-k) + log g(h~), k = W_z x + b_z).
Tensor MinGRU::forward(const Tensor& x, const Tensor& h0, const ScanOptions& options) const {
  check_input("MinGRU", x, linear_z.weight.shape()[1]);
  const Tensor k = linear_z(x), cand = linear_h(x);
  if (!log_space_) {
    const Tensor z = sigmoid(k);
    return linear_scan(1.0 - z, z * cand, h0, options);
  }
  const Tensor log_a = neg(softplus(k)), log_z = logsigmoid(k);
  return exp_masked("MinGRU", log_linear_scan(log_a, log_z + min_rnn_log_g(cand), log_or_none(h0), options), options);
}

MinLSTM::MinLSTM(std::int64_t input_size, std::int64_t hidden_size, bool log_space, bool bias, Dtype dtype)
    : linear_f(input_size, hidden_size, bias, dtype),
      linear_i(input_size, hidden_size, bias, dtype),
      linear_h(input_size, hidden_size, bias, dtype),
      log_space_(log_space) {
  register_module("linear_f", linear_f);
  register_module("linear_i", linear_i);
  register_module("linear_h", linear_h);
}

// f' = f / (f + i), i' = i / (f + i). Log space, with d = softplus(-k_f) - softplus(-k_i) = log i - log f:
// log f' = -softplus(d), log i' = -softplus(-d).
Tensor MinLSTM::forward(const Tensor& x, const Tensor& h0, const ScanOptions& options) const {
  check_input("MinLSTM", x, linear_f.weight.shape()[1]);
  const Tensor kf = linear_f(x), ki = linear_i(x), cand = linear_h(x);
  if (!log_space_) {
    const Tensor f = sigmoid(kf), i = sigmoid(ki), total = f + i;
    return linear_scan(f / total, i / total * cand, h0, options);
  }
  const Tensor d = softplus(neg(kf)) - softplus(neg(ki));
  return exp_masked(
      "MinLSTM",
      log_linear_scan(neg(softplus(d)), neg(softplus(neg(d))) + min_rnn_log_g(cand), log_or_none(h0), options),
      options);
}

}  // namespace unroll::nn
