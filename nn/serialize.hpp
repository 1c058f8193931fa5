#pragma once
// Saving and loading a Module's state dict as a safetensors file — the format PyTorch users exchange
// (safetensors.torch.save_file(model.state_dict(), path) on the Python side reads and writes the same).
#include <map>
#include <string>

#include "module.hpp"

namespace unroll::nn {

/// Module -> safetensors file at `path` (written atomically: a crash never leaves a partial file there).
void save(const Module& module, const std::string& path, const std::map<std::string, std::string>& metadata = {});

/// safetensors file -> the module's parameters and buffers (strict: every entry present, no extras, shapes
/// equal). Any problem — unreadable or corrupt file, missing/unexpected tensor, shape or dtype mismatch —
/// is an IoError naming the file, and the module is left unchanged. Non-strict: returns the names that did
/// not match (Module::load_state_dict).
Module::LoadResult load(Module& module, const std::string& path, bool strict = true);

}  // namespace unroll::nn
