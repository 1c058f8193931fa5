#include "fuse.hpp"

#include <fmt/format.h>

namespace unroll::nn::detail {

FusionCache::Entry FusionCache::get(const std::string& key, const std::function<unroll::detail::TraceResult()>& trace) {
  std::lock_guard lock(mu_);  // held while tracing: other shards of the same batch wait for the one program
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    unroll::detail::TraceResult traced = trace();
    Entry e;
    if (traced.why_not.empty()) {
      unroll::detail::CompiledStep c = unroll::detail::compile_step(std::move(traced.graph));
      e.program = std::move(c.program);
      e.why_not = std::move(c.why_not);
    } else {
      e.why_not = std::move(traced.why_not);
    }
    ++traces_;
    it = entries_.emplace(key, std::move(e)).first;
  }
  last_why_not_ = it->second.why_not;
  return it->second;
}

std::string FusionCache::last_why_not() const {
  std::lock_guard lock(mu_);
  return last_why_not_;
}

std::size_t FusionCache::traces() const {
  std::lock_guard lock(mu_);
  return traces_;
}

void FusionCache::clear() {
  std::lock_guard lock(mu_);
  entries_.clear();
  last_why_not_.clear();
}

std::string fusion_key(std::span<const Tensor> examples, const std::string& extra) {
  std::string key;
  for (const Tensor& t : examples) key += fmt::format("{}{} ", t.dtype(), t.shape());
  return key + extra;
}

std::string module_key(const Module& m) {
  // The parameters are captured by identity when traced: a module whose parameters were replaced (to(),
  // a new tensor assigned) must be traced again.
  std::string key = m.is_training() ? "train" : "eval";
  for (const Tensor& p : m.parameters()) key += fmt::format(" {}", static_cast<const void*>(p.leaf()));
  return key;
}

}  // namespace unroll::nn::detail
