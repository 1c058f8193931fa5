#include "shard.hpp"

#include <algorithm>
#include <cstddef>
#include <string>

#include "../core/random.hpp"
#include "tape.hpp"

namespace unroll::autograd {
namespace {
// splitmix64's finaliser: turns (step seed, shard index) into unrelated generator seeds. (Seeds that differ
// by a multiple of splitmix64's increment would give overlapping streams, so the index is mixed in first.)
std::uint64_t mix(std::uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
std::uint64_t shard_seed(std::uint64_t step_seed, std::int64_t index) {
  return mix(step_seed ^ mix(static_cast<std::uint64_t>(index)));
}

// The calling thread's default generator runs the shard's stream for this object's lifetime (a thread that
// runs a shard may be the caller, or a TBB worker that runs another shard next).
class ShardGenerator {
 public:
  explicit ShardGenerator(std::uint64_t seed) : gen_(default_generator()), saved_(gen_.state()) {
    gen_.manual_seed(seed);
  }
  ~ShardGenerator() { gen_.set_state(saved_); }
  ShardGenerator(const ShardGenerator&) = delete;
  ShardGenerator& operator=(const ShardGenerator&) = delete;

 private:
  Generator& gen_;
  Generator::State saved_;
};

std::vector<Shard> split(const char* where, std::int64_t batch, const ShardOptions& options) {
  UNROLL_CHECK(batch >= 1, ValueError, "{}: empty batch; got batch={}, expected at least one row", where, batch);
  std::vector<std::int64_t> sizes = options.sizes;
  if (sizes.empty()) {
    UNROLL_CHECK(options.shards >= 0, ValueError,
                 "{}: negative shard count; got shards={}, expected >= 0 (0: one per thread)", where, options.shards);
    const std::int64_t n = std::min<std::int64_t>(options.shards == 0 ? num_threads() : options.shards, batch);
    for (std::int64_t i = 0; i < n; ++i) sizes.push_back(batch / n + (i < batch % n ? 1 : 0));
  } else {
    std::int64_t total = 0;
    for (std::int64_t s : sizes) {
      UNROLL_CHECK(s >= 1, ValueError, "{}: shard sizes must be positive; got sizes=[{}], expected each >= 1", where,
                   fmt::join(sizes, ", "));
      total += s;
    }
    UNROLL_CHECK(total == batch, ValueError,
                 "{}: shard sizes do not add up to the batch; got sizes=[{}] summing to {}, expected {}", where,
                 fmt::join(sizes, ", "), total, batch);
  }
  std::vector<Shard> shards;
  std::int64_t begin = 0;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    shards.push_back({begin, begin + sizes[i], static_cast<std::int64_t>(i), static_cast<std::int64_t>(sizes.size())});
    begin += sizes[i];
  }
  return shards;
}
}  // namespace

std::vector<Shard> make_shards(std::int64_t batch, const ShardOptions& options) {
  return split("make_shards", batch, options);
}

}  // namespace unroll::autograd

namespace unroll::detail {

double sharded_backward(std::int64_t batch, FunctionRef<Tensor(const autograd::Shard&)> loss_fn,
                        const autograd::ShardOptions& options) {
  using autograd::Shard;
  // A caller with gradients off would record nothing in the shards it runs itself, but the worker threads
  // (grad mode is per thread) would: refuse instead of doing half of each.
  UNROLL_CHECK(autograd::grad_enabled(), StateError,
               "sharded_backward: gradients are disabled; got a call inside a NoGradGuard, expected grad mode on");
  std::vector<Shard> shards = autograd::split("sharded_backward", batch, options);
  const autograd::ShardOptions::Part& part = options.part;
  const bool is_part = part.whole_rows > 0;
  if (is_part) {
    UNROLL_CHECK(part.first_row >= 0 && part.first_row + batch <= part.whole_rows && part.first_shard >= 0 &&
                     part.first_shard + static_cast<std::int64_t>(shards.size()) <= part.whole_shards,
                 ValueError,
                 "sharded_backward: the part does not fit in the whole batch; got rows [{}, {}) of {} and shards "
                 "[{}, {}) of {}, expected both inside",
                 part.first_row, part.first_row + batch, part.whole_rows, part.first_shard,
                 part.first_shard + static_cast<std::int64_t>(shards.size()), part.whole_shards);
    for (Shard& s : shards) {
      s.begin += part.first_row, s.end += part.first_row;
      s.index += part.first_shard, s.count = part.whole_shards;
    }
  }
  const double rows = static_cast<double>(is_part ? part.whole_rows : batch);
  const std::uint64_t step_seed = options.seed ? *options.seed : default_generator().next_u64();
  std::vector<autograd::LeafGrads> grads(shards.size());
  std::vector<double> losses(shards.size());
  // d(batch loss)/d(shard loss): rows in the shard / rows in the batch for means, 1 for sums
  std::vector<double> weights;
  for (const Shard& s : shards)
    weights.push_back(options.sum_loss ? 1.0 : static_cast<double>(s.size()) / rows);

  parallel_tasks(static_cast<std::int64_t>(shards.size()), [&](std::int64_t i) {
    const Shard& s = shards[static_cast<std::size_t>(i)];
    autograd::ShardGenerator rng(autograd::shard_seed(step_seed, s.index));
    autograd::Tape tape;  // this shard's graph only; destroyed (with what it saved) on this thread
    tape.collect_leaf_grads(&grads[static_cast<std::size_t>(i)]);
    const Tensor loss = loss_fn(s);
    UNROLL_CHECK(loss.defined() && loss.numel() == 1, ShapeError,
                 "sharded_backward: loss_fn must return the shard's loss; got {} for shard {} (rows [{}, {})), "
                 "expected one element",
                 loss.defined() ? fmt::format("shape {}", loss.shape()) : std::string("an undefined tensor"), s.index,
                 s.begin, s.end);
    UNROLL_CHECK(loss.requires_grad(), StateError,
                 "sharded_backward: the loss of shard {} has no recorded history; got a constant, expected a loss "
                 "computed from tensors that require grad",
                 s.index);
    losses[static_cast<std::size_t>(i)] = loss.item();
    tape.backward(loss, full(loss.shape(), weights[static_cast<std::size_t>(i)], loss.dtype()));
  });

  // Every shard succeeded: add their gradients in shard order (fixed, whatever thread finished first).
  double total = 0;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    grads[i].apply();
    total += weights[i] * losses[i];
  }
  return total;
}

}  // namespace unroll::detail
