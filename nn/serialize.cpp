#include "serialize.hpp"

#include <string_view>

#include "../core/safetensors.hpp"

namespace unroll::nn {

void save(const Module& module, const std::string& path, const std::map<std::string, std::string>& metadata) {
  save_safetensors(path, module.state_dict(), metadata);
}

Module::LoadResult load(Module& module, const std::string& path, bool strict) {
  const SafetensorsFile file = load_safetensors(path);  // IoError naming the file if it is unreadable or corrupt
  try {
    return module.load_state_dict(file.tensors, strict);
  } catch (const Error& e) {
    // Re-raise as a file error naming the file; keep load_state_dict's description of the entry.
    std::string_view what = e.what();
    constexpr std::string_view prefix = "load_state_dict: ";
    if (what.substr(0, prefix.size()) == prefix) what.remove_prefix(prefix.size());
    detail::throw_error<IoError>("nn::load: '{}' does not match the module: {}", path, what);
  }
}

}  // namespace unroll::nn
