#include "checkpoint.hpp"

#include <cstring>

#include <fmt/format.h>

#include "data_parallel.hpp"

namespace unroll::dist {

void save_checkpoint(const Context& ctx, const std::string& path, Checkpoint checkpoint) {
  checkpoint.extra["dist.world_size"] = fmt::format("{}", ctx.world_size());
  // agree() is also the barrier: no rank goes on before the file is complete (or has failed everywhere).
  ctx.agree([&] {
    if (ctx.is_root()) unroll::save_checkpoint(path, checkpoint);
  });
}

Checkpoint load_checkpoint(const Context& ctx, const std::string& path, const std::function<void()>& before) {
  Checkpoint c;
  ctx.agree([&] {
    if (!ctx.is_root()) return;
    if (before) before();
    c = unroll::load_checkpoint(path);
  });
  if (ctx.world_size() == 1) return c;
  // Rank 0's copy to everyone: the other machines need no copy of the file.
  broadcast_state_dict(ctx, c.model);
  broadcast_state_dict(ctx, c.optimizer);
  broadcast_state_dict(ctx, c.scheduler);
  broadcast_state_dict(ctx, c.extra_tensors);
  std::string fixed(sizeof(c.step) + sizeof(c.rng.s) + sizeof(c.rng.spare_normal) + 1, '\0');
  if (ctx.is_root()) {
    char* p = fixed.data();
    std::memcpy(p, &c.step, sizeof(c.step));
    std::memcpy(p += sizeof(c.step), c.rng.s.data(), sizeof(c.rng.s));
    std::memcpy(p += sizeof(c.rng.s), &c.rng.spare_normal, sizeof(c.rng.spare_normal));
    p[sizeof(c.rng.spare_normal)] = c.rng.has_spare ? 1 : 0;
  }
  ctx.broadcast_(fixed, 0);
  const char* p = fixed.data();
  std::memcpy(&c.step, p, sizeof(c.step));
  std::memcpy(c.rng.s.data(), p += sizeof(c.step), sizeof(c.rng.s));
  std::memcpy(&c.rng.spare_normal, p += sizeof(c.rng.s), sizeof(c.rng.spare_normal));
  c.rng.has_spare = p[sizeof(c.rng.spare_normal)] != 0;
  // The extra strings, each as an 8-byte length and its bytes (keys and values may hold any byte).
  std::string extra;
  auto put = [&](const std::string& v) {
    const std::uint64_t n = v.size();
    extra.append(reinterpret_cast<const char*>(&n), sizeof(n));
    extra += v;
  };
  if (ctx.is_root())
    for (const auto& [k, v] : c.extra) put(k), put(v);
  ctx.broadcast_(extra, 0);
  c.extra.clear();
  std::size_t at = 0;
  auto take = [&]() {
    std::uint64_t n = 0;
    std::memcpy(&n, extra.data() + at, sizeof(n));
    at += sizeof(n);
    std::string v = extra.substr(at, n);
    at += n;
    return v;
  };
  while (at + 2 * sizeof(std::uint64_t) <= extra.size()) {
    std::string k = take();
    c.extra[k] = take();
  }
  return c;
}

}  // namespace unroll::dist
