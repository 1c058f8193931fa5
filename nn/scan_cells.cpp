#include "scan_cells.hpp"

#include <cmath>

#include "../autograd/tape.hpp"
#include "../ops/conv.hpp"
#include "../ops/elementwise.hpp"
#include "../ops/matmul.hpp"
#include "../ops/shape_ops.hpp"
#include "init.hpp"
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

MinRNNBlock::MinRNNBlock(std::int64_t dim, MinRNNKind kind, bool log_space, std::int64_t ff_mult, Dtype dtype)
    : norm1({dim}, 1e-5, true, dtype),
      norm2({dim}, 1e-5, true, dtype),
      ff_in(dim, ff_mult * dim, true, dtype),
      ff_out(ff_mult * dim, dim, true, dtype),
      kind_(kind) {
  UNROLL_CHECK(ff_mult >= 1, ValueError, "MinRNNBlock: ff_mult must be at least 1; got {}", ff_mult);
  register_module("norm1", norm1);
  if (kind == MinRNNKind::gru)
    register_module("cell", *(gru = std::make_unique<MinGRU>(dim, dim, log_space, true, dtype)));
  else
    register_module("cell", *(lstm = std::make_unique<MinLSTM>(dim, dim, log_space, true, dtype)));
  register_module("norm2", norm2);
  register_module("ff_in", ff_in);
  register_module("ff_out", ff_out);
}

std::pair<Tensor, Tensor> MinRNNBlock::forward(const Tensor& x, const Tensor& h0) const {
  check_input("MinRNNBlock", x, norm1.normalized_shape[0]);
  const Tensor normed = norm1(x);
  const Tensor h = gru ? (*gru)(normed, h0) : (*lstm)(normed, h0);
  const Tensor u = x + h;
  return {u + ff_out(gelu(ff_in(norm2(u)))), h[h.size(0) - 1]};
}

// value sqrt(x) with a gradient path of slope 1/sqrt(max(4x, 1/m²)): x − x.detach() is exactly zero, so the value is
// untouched, and its gradient is the identity times the (constant) clipped slope.
Tensor sqrt_bound_derivative(const Tensor& x, double max_gradient) {
  UNROLL_CHECK(max_gradient > 0, ValueError, "sqrt_bound_derivative: max_gradient must be positive; got {}",
               max_gradient);
  Tensor value, slope;
  {
    autograd::NoGradGuard no_grad;
    value = sqrt(x);
    slope = pow(clamp(x * 4.0, 1.0 / (max_gradient * max_gradient), std::nullopt), -0.5);
  }
  if (!x.requires_grad() || !autograd::grad_enabled()) return value;
  return value + (x - x.detach()) * slope;
}

BlockDiagonalLinear::BlockDiagonalLinear(std::int64_t width_, std::int64_t num_blocks_, double scale, Dtype dtype)
    : width(width_), num_blocks(num_blocks_), w_init_variance_scale(scale) {
  UNROLL_CHECK(num_blocks > 0 && width > 0 && width % num_blocks == 0, ValueError,
               "BlockDiagonalLinear: width must be a positive multiple of num_blocks; got width={} num_blocks={}",
               width, num_blocks);
  const std::int64_t bw = width / num_blocks;
  w = Tensor::empty({num_blocks, bw, bw}, dtype);
  b = Tensor::empty({num_blocks, bw}, dtype);
  register_parameter("w", w);
  register_parameter("b", b);
  reset_parameters();
}

void BlockDiagonalLinear::reset_parameters() {
  init::normal_(w, 0.0, std::sqrt(w_init_variance_scale / static_cast<double>(width / num_blocks)));
  init::zeros_(b);
}

Tensor BlockDiagonalLinear::forward(const Tensor& x) const {
  UNROLL_CHECK(x.defined() && x.dim() >= 1 && x.shape()[x.dim() - 1] == width, ShapeError,
               "BlockDiagonalLinear: input must be [..., {}]; got x={}", width,
               x.defined() ? fmt::format("{}", x.shape()) : std::string("undefined"));
  const std::int64_t bw = width / num_blocks, rows = x.numel() / width;
  // One GEMM per block: [blocks, rows, bw] x [blocks, bw, bw]; a single block is a plain [rows, W] x [W, W].
  const Tensor y = num_blocks == 1
                       ? matmul(reshape(x, {rows, bw}), reshape(w, {bw, bw}))
                       : permute(matmul(permute(reshape(x, {rows, num_blocks, bw}), {1, 0, 2}), w), {1, 0, 2});
  std::vector<std::int64_t> shape(x.shape().begin(), x.shape().end());
  return reshape(reshape(y, {rows, num_blocks, bw}) + b, shape);
}

RGLRU::RGLRU(std::int64_t width, std::int64_t num_heads, Dtype dtype)
    : input_gate(width, num_heads, 1.0, dtype), a_gate(width, num_heads, 1.0, dtype) {
  a_param = Tensor::empty({width}, dtype);
  register_parameter("a_param", a_param);
  register_module("input_gate", input_gate);
  register_module("a_gate", a_gate);
  reset_parameters();
}

// recurrentgemma's rnn_param_init: a² ~ U(0.9², 0.999²), a_param = softplus⁻¹(−log a) = log(exp(−log a) − 1)
// with log a = ½ log a².
void RGLRU::reset_parameters() {
  input_gate.reset_parameters();
  a_gate.reset_parameters();
  init::uniform_(a_param, 0.9 * 0.9 + 1e-8, 0.999 * 0.999 + 1e-8);
  autograd::NoGradGuard no_grad;
  copy_(a_param, log(exp(log(a_param) * -0.5) - 1.0));
}

Tensor RGLRU::forward(const Tensor& x, const Tensor& h0, const ScanOptions& options) const {
  check_input("RGLRU", x, a_param.shape()[0]);
  const std::int64_t T = x.shape()[0], B = x.shape()[1];
  const Tensor gate_x = sigmoid(input_gate(x)), gate_a = sigmoid(a_gate(x));
  const Tensor log_a = gate_a * (softplus(a_param) * -8.0);
  Tensor multiplier = sqrt_bound_derivative(1.0 - exp(log_a * 2.0));
  if (options.resets.defined()) {
    UNROLL_CHECK(options.resets.dim() == 2 && options.resets.shape()[0] == T && options.resets.shape()[1] == B,
                 ShapeError, "RGLRU: resets must be [T, B] = [{}, {}]; got resets={}", T, B, options.resets.shape());
    // A restarted row takes its gated input unscaled, as recurrentgemma (the scan itself drops the old state).
    multiplier = where(reshape(options.resets, {T, B, 1}), full({1}, 1.0, x.dtype()), multiplier);
  }
  return linear_scan(exp(log_a), x * gate_x * multiplier, h0, options);
}

Conv1D::Conv1D(std::int64_t width_, std::int64_t temporal_width_, double scale, Dtype dtype)
    : width(width_), temporal_width(temporal_width_), w_init_variance_scale(scale) {
  UNROLL_CHECK(width > 0 && temporal_width > 0, ValueError,
               "Conv1D: width and temporal_width must be positive; got width={} temporal_width={}", width,
               temporal_width);
  w = Tensor::empty({temporal_width, width}, dtype);
  b = Tensor::empty({width}, dtype);
  register_parameter("w", w);
  register_parameter("b", b);
  reset_parameters();
}

void Conv1D::reset_parameters() {
  init::normal_(w, 0.0, std::sqrt(w_init_variance_scale / static_cast<double>(temporal_width)));
  init::zeros_(b);
}

// The tail is prepended and the first K−1 outputs dropped, so a stream split into windows gives the same outputs
// as one long run.
std::pair<Tensor, Tensor> Conv1D::forward(const Tensor& x, const Tensor& tail) const {
  check_input("Conv1D", x, width);
  const std::int64_t T = x.shape()[0], B = x.shape()[1], K = temporal_width;
  const Tensor kernel = transpose(w, 0, 1);  // [W, K], the op's layout
  if (K == 1) return {conv1d(x, kernel, b), Tensor()};
  UNROLL_CHECK(!tail.defined() || tail.shape() == Shape({K - 1, B, width}), ShapeError,
               "Conv1D: tail must be [K-1, B, W] = [{}, {}, {}]; got tail={}", K - 1, B, width,
               tail.defined() ? fmt::format("{}", tail.shape()) : std::string("undefined"));
  const Tensor full_input = cat({tail.defined() ? tail : zeros({K - 1, B, width}, x.dtype()), x}, 0);
  return {narrow(conv1d(full_input, kernel, b), 0, K - 1, T), narrow(full_input, 0, T, K - 1)};
}

RGLRUBlock::RGLRUBlock(std::int64_t width, std::int64_t lru_width, std::int64_t num_heads, std::int64_t conv_width,
                       Dtype dtype)
    : linear_y(width, lru_width > 0 ? lru_width : width, true, dtype),
      linear_x(width, lru_width > 0 ? lru_width : width, true, dtype),
      linear_out(lru_width > 0 ? lru_width : width, width, true, dtype),
      conv_1d(lru_width > 0 ? lru_width : width, conv_width, 0.01, dtype),
      rg_lru(lru_width > 0 ? lru_width : width, num_heads, dtype) {
  register_module("linear_y", linear_y);
  register_module("linear_x", linear_x);
  register_module("linear_out", linear_out);
  register_module("conv_1d", conv_1d);
  register_module("rg_lru", rg_lru);
  reset_parameters();
}

void RGLRUBlock::reset_parameters() {
  const double width = static_cast<double>(linear_x.weight.shape()[1]);
  const double lru_width = static_cast<double>(linear_x.weight.shape()[0]);
  init::normal_(linear_x.weight, 0.0, std::sqrt(1.0 / width));
  init::zeros_(linear_x.bias);
  init::normal_(linear_y.weight, 0.0, std::sqrt(1.0 / width));
  init::zeros_(linear_y.bias);
  init::normal_(linear_out.weight, 0.0, std::sqrt(1.0 / lru_width));
  init::zeros_(linear_out.bias);
  conv_1d.reset_parameters();
  rg_lru.reset_parameters();
}

std::pair<Tensor, RGLRUBlock::State> RGLRUBlock::forward(const Tensor& x, const State& state) const {
  check_input("RGLRUBlock", x, linear_x.weight.shape()[1]);
  const Tensor gate = gelu(linear_y(x), GeluApproximation::tanh);
  auto [u, tail] = conv_1d(linear_x(x), state.conv);
  const Tensor h = rg_lru(u, state.h);
  return {linear_out(h * gate), State{h[h.size(0) - 1], tail}};
}

}  // namespace unroll::nn
