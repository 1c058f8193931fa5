#include "cells.hpp"

#include <cmath>

#include "../ops/linear.hpp"
#include "../ops/recurrent_detail.hpp"
#include "init.hpp"

namespace unroll::nn {

void RecurrentWeights::create(Module& owner, const std::string& suffix, std::int64_t input_size,
                              std::int64_t hidden_size, std::int64_t gates, bool bias, Dtype dtype) {
  weight_ih = Tensor::empty({gates * hidden_size, input_size}, dtype);
  weight_hh = Tensor::empty({gates * hidden_size, hidden_size}, dtype);
  owner.register_parameter("weight_ih" + suffix, weight_ih);
  owner.register_parameter("weight_hh" + suffix, weight_hh);
  if (bias) {
    bias_ih = Tensor::empty({gates * hidden_size}, dtype);
    bias_hh = Tensor::empty({gates * hidden_size}, dtype);
    owner.register_parameter("bias_ih" + suffix, bias_ih);
    owner.register_parameter("bias_hh" + suffix, bias_hh);
  }
  reset(hidden_size);
}

void RecurrentWeights::reset(std::int64_t hidden_size) {
  const double k = 1.0 / std::sqrt(static_cast<double>(hidden_size));
  for (Tensor* p : {&weight_ih, &weight_hh, &bias_ih, &bias_hh})
    if (p->defined()) init::uniform_(*p, -k, k);
}

RecurrentCellBase::RecurrentCellBase(std::int64_t input_size, std::int64_t hidden_size, std::int64_t gates, bool bias,
                                     Dtype dtype)
    : input_size_(input_size), hidden_size_(hidden_size) {
  UNROLL_CHECK(input_size >= 1 && hidden_size >= 1, ValueError,
               "recurrent cell: sizes must be positive; got input_size={} hidden_size={}", input_size, hidden_size);
  create(*this, "", input_size, hidden_size, gates, bias, dtype);
}

Tensor RecurrentCellBase::state_or_zeros(const char* where, const Tensor& x, const Tensor& h) const {
  UNROLL_CHECK(x.dim() == 2 && x.shape()[1] == input_size_, ShapeError,
               "{}: input must be [batch, input_size]; got x={}, expected [B, {}]", where, x.shape(), input_size_);
  const std::int64_t B = x.shape()[0];
  if (!h.defined()) return zeros({B, hidden_size_}, x.dtype());
  UNROLL_CHECK(h.shape() == Shape({B, hidden_size_}), ShapeError,
               "{}: state has the wrong shape; got {}, expected [{}, {}]", where, h.shape(), B, hidden_size_);
  return h;
}

RNNCell::RNNCell(std::int64_t input_size, std::int64_t hidden_size, bool bias, RnnActivation act, Dtype dtype)
    : RecurrentCellBase(input_size, hidden_size, unroll::detail::rnn_tanh_step_traits.gates, bias, dtype),
      nonlinearity(act) {}

Tensor RNNCell::forward(const Tensor& x, const Tensor& h) const {
  const Tensor h0 = state_or_zeros("RNNCell", x, h);
  return rnn_step(linear(x, weight_ih, bias_ih), h0, weight_hh, bias_hh, nonlinearity);
}

LSTMCell::LSTMCell(std::int64_t input_size, std::int64_t hidden_size, bool bias, Dtype dtype)
    : RecurrentCellBase(input_size, hidden_size, unroll::detail::lstm_step_traits.gates, bias, dtype) {}

std::pair<Tensor, Tensor> LSTMCell::forward(const Tensor& x, const Tensor& h, const Tensor& c) const {
  const Tensor h0 = state_or_zeros("LSTMCell", x, h), c0 = state_or_zeros("LSTMCell", x, c);
  return lstm_step(linear(x, weight_ih, bias_ih), h0, c0, weight_hh, bias_hh);
}

GRUCell::GRUCell(std::int64_t input_size, std::int64_t hidden_size, bool bias, Dtype dtype)
    : RecurrentCellBase(input_size, hidden_size, unroll::detail::gru_step_traits.gates, bias, dtype) {}

Tensor GRUCell::forward(const Tensor& x, const Tensor& h) const {
  const Tensor h0 = state_or_zeros("GRUCell", x, h);
  return gru_step(linear(x, weight_ih, bias_ih), h0, weight_hh, bias_hh);
}

}  // namespace unroll::nn
