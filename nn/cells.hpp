#pragma once
// The standard recurrent cells, one time step each, with PyTorch's formulas, gate orders and parameter
// names: weight_ih [G*H, I], weight_hh [G*H, H], bias_ih and bias_hh [G*H] (G = 1 RNN, 4 LSTM (i, f, g, o),
// 3 GRU (r, z, n)), all U(-1/sqrt(H), 1/sqrt(H)). Each step is linear() for the input plus one fused
// step op (ops/recurrent.hpp) for the rest.
#include <cstdint>
#include <string>
#include <utility>

#include "../ops/recurrent.hpp"
#include "module.hpp"

namespace unroll::nn {

/// One cell's parameters, or one layer and direction's of a sequence layer, with PyTorch's names and shapes:
/// weight_ih [G*H, I], weight_hh [G*H, H], bias_ih and bias_hh [G*H] (G gates; biases undefined without bias).
struct RecurrentWeights {
  Tensor weight_ih, weight_hh, bias_ih, bias_hh;

  /// Creates the parameters, initialised as reset() does, and registers them on `owner` (by address: this
  /// must not move afterwards) as weight_ih{suffix}, weight_hh{suffix}, bias_ih{suffix}, bias_hh{suffix}.
  void create(Module& owner, const std::string& suffix, std::int64_t input_size, std::int64_t hidden_size,
              std::int64_t gates, bool bias, Dtype dtype);
  /// U(-1/sqrt(H), 1/sqrt(H)) for every parameter, as PyTorch.
  void reset(std::int64_t hidden_size);
};

/// What the three cells share: their parameters (`cell.weight_ih`, ...) and the checks of a step's input.
class RecurrentCellBase : public Module, public RecurrentWeights {
 public:
  RecurrentCellBase(std::int64_t input_size, std::int64_t hidden_size, std::int64_t gates, bool bias, Dtype dtype);
  /// U(-1/sqrt(H), 1/sqrt(H)) for every parameter, as PyTorch.
  void reset_parameters() { reset(hidden_size_); }
  std::int64_t input_size() const { return input_size_; }
  std::int64_t hidden_size() const { return hidden_size_; }

 protected:
  /// Checks x [B, I] (and a given state [B, H]) for the cell named `where`; returns a zero state if h is undefined.
  Tensor state_or_zeros(const char* where, const Tensor& x, const Tensor& h) const;
  std::int64_t input_size_, hidden_size_;
};

/// h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh).  x [B, I], h [B, H] (undefined = zeros) -> [B, H].
class RNNCell : public RecurrentCellBase {
 public:
  RNNCell(std::int64_t input_size, std::int64_t hidden_size, bool bias = true,
          RnnActivation nonlinearity = RnnActivation::tanh, Dtype dtype = Dtype::float32);
  Tensor forward(const Tensor& x, const Tensor& h = {}) const;
  Tensor operator()(const Tensor& x, const Tensor& h = {}) const { return forward(x, h); }
  RnnActivation nonlinearity;
};

/// (h', c') from x [B, I] and (h, c) [B, H] each (undefined = zeros).
class LSTMCell : public RecurrentCellBase {
 public:
  LSTMCell(std::int64_t input_size, std::int64_t hidden_size, bool bias = true, Dtype dtype = Dtype::float32);
  std::pair<Tensor, Tensor> forward(const Tensor& x, const Tensor& h = {}, const Tensor& c = {}) const;
  std::pair<Tensor, Tensor> operator()(const Tensor& x, const Tensor& h = {}, const Tensor& c = {}) const {
    return forward(x, h, c);
  }
};

/// h' from x [B, I] and h [B, H] (undefined = zeros), n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)).
class GRUCell : public RecurrentCellBase {
 public:
  GRUCell(std::int64_t input_size, std::int64_t hidden_size, bool bias = true, Dtype dtype = Dtype::float32);
  Tensor forward(const Tensor& x, const Tensor& h = {}) const;
  Tensor operator()(const Tensor& x, const Tensor& h = {}) const { return forward(x, h); }
};

}  // namespace unroll::nn
