#include "random.hpp"

#include <bit>
#include <cmath>
#include <numbers>

namespace unroll {
namespace {
std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
// Fills a new tensor with next() converted to its dtype; with an upper bound `below`, values that the
// conversion rounds up to it (a double just under 1 becomes 1.0f) are moved to the next value down.
template <class F>
Tensor fill_with(const Shape& shape, Dtype dtype, F&& next, double below = INFINITY) {
  Tensor t = Tensor::empty(shape, dtype);
  dispatch(dtype, [&]<class T>(T*) {
    T* p = static_cast<T*>(t.raw());
    for (std::int64_t i = 0, n = t.numel(); i < n; ++i) {
      p[i] = static_cast<T>(next());
      if constexpr (std::is_floating_point_v<T>)
        if (static_cast<double>(p[i]) >= below) p[i] = std::nextafter(static_cast<T>(below), T(-INFINITY));
    }
  });
  return t;
}
}  // namespace

void Generator::manual_seed(std::uint64_t seed) {
  for (auto& word : s_) word = splitmix64(seed);
  has_spare_ = false;
  spare_ = 0;
}

std::uint64_t Generator::next_u64() {
  const std::uint64_t result = std::rotl(s_[1] * 5, 7) * 9;
  const std::uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = std::rotl(s_[3], 45);
  return result;
}

double Generator::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

double Generator::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = uniform();
  while (u1 <= 0.0) u1 = uniform();  // log(0) would be -inf
  const double u2 = uniform();
  const double r = std::sqrt(-2.0 * std::log(u1));
  spare_ = r * std::sin(2.0 * std::numbers::pi * u2);
  has_spare_ = true;
  return r * std::cos(2.0 * std::numbers::pi * u2);
}

Generator& default_generator() {
  thread_local Generator gen;
  return gen;
}
void manual_seed(std::uint64_t seed) { default_generator().manual_seed(seed); }

Tensor uniform(const Shape& shape, double low, double high, Dtype dtype, Generator& gen) {
  detail::OpScope op_scope("uniform");
  UNROLL_CHECK(low <= high, ValueError, "uniform: empty range; got low={} and high={}, expected low <= high", low,
               high);
  if (low == high) return full(shape, low, dtype);
  return fill_with(
      shape, dtype, [&] { return low + (high - low) * gen.uniform(); }, high);
}
Tensor rand(const Shape& shape, Dtype dtype, Generator& gen) { return uniform(shape, 0.0, 1.0, dtype, gen); }
Tensor randn(const Shape& shape, Dtype dtype, Generator& gen, double mean, double std) {
  detail::OpScope op_scope("randn");
  UNROLL_CHECK(std >= 0, ValueError, "randn: negative standard deviation; got {}, expected >= 0", std);
  return fill_with(shape, dtype, [&] { return mean + std * gen.normal(); });
}
Tensor bernoulli(const Shape& shape, double p, Dtype dtype, Generator& gen) {
  UNROLL_CHECK(p >= 0 && p <= 1, ValueError, "bernoulli: probability out of range; got {}, expected in [0, 1]", p);
  return fill_with(shape, dtype, [&] { return gen.uniform() < p ? 1.0 : 0.0; });
}
Tensor randint(const Shape& shape, std::int64_t low, std::int64_t high, Generator& gen) {
  UNROLL_CHECK(low < high, ValueError, "randint: empty range; got low={} and high={}, expected low < high", low, high);
  // unsigned arithmetic: high - low may not fit in int64
  const std::uint64_t span = static_cast<std::uint64_t>(high) - static_cast<std::uint64_t>(low);
  return fill_with(shape, Dtype::int64,
                   [&] { return static_cast<std::int64_t>(static_cast<std::uint64_t>(low) + gen.next_u64() % span); });
}

}  // namespace unroll
