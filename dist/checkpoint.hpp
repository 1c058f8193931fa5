#pragma once
// Training checkpoints in a data-parallel job: one file, written by rank 0 (atomically, as unroll::save_checkpoint:
// a crash or a killed rank never leaves a half-written file in place of the previous one), read by every rank.
//
// Every rank's parameters, optimizer state and default generator are identical in a data-parallel job
// (dist::DataParallel), so rank 0's copy is the job's. Resuming with another world size works: the global batch
// and the data order are the caller's and do not change; what changes is which rows each rank computes and
// how the batch is cut into shards, so gradients agree with the uninterrupted run up to float summation order
// (and dropout masks, drawn per shard, differ) instead of bit for bit. The world size that wrote the file is
// kept in its extra entry "dist.world_size". Only rank 0's machine reads and writes the file.
#include <functional>
#include <string>

#include "../core/checkpoint.hpp"
#include "context.hpp"

namespace unroll::dist {

/// Rank 0 writes `checkpoint` to `path`; every rank returns once the file is complete. A failure to write stops
/// every rank (RankError naming rank 0 and the IoError's message). A collective.
void save_checkpoint(const Context& ctx, const std::string& path, Checkpoint checkpoint);

/// Rank 0 reads `path` (after `before`, e.g. a check that it exists with the caller's own message) and sends
/// the checkpoint to every rank: only rank 0's machine needs the file. A failure stops every rank (RankError
/// naming rank 0 and the error's message). A collective.
Checkpoint load_checkpoint(const Context& ctx, const std::string& path, const std::function<void()>& before = {});

}  // namespace unroll::dist
