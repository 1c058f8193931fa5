#pragma once
// Elementwise ops: arithmetic with NumPy broadcasting, tensor–scalar forms, activations, logaddexp, clamp,
// where/masked_fill, dropout and the differentiable dtype cast. Operands must share a floating dtype.
#include <optional>

#include "../core/random.hpp"
#include "../core/tensor.hpp"

namespace unroll {

/// a [..], b [..] -> broadcast shape.  Backward: da = sum_to(g), db = sum_to(g).
Tensor add(const Tensor& a, const Tensor& b);
/// a - b (broadcast).
Tensor sub(const Tensor& a, const Tensor& b);
/// a * b (broadcast).
Tensor mul(const Tensor& a, const Tensor& b);
/// a / b (broadcast).
Tensor div(const Tensor& a, const Tensor& b);

/// x + s, x - s, s - x, x * s, x / s, s / x (same shape as x).
Tensor add(const Tensor& x, double s);
Tensor sub(const Tensor& x, double s);
Tensor rsub(const Tensor& x, double s);
Tensor mul(const Tensor& x, double s);
Tensor div(const Tensor& x, double s);
Tensor rdiv(const Tensor& x, double s);

inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& x, double s) { return add(x, s); }
inline Tensor operator+(double s, const Tensor& x) { return add(x, s); }
inline Tensor operator-(const Tensor& x, double s) { return sub(x, s); }
inline Tensor operator-(double s, const Tensor& x) { return rsub(x, s); }
inline Tensor operator*(const Tensor& x, double s) { return mul(x, s); }
inline Tensor operator*(double s, const Tensor& x) { return mul(x, s); }
inline Tensor operator/(const Tensor& x, double s) { return div(x, s); }
inline Tensor operator/(double s, const Tensor& x) { return rdiv(x, s); }

/// Unary maps, shape-preserving.
Tensor neg(const Tensor& x);
inline Tensor operator-(const Tensor& x) { return neg(x); }
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor abs(const Tensor& x);
/// x ** exponent.
Tensor pow(const Tensor& x, double exponent);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
/// log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as PyTorch).
Tensor softplus(const Tensor& x, double beta = 1.0, double threshold = 20.0);
/// log(sigmoid(x)) = -softplus(-x), computed as min(x, 0) - log1p(e^-|x|) so it is finite for any finite x;
/// same shape.  Backward: dx = g sigmoid(-x).
Tensor logsigmoid(const Tensor& x);
/// x sigmoid(x) (SiLU, "swish"); same shape.  Backward: dx = g s (1 + x (1 - s)), s = sigmoid(x).
Tensor silu(const Tensor& x);
/// Which form of GELU to compute, as PyTorch's `approximate` argument ("none" or "tanh").
enum class GeluApproximation { none, tanh };
/// x Phi(x) with Phi the standard normal CDF (none: the exact erf form, PyTorch's default), or with Phi
/// replaced by (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2 (tanh); same shape.
Tensor gelu(const Tensor& x, GeluApproximation approximate = GeluApproximation::none);
/// a [..], b [..] -> broadcast shape: log(e^a + e^b), stable (max + log1p(e^-|a-b|)).
/// Backward: da = sum_to(g e^(a-y)), db = sum_to(g e^(b-y)).
Tensor logaddexp(const Tensor& a, const Tensor& b);
/// Limits x to [min, max]; either bound may be absent. Gradient passes where min <= x <= max.
Tensor clamp(const Tensor& x, std::optional<double> min, std::optional<double> max);

/// cond ? a : b elementwise (cond: any dtype, nonzero is true; all three broadcast).
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);
/// x with `value` where mask is nonzero (mask broadcasts to x's shape).
Tensor masked_fill(const Tensor& x, const Tensor& mask, double value);

/// Inverted dropout: in training, zeroes each element with probability p and scales the rest by
/// 1/(1-p); outside training (or p == 0) returns x unchanged.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen = default_generator());

/// Differentiable dtype conversion between float32 and float64 (int64 -> float is allowed, not recorded).
Tensor to(const Tensor& x, Dtype dtype);

/// In place, not recorded: x += alpha * y (same shape and dtype). For parameter updates: StateError if x
/// requires grad while grad mode is on (wrap updates in a NoGradGuard, as with torch.no_grad()).
void add_(Tensor& x, const Tensor& y, double alpha = 1.0);
/// In place, not recorded: x *= s. Same rule as add_.
void mul_(Tensor& x, double s);
/// In place, not recorded: x = clamp(x, min, max) — a constraint on a parameter after an optimizer step (e.g.
/// IndRNN's bound on |u|). Same rule as add_; ValueError if min > max.
void clamp_(Tensor& x, std::optional<double> min, std::optional<double> max);
/// In place, not recorded: x's elements become src's (same shape; float32 <-> float64 and int64 -> float
/// convert), e.g. to set a parameter to given values. Same rule as add_.
void copy_(Tensor& x, const Tensor& src);

namespace detail {
/// Sums g over the dims it was broadcast along, so the result has `shape` (not recorded).
Tensor sum_to_reduce(const Tensor& g, const Shape& shape);
inline Tensor sum_to(const Tensor& g, const Shape& shape) { return g.shape() == shape ? g : sum_to_reduce(g, shape); }
/// Checks that x is a defined floating-point tensor.
void check_floating(const char* where, const Tensor& x);
/// Checks that a and b are defined floating-point tensors of one dtype.
void check_floating_same(const char* where, const Tensor& a, const Tensor& b);
}  // namespace detail

}  // namespace unroll
