// nn::load into a small model (small_model.hpp), strict and then non-strict, on arbitrary bytes. Either the load
// succeeds and the module holds exactly the file's values (converted to its dtypes) for the names it matched,
// or it is an IoError naming the file and the module is unchanged (all or nothing).
// Seeds: corpus/fuzz_nn_load (the model's own file, float64, a sub-module's dict, other shapes, extra and
// missing names, a float where the int64 buffer is).
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <unroll/core/safetensors.hpp>
#include <unroll/nn/serialize.hpp>

#include "fuzz_support.hpp"
#include "small_model.hpp"

namespace {
using namespace unroll;

std::string bytes_of(const Tensor& t) {
  return {static_cast<const char*>(t.raw()), static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype())};
}

// Every entry's name and bytes: what "unchanged" is compared against.
std::vector<std::pair<std::string, std::string>> snapshot(const nn::Module& m) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, t] : m.state_dict()) out.emplace_back(name, bytes_of(t));
  return out;
}

void check_load(nn::Module& model, const std::string& path, bool strict) {
  const char* where = strict ? "nn::load strict" : "nn::load non-strict";
  const auto before = snapshot(model);
  nn::Module::LoadResult result;
  if (!fuzz::expect_ok_or<IoError>(where, path, [&] { result = nn::load(model, path, strict); })) {
    if (snapshot(model) != before) fuzz::fail(fmt::format("{}: a failed load changed the module", where));
    return;
  }
  if (strict && !result.ok()) fuzz::fail(fmt::format("{}: succeeded with missing or unexpected names", where));
  // nn::load accepted the file, so load_safetensors must too; compare the module with it entry by entry.
  SafetensorsFile file;
  if (!fuzz::expect_ok_or<IoError>(where, path, [&] { file = load_safetensors(path); }))
    fuzz::fail(fmt::format("{}: accepted a file that load_safetensors refuses", where));
  std::size_t i = 0, matched = 0;
  for (const auto& [name, t] : model.state_dict()) {
    const Tensor* src = file.tensors.find(name);
    const bool missing =
        std::find(result.missing_keys.begin(), result.missing_keys.end(), name) != result.missing_keys.end();
    if (missing != (src == nullptr)) fuzz::fail(fmt::format("{}: missing_keys is wrong about '{}'", where, name));
    const std::string expected = src == nullptr              ? before[i].second
                                 : src->dtype() == t.dtype() ? bytes_of(*src)
                                                             : bytes_of(convert(*src, t.dtype()));
    if (bytes_of(t) != expected) fuzz::fail(fmt::format("{}: '{}' does not hold the file's values", where, name));
    matched += src != nullptr;
    ++i;
  }
  if (matched + result.unexpected_keys.size() != file.tensors.size())
    fuzz::fail(fmt::format("{}: {} matched and {} unexpected names from a file of {}", where, matched,
                           result.unexpected_keys.size(), file.tensors.size()));
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static fuzz::InputFile file("nn_load.safetensors");
  static fuzz::SmallModel model;
  static const StateDict initial = [] {  // deep copies: state_dict() shares the module's storage
    StateDict d;
    for (const auto& [name, t] : model.state_dict()) d.insert(name, copy_of(t));
    return d;
  }();
  const std::string& path = file.write(data, size);
  check_load(model, path, true);
  check_load(model, path, false);
  model.load_state_dict(initial);  // each input starts from the same module
  return 0;
}
