#pragma once
// The model fuzz_nn_load loads into, and make_fuzz_seeds saves (as is and in mismatched variants): a Linear,
// a one-layer LSTM and an int64 buffer, so a file can miss names, have extra ones, mismatch a shape, hold
// float64 where float32 is expected (converted) or a float where an integer is expected (refused).
#include <cstdint>

#include <unroll/nn/layers.hpp>
#include <unroll/nn/rnn.hpp>

namespace unroll::fuzz {

inline nn::RecurrentOptions small_lstm_options(std::int64_t hidden, Dtype dtype) {
  nn::RecurrentOptions o;
  o.input_size = 4;
  o.hidden_size = hidden;
  o.dtype = dtype;
  return o;
}

struct SmallModel : nn::Module {
  nn::Linear proj;
  nn::LSTM rnn;
  Tensor steps = zeros({1}, Dtype::int64);  ///< a counter, as a training loop might keep

  explicit SmallModel(std::int64_t hidden = 3, Dtype dtype = Dtype::float32)
      : proj(3, 4, true, dtype), rnn(small_lstm_options(hidden, dtype)) {
    register_module("proj", proj);
    register_module("rnn", rnn);
    register_buffer("steps", steps);
  }
};

}  // namespace unroll::fuzz
