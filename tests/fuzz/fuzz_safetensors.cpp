// load_safetensors on arbitrary bytes: a valid result or an IoError naming the file, nothing else.
// Seeds: corpus/fuzz_safetensors (valid files of each dtype, 0-d and empty tensors, metadata).
#include <cstdint>

#include <unroll/core/safetensors.hpp>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static unroll::fuzz::InputFile file("safetensors");
  const std::string& path = file.write(data, size);
  unroll::SafetensorsFile loaded;
  if (!unroll::fuzz::expect_ok_or<unroll::IoError>("load_safetensors", path,
                                                   [&] { loaded = unroll::load_safetensors(path); }))
    return 0;
  // Accepted: the tensors are the buffer back to back (every byte of the file is header or data), fresh and
  // contiguous.
  std::uint64_t bytes = 0;
  for (const auto& [name, t] : loaded.tensors) {
    if (!t.defined() || t.storage_offset() != 0)
      unroll::fuzz::fail(fmt::format("load_safetensors: tensor '{}' is undefined or a view", name));
    bytes += static_cast<std::uint64_t>(t.numel()) * unroll::dtype_size(t.dtype());
  }
  if (bytes + 8 > size)
    unroll::fuzz::fail(fmt::format("load_safetensors: {} bytes of tensors from a file of {}", bytes, size));
  return 0;
}
