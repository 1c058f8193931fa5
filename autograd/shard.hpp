#pragma once
// Batch parallelism: a minibatch split into shards that run forward and backward at the same time, each on
// its own thread with its own tape and its own gradient buffers, combined at the end in a fixed order.
//
//   double loss = autograd::sharded_backward(B, [&](const autograd::Shard& s) {
//     Tensor x = narrow(inputs, 1, s.begin, s.size()), y = narrow(targets, 1, s.begin, s.size());
//     return cross_entropy(model(x), y);  // this shard's MEAN loss
//   });
//   opt.step();
//
// The result equals `loss_fn(whole batch).backward()` up to float summation order: each shard's backward is
// seeded with size/batch, so the shards' mean losses combine into the whole batch's mean. Gradients are
// added into every leaf's `.grad` (accumulating, like backward()) in shard order 0, 1, 2, ... after all
// shards have finished, so the result does not depend on which thread ran what, or when.
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/parallel.hpp"
#include "../core/tensor.hpp"

namespace unroll::autograd {

/// One shard: rows [begin, end) of the minibatch (along whatever dimension the caller's batch dim is).
struct Shard {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t index = 0;  ///< 0 .. count-1, in batch order
  std::int64_t count = 1;  ///< number of shards in this step
  /// Rows in this shard (end - begin, at least 1).
  std::int64_t size() const { return end - begin; }
};

struct ShardOptions {
  /// Number of shards; 0: num_threads(). More shards than rows gives one row per shard.
  int shards = 0;
  /// Explicit shard sizes in batch order (each >= 1, summing to the batch); overrides `shards` when given.
  std::vector<std::int64_t> sizes{};
  /// Seed of the shards' random streams (dropout). Unset: one draw from the caller's default generator, so
  /// successive steps differ and a run is reproducible from manual_seed() for a given shard count.
  std::optional<std::uint64_t> seed{};
  /// loss_fn returns its shard's SUM over rows instead of the mean: each shard's backward is seeded with 1
  /// and the result is the batch's sum (the gradient of sum(outputs), say).
  bool sum_loss = false;
  /// When this batch is one part of a larger one that other processes compute (dist::DataParallel): the
  /// whole batch's rows (each shard's mean loss is weighted by size / whole_rows, so the parts' gradients
  /// add up to the whole batch's), this part's first row in it (added to every Shard's begin and end, so
  /// loss_fn narrows the whole batch as a single process would), its first shard's index among the whole
  /// batch's shards and their number (Shard::index and Shard::count; each shard's random stream follows its
  /// index, so N processes of k shards draw what one process of N·k shards draws). Zero: not a part.
  struct Part {
    std::int64_t whole_rows = 0;
    std::int64_t first_row = 0;
    std::int64_t first_shard = 0;
    std::int64_t whole_shards = 0;
  } part{};
};

/// The shards of a batch of `batch` rows: `options.sizes`, or `shards` near-equal contiguous ranges (the
/// first batch % shards one row longer). ValueError on a bad batch, shard count or size list.
std::vector<Shard> make_shards(std::int64_t batch, const ShardOptions& options = {});

}  // namespace unroll::autograd

namespace unroll::detail {
double sharded_backward(std::int64_t batch, FunctionRef<Tensor(const autograd::Shard&)> loss_fn,
                        const autograd::ShardOptions& options);
}  // namespace unroll::detail

namespace unroll::autograd {

/// Runs `loss_fn(shard) -> that shard's mean loss (one element)` for every shard at the same time (up to
/// num_threads() threads) and backpropagates each; returns the whole batch's mean loss (with sum_loss: the
/// shards' losses are sums and so is the result). Each shard runs with
/// a fresh tape, gradients held per shard (no `.grad` is written until every shard succeeded), BLAS on one
/// thread, serial elementwise loops, and the thread's default generator seeded for that shard.
/// loss_fn runs concurrently: it may read parameters and shared inputs, and write only per-shard state
/// (e.g. carried hidden states indexed by shard.index). If shards throw, the exception of the first one (by
/// index) reaches the caller unchanged and no gradient or parameter has been touched.
template <class F>
double sharded_backward(std::int64_t batch, F&& loss_fn, const ShardOptions& options = {}) {
  static_assert(std::is_invocable_r_v<Tensor, F&, const Shard&>, "loss_fn must be callable as Tensor(const Shard&)");
  return unroll::detail::sharded_backward(batch, unroll::detail::FunctionRef<Tensor(const Shard&)>(loss_fn), options);
}

}  // namespace unroll::autograd
