#include "checkpoint.hpp"

#include <fmt/format.h>

namespace unroll::dist {

void save_checkpoint(const Context& ctx, const std::string& path, Checkpoint checkpoint) {
  checkpoint.extra["dist.world_size"] = fmt::format("{}", ctx.world_size());
  // agree() is also the barrier: no rank goes on before the file is complete (or has failed everywhere).
  ctx.agree([&] {
    if (ctx.is_root()) unroll::save_checkpoint(path, checkpoint);
  });
}

Checkpoint load_checkpoint(const Context& ctx, const std::string& path) {
  Checkpoint c;
  ctx.agree([&] { c = unroll::load_checkpoint(path); });
  return c;
}

}  // namespace unroll::dist
