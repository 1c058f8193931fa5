#include "regularize.hpp"

#include <cmath>
#include <string>

#include "../ops/index.hpp"
#include "../ops/reduce.hpp"
#include "../ops/shape_ops.hpp"

namespace unroll::nn {

namespace detail {
void check_probability(const char* where, double p) {
  UNROLL_CHECK(p >= 0 && p < 1, ValueError, "{}: probability out of range; got p={}, expected 0 <= p < 1", where, p);
}
}  // namespace detail

namespace {
void check_weight(const char* where, const char* name, double w) {
  UNROLL_CHECK(std::isfinite(w) && w >= 0, ValueError, "{}: {} out of range; got {}={}, expected a finite value >= 0",
               where, name, name, w);
}
}  // namespace

Tensor dropout_mask(const Shape& shape, double p, Dtype dtype, Generator& gen) {
  detail::check_probability("dropout_mask", p);
  Tensor keep = bernoulli(shape, 1 - p, dtype, gen);
  return p == 0 ? keep : mul(keep, 1.0 / (1 - p));
}

Tensor locked_dropout(const Tensor& x, double p, bool training, Generator& gen) {
  detail::check_probability("locked_dropout", p);
  UNROLL_CHECK(x.defined() && x.dim() >= 2, ShapeError, "locked_dropout: input must be [T, B, ...]; got x={}",
               x.defined() ? fmt::format("{}", x.shape()) : std::string("undefined"));
  if (!training || p == 0) return x;
  Shape one_step = x.shape();
  one_step[0] = 1;
  return mul(x, dropout_mask(one_step, p, x.dtype(), gen));  // broadcast over T
}

LockedDropout::LockedDropout(double p_) : p(p_) { detail::check_probability("LockedDropout", p); }

Tensor LockedDropout::forward(const Tensor& x) const {
  return locked_dropout(x, p, is_training(), generator ? *generator : default_generator());
}

Tensor embedding_dropout(const Embedding& embed, const Tensor& indices, double p, bool training, Generator& gen) {
  detail::check_probability("embedding_dropout", p);
  if (!training || p == 0) return embed(indices);
  const Tensor& w = embed.weight;
  const Tensor rows = dropout_mask({w.shape()[0], 1}, p, w.dtype(), gen);  // one draw per word
  return embedding(mul(w, rows), indices, embed.padding_idx);
}

Tensor zoneout(const Tensor& previous, const Tensor& next, double p, bool training, Generator& gen) {
  detail::check_probability("zoneout", p);
  UNROLL_CHECK(previous.defined() && next.defined() && previous.shape() == next.shape(), ShapeError,
               "zoneout: the previous and the next state differ in shape; got {} and {}",
               previous.defined() ? fmt::format("{}", previous.shape()) : std::string("undefined"),
               next.defined() ? fmt::format("{}", next.shape()) : std::string("undefined"));
  if (p == 0) return next;
  if (!training) return add(mul(previous, p), mul(next, 1 - p));
  const Tensor keep_previous = bernoulli(next.shape(), p, next.dtype(), gen);  // d: 1 keeps the old value
  return where(keep_previous, previous, next);
}

Tensor activation_regularization(const Tensor& output, double alpha) {
  check_weight("activation_regularization", "alpha", alpha);
  UNROLL_CHECK(output.defined() && output.numel() > 0, ShapeError,
               "activation_regularization: empty output; got {}, expected at least one element",
               output.defined() ? fmt::format("{}", output.shape()) : std::string("undefined"));
  return mul(mean(mul(output, output)), alpha);
}

Tensor temporal_activation_regularization(const Tensor& output, double beta) {
  check_weight("temporal_activation_regularization", "beta", beta);
  UNROLL_CHECK(output.defined() && output.dim() >= 1 && output.shape()[0] >= 2 && output.numel() > 0, ShapeError,
               "temporal_activation_regularization: output must be [T, ...] with T >= 2; got {}",
               output.defined() ? fmt::format("{}", output.shape()) : std::string("undefined"));
  const std::int64_t T = output.shape()[0];
  const Tensor step = sub(narrow(output, 0, 1, T - 1), narrow(output, 0, 0, T - 1));
  return mul(mean(mul(step, step)), beta);
}

}  // namespace unroll::nn
