// load_checkpoint on arbitrary bytes: a checkpoint that can resume a run, or an IoError naming the file.
// Seeds: corpus/fuzz_checkpoint (checkpoints with and without model, optimizer, scheduler and extra entries).
#include <cmath>
#include <cstdint>

#include <unroll/core/checkpoint.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static unroll::fuzz::InputFile file("checkpoint");
  const std::string& path = file.write(data, size);
  unroll::Checkpoint c;
  if (!unroll::fuzz::expect_ok_or<unroll::IoError>("load_checkpoint", path, [&] { c = unroll::load_checkpoint(path); }))
    return 0;
  // Accepted: the generator state must be one a Generator can have produced. xoshiro's all-zero state is a
  // fixed point (every draw would be 0), and Box-Muller's spare value is always finite.
  if (c.rng.s[0] == 0 && c.rng.s[1] == 0 && c.rng.s[2] == 0 && c.rng.s[3] == 0)
    unroll::fuzz::fail("load_checkpoint: accepted an all-zero generator state");
  if (c.rng.has_spare && !std::isfinite(c.rng.spare_normal))
    unroll::fuzz::fail(fmt::format("load_checkpoint: accepted a non-finite spare normal {}", c.rng.spare_normal));
  for (const auto* dict : {&c.model, &c.optimizer, &c.scheduler, &c.extra_tensors})
    for (const auto& [name, t] : *dict)
      if (!t.defined()) unroll::fuzz::fail(fmt::format("load_checkpoint: entry '{}' is undefined", name));
  return 0;
}
