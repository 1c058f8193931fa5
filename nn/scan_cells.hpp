#pragma once
// Cells whose recurrence is linear in the state, run over a whole sequence by one scan (ops/scan.hpp) instead of
// a loop of T steps: the gates of every step come from the input alone, in one GEMM per gate over all T·B rows.
//
// MinGRU and MinLSTM (Feng et al. 2024, "Were RNNs All We Needed?"), in the paper's two modes:
//   plain      h_t = a_t ⊙ h_{t-1} + b_t with linear_scan;
//   log space  the same with log_linear_scan on log a, log b, and the candidate made positive by
//              g(x) = x + 0.5 (x >= 0), σ(x) (x < 0), so the scan is stable however long the sequence
//              (the paper's appendix B.3; h0 must then be positive).
// Parameter names follow the paper's reference code (linear_z, linear_f, linear_i, linear_h: nn::Linear each).
//
// MinRNNBlock: the paper's stacked block around either cell (pre-norm residual, then an MLP).
//
// RGLRU and RGLRUBlock (De et al. 2024, "Griffin: Mixing Gated Linear Recurrences with Local Attention"): the
// real-gated linear recurrent unit and the recurrent block around it (gated GELU branch, temporal conv1d,
// RG-LRU). Parameter names, shapes and initialisation follow google-deepmind/recurrentgemma's PyTorch code
// (a_param, input_gate.w/b, a_gate.w/b, conv_1d.w [K, W]/b, linear_x/linear_y/linear_out), so a state dict moves.
#include <cstdint>
#include <memory>
#include <utility>

#include "../ops/scan.hpp"
#include "layers.hpp"
#include "module.hpp"

namespace unroll::nn {

/// g(x) = x + 0.5 for x >= 0, σ(x) below: positive, continuous, the identity's slope for large x.
Tensor min_rnn_g(const Tensor& x);
/// log g(x), computed without forming g (stable for very negative x).
Tensor min_rnn_log_g(const Tensor& x);

/// minGRU: z_t = σ(W_z x_t + b_z), h~_t = W_h x_t + b_h, h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h~_t
/// (log space: h~_t → g(h~_t)).  x [T, B, I], h0 [B, H] (undefined: zeros) -> every h_t [T, B, H].
class MinGRU : public Module {
 public:
  MinGRU(std::int64_t input_size, std::int64_t hidden_size, bool log_space = false, bool bias = true,
         Dtype dtype = Dtype::float32);
  Tensor forward(const Tensor& x, const Tensor& h0 = {}, const ScanOptions& options = {}) const;
  Tensor operator()(const Tensor& x, const Tensor& h0 = {}, const ScanOptions& options = {}) const {
    return forward(x, h0, options);
  }
  bool log_space() const { return log_space_; }

  Linear linear_z, linear_h;

 private:
  bool log_space_;
};

/// minLSTM: f_t = σ(W_f x_t + b_f), i_t = σ(W_i x_t + b_i), normalised f'_t = f_t / (f_t + i_t),
/// i'_t = i_t / (f_t + i_t); h~_t = W_h x_t + b_h; h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h~_t (log space: h~_t → g(h~_t)).
/// x [T, B, I], h0 [B, H] (undefined: zeros) -> every h_t [T, B, H].
class MinLSTM : public Module {
 public:
  MinLSTM(std::int64_t input_size, std::int64_t hidden_size, bool log_space = false, bool bias = true,
          Dtype dtype = Dtype::float32);
  Tensor forward(const Tensor& x, const Tensor& h0 = {}, const ScanOptions& options = {}) const;
  Tensor operator()(const Tensor& x, const Tensor& h0 = {}, const ScanOptions& options = {}) const {
    return forward(x, h0, options);
  }
  bool log_space() const { return log_space_; }

  Linear linear_f, linear_i, linear_h;

 private:
  bool log_space_;
};

/// Which cell a MinRNNBlock wraps.
enum class MinRNNKind { gru, lstm };

/// The minGRU/minLSTM paper's stacked block, pre-norm residual as in a Transformer block:
///   u = x + cell(norm1(x));   y = u + ff_out(gelu(ff_in(norm2(u))))
/// with a dim -> ff_mult·dim -> dim MLP. x [T, B, D], h0 [B, D] (undefined: zeros; positive in log space) ->
/// {y [T, B, D], the cell's state after the last step [B, D]} (carry it to the next window).
class MinRNNBlock : public Module {
 public:
  MinRNNBlock(std::int64_t dim, MinRNNKind kind = MinRNNKind::gru, bool log_space = false, std::int64_t ff_mult = 4,
              Dtype dtype = Dtype::float32);
  std::pair<Tensor, Tensor> forward(const Tensor& x, const Tensor& h0 = {}) const;
  std::pair<Tensor, Tensor> operator()(const Tensor& x, const Tensor& h0 = {}) const { return forward(x, h0); }
  MinRNNKind kind() const { return kind_; }

  LayerNorm norm1;
  std::unique_ptr<MinGRU> gru;    ///< registered as "cell" when kind == gru
  std::unique_ptr<MinLSTM> lstm;  ///< registered as "cell" when kind == lstm
  LayerNorm norm2;
  Linear ff_in, ff_out;

 private:
  MinRNNKind kind_;
};

/// sqrt(x) whose gradient is clipped: g / sqrt(max(4x, 1/max_gradient²)) instead of g / (2 sqrt x), so it stays
/// finite at x = 0 (Griffin's √(1 − a²) when a → 1; recurrentgemma's SqrtBoundDerivative).
Tensor sqrt_bound_derivative(const Tensor& x, double max_gradient = 1000.0);

/// Block-diagonal linear map of the last dim: x [..., W] is split into num_blocks groups of W / num_blocks,
/// group h becomes x_h w[h] + b[h] (w [num_blocks, W/n, W/n], b [num_blocks, W/n]) -> [..., W].
/// w ~ N(0, w_init_variance_scale / (W/n)), b = 0.
class BlockDiagonalLinear : public Module {
 public:
  BlockDiagonalLinear(std::int64_t width, std::int64_t num_blocks, double w_init_variance_scale = 1.0,
                      Dtype dtype = Dtype::float32);
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }
  void reset_parameters();

  Tensor w, b;
  std::int64_t width, num_blocks;
  double w_init_variance_scale;
};

/// RG-LRU over a whole sequence, one linear scan:
///   r_t = σ(a_gate(x_t)), i_t = σ(input_gate(x_t)), log a_t = −8 r_t ⊙ softplus(a_param),
///   h_t = a_t ⊙ h_{t−1} + √(1 − a_t²) ⊙ (i_t ⊙ x_t)     (the √ through sqrt_bound_derivative)
/// where options.resets restart a row (h_t = i_t ⊙ x_t: no decay, no √ scaling, as recurrentgemma).
/// x [T, B, W], h0 [B, W] (undefined: zeros) -> every h_t [T, B, W]. a_param starts so that the slowest decay
/// exp(−softplus(a_param)) lies on the ring [0.9, 0.999], uniform in its square; the gates as BlockDiagonalLinear.
class RGLRU : public Module {
 public:
  RGLRU(std::int64_t width, std::int64_t num_heads = 1, Dtype dtype = Dtype::float32);
  Tensor forward(const Tensor& x, const Tensor& h0 = {}, const ScanOptions& options = {}) const;
  Tensor operator()(const Tensor& x, const Tensor& h0 = {}, const ScanOptions& options = {}) const {
    return forward(x, h0, options);
  }
  void reset_parameters();

  Tensor a_param;
  BlockDiagonalLinear input_gate, a_gate;
};

/// Depthwise causal convolution over time with a carried tail, for streaming: x [T, B, W] and the previous
/// window's last K−1 inputs tail [K−1, B, W] (undefined: zeros) -> {y [T, B, W], the new tail}.
/// y_t = b + sum_k w[K−1−k] ⊙ x_{t−k}: w [K, W] (w[K−1] multiplies the current step), b [W];
/// w ~ N(0, w_init_variance_scale / K), b = 0 (recurrentgemma's Conv1D).
class Conv1D : public Module {
 public:
  Conv1D(std::int64_t width, std::int64_t temporal_width, double w_init_variance_scale = 0.01,
         Dtype dtype = Dtype::float32);
  std::pair<Tensor, Tensor> forward(const Tensor& x, const Tensor& tail = {}) const;
  std::pair<Tensor, Tensor> operator()(const Tensor& x, const Tensor& tail = {}) const { return forward(x, tail); }
  void reset_parameters();

  Tensor w, b;
  std::int64_t width, temporal_width;
  double w_init_variance_scale;
};

/// Griffin's recurrent (temporal-mixing) block:
///   y = gelu_tanh(linear_y(x));  u = conv1d(linear_x(x)) over time (causal, width K);
///   out = linear_out(rg_lru(u) ⊙ y)
/// x [T, B, width] -> out [T, B, width], with a lru_width-wide recurrence inside.
class RGLRUBlock : public Module {
 public:
  /// What the block carries between windows of one stream: the RG-LRU's h [B, lru_width] and the conv's last K−1
  /// inputs [K−1, B, lru_width]. Undefined: zeros (a fresh start).
  struct State {
    Tensor h, conv;
  };
  RGLRUBlock(std::int64_t width, std::int64_t lru_width = 0, std::int64_t num_heads = 1, std::int64_t conv_width = 4,
             Dtype dtype = Dtype::float32);
  std::pair<Tensor, State> forward(const Tensor& x, const State& state = {}) const;
  std::pair<Tensor, State> operator()(const Tensor& x, const State& state = {}) const { return forward(x, state); }
  /// recurrentgemma's: linear_x, linear_y ~ N(0, 1/width), linear_out ~ N(0, 1/lru_width), biases 0.
  void reset_parameters();

  Linear linear_y, linear_x, linear_out;
  Conv1D conv_1d;
  RGLRU rg_lru;
};

}  // namespace unroll::nn
