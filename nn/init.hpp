#pragma once
// Parameter initialisation, in place and unrecorded (like torch.nn.init). Fan-in/fan-out follow PyTorch:
// for a weight [out, in, ...], fan_in = in * receptive field, fan_out = out * receptive field.
#include <cstdint>
#include <string_view>
#include <utility>

#include "../core/random.hpp"
#include "../core/tensor.hpp"

namespace unroll::nn::init {

/// (fan_in, fan_out) of a weight with at least 2 dims; ValueError for fewer.
std::pair<std::int64_t, std::int64_t> fans(const Tensor& w);
/// PyTorch's calculate_gain: "linear", "sigmoid", "tanh" (5/3), "relu" (sqrt 2), "leaky_relu" (param = slope).
double gain(std::string_view nonlinearity, double param = 0.01);

/// U(low, high).
void uniform_(Tensor& t, double low, double high, Generator& gen = default_generator());
/// N(mean, std^2).
void normal_(Tensor& t, double mean = 0.0, double std = 1.0, Generator& gen = default_generator());
/// Every element = value.
void constant_(Tensor& t, double value);
void zeros_(Tensor& t);
void ones_(Tensor& t);
/// U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out)).
void xavier_uniform_(Tensor& t, double gain = 1.0, Generator& gen = default_generator());
/// N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out)).
void xavier_normal_(Tensor& t, double gain = 1.0, Generator& gen = default_generator());
/// U(-b, b) with b = gain(leaky_relu, a) * sqrt(3 / fan_in) (fan_out when fan_mode is "fan_out").
/// a = sqrt(5) is what PyTorch's Linear uses, giving b = 1 / sqrt(fan_in).
void kaiming_uniform_(Tensor& t, double a = 0.0, std::string_view fan_mode = "fan_in",
                      std::string_view nonlinearity = "leaky_relu", Generator& gen = default_generator());
/// N(0, std^2) with std = gain / sqrt(fan).
void kaiming_normal_(Tensor& t, double a = 0.0, std::string_view fan_mode = "fan_in",
                     std::string_view nonlinearity = "leaky_relu", Generator& gen = default_generator());

}  // namespace unroll::nn::init
