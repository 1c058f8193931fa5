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
#include <cstdint>

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

}  // namespace unroll::nn
