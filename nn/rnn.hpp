#pragma once
// Sequence layers RNN, LSTM and GRU with PyTorch's options, shapes and parameter names
// (weight_ih_l{k}[_reverse], weight_hh_l{k}..., bias_ih_l{k}..., bias_hh_l{k}...).
//
//   x [T, B, I] (or [B, T, I] with batch_first; or unbatched [T, I]) ->
//   output [T, B, D*H] (batch_first: [B, T, D*H]),  h_n (and c_n) [L*D, B, H]     (D = 2 if bidirectional)
//
// Each layer and direction computes its input projection for all time steps with one GEMM (M = T*B), then
// runs one fused step op per time step. Variable-length batches: pass `lengths` (one per batch row,
// 1 <= length <= T): outputs past a sequence's end are zero and final states are taken at each
// sequence's own last step (the reverse direction starts there), as PyTorch's packed sequences give —
// with a per-row mask instead of a packing copy.
#include <cstdint>
#include <vector>

#include "../ops/recurrent.hpp"
#include "cells.hpp"
#include "module.hpp"

namespace unroll::detail {
struct StepTraits;  // ops/recurrent_detail.hpp
}  // namespace unroll::detail

namespace unroll::nn {

struct RecurrentOptions {
  std::int64_t input_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t num_layers = 1;
  bool bias = true;
  bool batch_first = false;
  double dropout = 0.0;  ///< on each layer's output except the last, in training mode
  /// Weight drop (DropConnect on weight_hh, Merity et al. 2017): in training, each forward call runs every
  /// layer and direction with dropout(weight_hh, weight_drop) (one mask per call, inverted scaling; the
  /// fused steps pack the masked weight, its gradient flows back to weight_hh). 0 <= weight_drop < 1.
  double weight_drop = 0.0;
  /// Zoneout (Krueger et al. 2016) on h (and, LSTM only, c) between steps: in training each unit keeps its
  /// previous value with probability p (a fresh mask per step), h_t = d h_{t-1} + (1 - d) h~_t; outside
  /// training the expectation p h_{t-1} + (1 - p) h~_t. 0 <= p < 1.
  double zoneout_h = 0.0;
  double zoneout_c = 0.0;
  bool bidirectional = false;
  /// Checkpointed BPTT (with grad mode on): each layer and direction runs in segments of this many steps,
  /// each an autograd::checkpoint that keeps only its starting state and recomputes its steps in backward.
  /// 0: off. Same gradients; see nn::RunOptions::checkpoint_every.
  std::int64_t checkpoint_every = 0;
  /// Or a budget in bytes for what one layer and direction's steps keep; the segment length is then the
  /// largest that fits (one step measured at each call). 0: off.
  std::int64_t memory_budget = 0;
  RnnActivation nonlinearity = RnnActivation::tanh;  ///< RNN only
  Dtype dtype = Dtype::float32;
};

/// What a sequence layer returns; c_n is defined for LSTM only.
struct RecurrentOutput {
  Tensor output, h_n, c_n;
};

enum class RecurrentMode { rnn_tanh, rnn_relu, lstm, gru };

/// The machinery shared by RNN, LSTM and GRU: which fused step runs (its traits entry), the rest is common.
class RecurrentLayer : public Module {
 public:
  const RecurrentOptions& options() const { return opt_; }
  RecurrentMode mode() const { return mode_; }
  /// One layer and direction's parameters (biases undefined without bias).
  const RecurrentWeights& weights(std::int64_t layer, bool reverse = false) const {
    return weights_[static_cast<std::size_t>(layer * directions() + (reverse ? 1 : 0))];
  }
  std::int64_t directions() const { return opt_.bidirectional ? 2 : 1; }
  /// U(-1/sqrt(H), 1/sqrt(H)) for every parameter, as PyTorch.
  void reset_parameters();

 protected:
  RecurrentLayer(const char* name, RecurrentMode mode, const RecurrentOptions& options);
  RecurrentOutput run(const Tensor& x, const Tensor& h0, const Tensor& c0,
                      const std::vector<std::int64_t>& lengths) const;

 private:
  const char* name_;
  RecurrentMode mode_;
  const unroll::detail::StepTraits& step_;
  RecurrentOptions opt_;
  std::vector<RecurrentWeights> weights_;  ///< sized once in the constructor: registered by address
};

/// Elman RNN: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), act = options.nonlinearity.
class RNN : public RecurrentLayer {
 public:
  explicit RNN(const RecurrentOptions& options);
  RecurrentOutput forward(const Tensor& x, const Tensor& h0 = {}, const std::vector<std::int64_t>& lengths = {}) const {
    return run(x, h0, {}, lengths);
  }
  RecurrentOutput operator()(const Tensor& x, const Tensor& h0 = {},
                             const std::vector<std::int64_t>& lengths = {}) const {
    return forward(x, h0, lengths);
  }
};

/// LSTM (gates i, f, g, o); h0 and c0 optional (zeros).
class LSTM : public RecurrentLayer {
 public:
  explicit LSTM(const RecurrentOptions& options);
  RecurrentOutput forward(const Tensor& x, const Tensor& h0 = {}, const Tensor& c0 = {},
                          const std::vector<std::int64_t>& lengths = {}) const {
    return run(x, h0, c0, lengths);
  }
  RecurrentOutput operator()(const Tensor& x, const Tensor& h0 = {}, const Tensor& c0 = {},
                             const std::vector<std::int64_t>& lengths = {}) const {
    return forward(x, h0, c0, lengths);
  }
};

/// GRU (gates r, z, n with n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))).
class GRU : public RecurrentLayer {
 public:
  explicit GRU(const RecurrentOptions& options);
  RecurrentOutput forward(const Tensor& x, const Tensor& h0 = {}, const std::vector<std::int64_t>& lengths = {}) const {
    return run(x, h0, {}, lengths);
  }
  RecurrentOutput operator()(const Tensor& x, const Tensor& h0 = {},
                             const std::vector<std::int64_t>& lengths = {}) const {
    return forward(x, h0, lengths);
  }
};

namespace detail {
/// Checks one length per row, each in [1, T] (errors name `where`).
void check_lengths(const char* where, const std::vector<std::int64_t>& lengths, std::int64_t T, std::int64_t B);
/// Checks the checkpointing options: checkpoint_every >= 0 and memory_budget >= 0 (0: off), not both set.
void check_checkpoint_options(const char* where, std::int64_t checkpoint_every, std::int64_t memory_budget);
/// The segment length k for checkpointed BPTT over T steps (0: none): checkpoint_every when given, else the
/// largest k whose T/k segment states (`state` bytes each) and one segment's k steps (`step` bytes each)
/// fit in memory_budget bytes; a ValueError naming the smallest budget that fits when none does.
std::int64_t checkpoint_segment(const char* where, std::int64_t checkpoint_every, std::int64_t memory_budget,
                                std::int64_t T, std::int64_t state, std::int64_t step);
/// [T, B] mask (dtype) with 1 where t < lengths[b]; checks 1 <= lengths[b] <= T (`where` names the caller).
Tensor length_mask(const char* where, const std::vector<std::int64_t>& lengths, std::int64_t T, std::int64_t B,
                   Dtype dtype);
}  // namespace detail

}  // namespace unroll::nn
