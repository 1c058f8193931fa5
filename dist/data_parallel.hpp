#pragma once
// Data-parallel training over processes (like PyTorch's DistributedDataParallel, on dist::Context):
//
//   dist::Context ctx;
//   Model model(...);                                   // same construction on every rank
//   dist::DataParallel dp(ctx, model.parameters());     // every rank now holds rank 0's parameters
//   optim::Adam opt(model.parameters(), {...});
//   for (...) {                                         // every rank loads the same global batch
//     double loss = dp.backward(B, [&](const autograd::Shard& s) {
//       return loss_fn(narrow(x, 1, s.begin, s.size()), narrow(y, 1, s.begin, s.size()));  // s: global rows
//     });
//     opt.step(); opt.zero_grad();                      // identical on every rank
//   }
//
// backward() cuts the global batch of B rows into the job's S shards (S = the ranks' shard counts summed;
// near-equal, as one process of S shards cuts it) and each rank runs its contiguous run of them as
// autograd::sharded_backward does, on its own threads; the shards are numbered across the whole job, so
// loss_fn sees global rows and every shard gets the rows and the dropout stream it would get in one process of
// S shards. (With one shard per rank the gradients are then bit-identical to that process's; with more, the
// shards' gradients are added in another grouping, so equal up to float summation order.) Then
// the gradients are summed over ranks in buckets of about `bucket_bytes` (few MPI calls for many small
// parameters), deterministically by default, so every rank's `.grad` equals the single-process gradient of the
// whole batch up to float summation order — and is bit-identical on every rank and from run to run.
//
// A rank whose loss_fn throws (bad input, a non-finite value under anomaly detection) makes every rank throw
// the same dist::RankError naming it; no gradient has been touched then.
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "../autograd/shard.hpp"
#include "../core/state_dict.hpp"
#include "context.hpp"

namespace unroll::dist {

struct DataParallelOptions {
  /// Shards (threads) per rank; 0: num_threads().
  int shards = 0;
  /// Gradients are packed and reduced this many bytes at a time (at least one parameter per bucket).
  std::int64_t bucket_bytes = std::int64_t{4} << 20;
  /// See ReduceOptions::deterministic. false: MPI_Allreduce (faster on some networks; ranks then may differ
  /// in the last bit and so drift apart over many steps — check_every catches that).
  bool deterministic = true;
  /// Every this many backward() calls, compare a checksum of the parameters across ranks and throw a
  /// StateError naming the ranks that differ from rank 0 (0: never).
  std::int64_t check_every = 0;
  /// Broadcast rank 0's parameters at construction (as PyTorch's DDP does). Turn off only when every rank
  /// provably starts from the same values.
  bool broadcast_at_start = true;
};

/// What the last backward() did (for benchmarks and logs).
struct DataParallelStats {
  double compute_seconds = 0;     ///< this rank's forward and backward of its slice
  double reduce_seconds = 0;      ///< packing, reducing and unpacking the gradients (and waiting for peers)
  std::int64_t bytes_reduced = 0; ///< gradient bytes per rank per step
  std::int64_t buckets = 0;       ///< MPI reductions of gradient buckets
};

class DataParallel {
 public:
  /// `params`: the model's parameters, the same list (shapes, order) on every rank. A collective.
  DataParallel(const Context& ctx, std::vector<Tensor> params, DataParallelOptions options = {});

  /// One data-parallel forward and backward of a global batch of `global_batch` rows: loss_fn(shard) returns
  /// that shard's mean loss (global rows [shard.begin, shard.end)); the parameters' `.grad` receives the
  /// gradient of the whole batch's mean loss (accumulating onto what is there, like backward()); returns the
  /// whole batch's mean loss, the same on every rank. A collective. `seed` as ShardOptions::seed (unset: one
  /// draw from the default generator, which is the same on every rank of a job seeded the same).
  double backward(std::int64_t global_batch, unroll::detail::FunctionRef<Tensor(const autograd::Shard&)> loss_fn,
                  std::optional<std::uint64_t> seed = std::nullopt);

  /// Rows [begin, end) of the global batch that this rank computes.
  std::pair<std::int64_t, std::int64_t> slice(std::int64_t global_batch) const;
  /// Throws StateError on every rank if any rank's parameters differ from rank 0's (bit for bit), naming them.
  void check_replicas() const;
  const DataParallelStats& last_stats() const { return stats_; }
  const Context& context() const { return ctx_; }

 private:
  void reduce_gradients();
  // How a global batch is cut: this rank's rows [begin, end), its shards' sizes, and its first shard's index
  // among the job's whole_shards.
  struct Plan {
    std::int64_t begin = 0, end = 0, first_shard = 0, whole_shards = 0;
    std::vector<std::int64_t> sizes;
  };
  Plan plan(std::int64_t global_batch) const;

  const Context& ctx_;
  std::vector<std::int64_t> shard_counts_;  ///< every rank's shards per step, in rank order
  std::vector<Tensor> params_;
  DataParallelOptions options_;
  DataParallelStats stats_;
  std::int64_t calls_ = 0;
};

/// Every rank takes `root`'s state dict (names, shapes, dtypes and values): an optimizer's state on resume, or
/// anything else a rank must not start without. A collective.
void broadcast_state_dict(const Context& ctx, StateDict& dict, int root = 0);

/// A checksum of the tensors' bytes (FNV-1a), for comparing replicas.
std::uint64_t checksum(std::span<const Tensor> tensors);

}  // namespace unroll::dist
