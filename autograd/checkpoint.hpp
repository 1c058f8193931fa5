#pragma once
// Gradient checkpointing (like torch.utils.checkpoint): run a function of tensors without keeping what its
// ops save for backward, and run it again, recording this time, when backward reaches it. A long unrolled
// recurrence split into segments keeps only each segment's starting state and recomputes one segment at a
// time during backward: peak memory O(T/k + k) steps instead of O(T), for about one extra forward pass.
//
//   auto out = autograd::checkpoint([&](std::span<const Tensor> in) { return std::vector{f(in[0], in[1])}; },
//                                   {x, h});
//
// The checkpoint is one tape node: its inputs are the `inputs` given; its outputs what fn returns. Parameters
// fn reads without taking them as inputs (a cell's weights) get their gradients from the recomputation, sent
// where the tape sends every leaf's gradient (their `.grad`, or a batch shard's collection). The random
// generators' state is saved with the node and restored for the recomputation, so dropout draws the same
// masks twice: the calling thread's default generator always, others when named in the options.
//
// fn must be deterministic given its inputs and the generators, and it, with everything it refers to, must
// stay alive until backward has run (the node keeps fn itself). Under a NoGradGuard (or with grad mode
// off) checkpoint just calls fn.
#include <functional>
#include <span>
#include <vector>

#include "../core/random.hpp"
#include "../core/tensor.hpp"

namespace unroll::autograd {

struct CheckpointOptions {
  /// Generators besides the calling thread's default one whose state the recomputation replays.
  std::vector<Generator*> generators{};
};

using CheckpointFn = std::function<std::vector<Tensor>(std::span<const Tensor> inputs)>;

/// fn(inputs), recorded as one node that recomputes fn in backward instead of keeping its intermediate values.
/// The outputs must be defined floating-point tensors; the recomputation must return the same shapes (else a
/// StateError).
std::vector<Tensor> checkpoint(CheckpointFn fn, std::span<const Tensor> inputs, const CheckpointOptions& options = {});

/// The bytes of storage `fn` leaves allocated on the calling thread (at least 1): what one step keeps for
/// backward, when fn runs it. fn records on a tape of its own, dropped after, and the default generator (and
/// `generators`) are put back as they were, so measuring does not move the streams the real run draws from.
std::int64_t measure_kept_bytes(const std::function<void()>& fn, const std::vector<Generator*>& generators = {});

}  // namespace unroll::autograd
