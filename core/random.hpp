#pragma once
// Seeded random numbers. A Generator is a small value (xoshiro256**) whose whole state can be saved and
// restored, so a run is reproducible from its seed and a checkpoint can resume the exact stream.
#include <array>
#include <cstdint>

#include "tensor.hpp"

namespace unroll {

class Generator {
 public:
  explicit Generator(std::uint64_t seed = 0x5eed) { manual_seed(seed); }
  /// Restarts the stream from `seed`.
  void manual_seed(std::uint64_t seed);
  std::uint64_t next_u64();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Standard normal (Box-Muller; the second value of each pair is kept for the next call).
  double normal();

  struct State {
    std::array<std::uint64_t, 4> s;
    double spare_normal;
    bool has_spare;
  };
  State state() const { return {s_, spare_, has_spare_}; }
  void set_state(const State& st) {
    s_ = st.s;
    spare_ = st.spare_normal;
    has_spare_ = st.has_spare;
  }

 private:
  std::array<std::uint64_t, 4> s_{};
  double spare_ = 0;
  bool has_spare_ = false;
};

/// The calling thread's default generator (seeded with manual_seed, or a fixed seed if never seeded).
Generator& default_generator();
/// Reseeds the calling thread's default generator.
void manual_seed(std::uint64_t seed);

/// Shape -> uniform values in [low, high).
Tensor uniform(const Shape& shape, double low, double high, Dtype dtype = Dtype::float32,
               Generator& gen = default_generator());
/// Shape -> uniform values in [0, 1).
Tensor rand(const Shape& shape, Dtype dtype = Dtype::float32, Generator& gen = default_generator());
/// Shape -> normal values with the given mean and standard deviation.
Tensor randn(const Shape& shape, Dtype dtype = Dtype::float32, Generator& gen = default_generator(), double mean = 0.0,
             double std = 1.0);
/// Shape -> 1 with probability p, else 0.
Tensor bernoulli(const Shape& shape, double p, Dtype dtype = Dtype::float32, Generator& gen = default_generator());
/// Shape -> integers uniform in [low, high), int64.
Tensor randint(const Shape& shape, std::int64_t low, std::int64_t high, Generator& gen = default_generator());

}  // namespace unroll
