#include "init.hpp"

#include <cmath>
#include <cstring>

#include "../core/error.hpp"

namespace unroll::nn::init {
namespace {
// Writes `values` (same shape, float64 or the tensor's dtype) into t's storage.
void assign(Tensor& t, const Tensor& values) {
  UNROLL_CHECK(t.defined() && is_floating(t.dtype()), DtypeError,
               "init: expected a defined floating-point tensor; got {}",
               t.defined() ? fmt::format("{}", t.dtype()) : "undefined");
  const Tensor v = values.dtype() == t.dtype() ? values : convert(values, t.dtype());
  std::memcpy(t.raw(), v.raw(), static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype()));
}
std::int64_t fan_for(const Tensor& t, std::string_view mode) {
  const auto [in, out] = fans(t);
  UNROLL_CHECK(mode == "fan_in" || mode == "fan_out", ValueError,
               "init: unknown fan mode; got '{}', expected fan_in or fan_out", mode);
  return mode == "fan_in" ? in : out;
}
}  // namespace

std::pair<std::int64_t, std::int64_t> fans(const Tensor& w) {
  UNROLL_CHECK(w.dim() >= 2, ValueError, "init: fan in and fan out need a tensor of at least 2 dims; got {}",
               w.shape());
  const std::int64_t receptive = w.shape().numel(2, w.dim());
  return {w.shape()[1] * receptive, w.shape()[0] * receptive};
}

double gain(std::string_view nonlinearity, double param) {
  if (nonlinearity == "linear" || nonlinearity == "sigmoid" || nonlinearity == "identity") return 1.0;
  if (nonlinearity == "tanh") return 5.0 / 3.0;
  if (nonlinearity == "relu") return std::sqrt(2.0);
  if (nonlinearity == "leaky_relu") return std::sqrt(2.0 / (1.0 + param * param));
  if (nonlinearity == "selu") return 3.0 / 4.0;
  detail::throw_error<ValueError>(
      "init::gain: unknown nonlinearity; got '{}', expected linear, sigmoid, tanh, relu, "
      "leaky_relu or selu",
      nonlinearity);
}

void uniform_(Tensor& t, double low, double high, Generator& gen) {
  UNROLL_CHECK(low <= high, ValueError, "init::uniform_: empty range; got low={} high={}, expected low <= high", low,
               high);
  assign(t, uniform(t.shape(), low, high, Dtype::float64, gen));
}
void normal_(Tensor& t, double mean, double std, Generator& gen) {
  UNROLL_CHECK(std >= 0, ValueError, "init::normal_: negative std; got {}, expected std >= 0", std);
  assign(t, randn(t.shape(), Dtype::float64, gen, mean, std));
}
void constant_(Tensor& t, double value) { assign(t, full(t.shape(), value, Dtype::float64)); }
void zeros_(Tensor& t) { constant_(t, 0.0); }
void ones_(Tensor& t) { constant_(t, 1.0); }

void xavier_uniform_(Tensor& t, double g, Generator& gen) {
  const auto [in, out] = fans(t);
  const double a = g * std::sqrt(6.0 / static_cast<double>(in + out));
  uniform_(t, -a, a, gen);
}
void xavier_normal_(Tensor& t, double g, Generator& gen) {
  const auto [in, out] = fans(t);
  normal_(t, 0.0, g * std::sqrt(2.0 / static_cast<double>(in + out)), gen);
}
void kaiming_uniform_(Tensor& t, double a, std::string_view fan_mode, std::string_view nonlinearity, Generator& gen) {
  const double bound = gain(nonlinearity, a) * std::sqrt(3.0 / static_cast<double>(fan_for(t, fan_mode)));
  uniform_(t, -bound, bound, gen);
}
void kaiming_normal_(Tensor& t, double a, std::string_view fan_mode, std::string_view nonlinearity, Generator& gen) {
  normal_(t, 0.0, gain(nonlinearity, a) / std::sqrt(static_cast<double>(fan_for(t, fan_mode))), gen);
}

}  // namespace unroll::nn::init
