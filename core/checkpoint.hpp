#pragma once
// Training checkpoints: everything a run needs to resume bit-for-bit — model, optimizer and schedule state,
// the step counter and the random generator — in ONE safetensors file, written atomically (a crash
// mid-write leaves the previous checkpoint intact). Layout, so other tools can read it:
//   tensors   "model.<name>", "optimizer.<name>", "scheduler.<name>", "extra.<name>" (the caller's own),
//             "rng.s" (I64 [4], the xoshiro words' bits), "rng.spare_normal" (F64 0-d), "rng.has_spare" (I64 0-d)
//   metadata  "unroll.format" = "checkpoint-1", "unroll.step" = decimal step, plus the user's `extra` entries
#include <cstdint>
#include <map>
#include <string>

#include "random.hpp"
#include "state_dict.hpp"

namespace unroll {

/// The state of a training run at one step.
struct Checkpoint {
  StateDict model;      ///< Module::state_dict()
  StateDict optimizer;  ///< the optimizer's state dict
  StateDict scheduler;  ///< the learning-rate schedule's state dict
  std::int64_t step = 0;
  Generator::State rng = Generator().state();  ///< a valid stream by default (an all-zero xoshiro state is not)
  std::map<std::string, std::string> extra;    ///< free-form strings; keys starting with "unroll." are reserved
  /// The caller's own tensors, e.g. the hidden state truncated BPTT carries from one chunk to the next, so
  /// a resumed run continues exactly where it stopped.
  StateDict extra_tensors;
};

/// Checkpoint -> one safetensors file at `path`, replaced atomically. ValueError for a reserved `extra` key or
/// an undefined tensor; IoError (naming the path and the system's reason) if it cannot be written.
void save_checkpoint(const std::string& path, const Checkpoint& checkpoint);

/// A file written by save_checkpoint -> the Checkpoint, bit-exact. IoError naming the file for anything
/// load_safetensors rejects, and for a safetensors file that is not an unroll checkpoint (no format tag,
/// missing or malformed step or rng tensors, tensors outside model./optimizer./scheduler./rng.).
Checkpoint load_checkpoint(const std::string& path);

}  // namespace unroll
