#pragma once
// safetensors files (https://github.com/huggingface/safetensors), the format PyTorch users already exchange:
//   8 bytes   little-endian u64 N, the header size
//   N bytes   UTF-8 JSON {"__metadata__": {"k": "v", ...},
//                         "<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//             padded with spaces to a multiple of 8
//   the rest  the byte buffer; data_offsets are relative to its start, tensors back to back in order.
// unroll reads and writes F32, F64 and I64. Writing is atomic (temp file, fsync, rename, fsync of the
// directory): a crash mid-write leaves the previous file at `path` intact. Reading checks every field and
// throws IoError naming the file and the problem; it never returns a partial result.
#include <map>
#include <string>

#include "state_dict.hpp"

namespace unroll {

/// Named tensors and string metadata -> a safetensors file at `path`, tensors in the dict's order.
/// ValueError for an undefined tensor, the reserved name "__metadata__" or a name or metadata string that is
/// not UTF-8; IoError (naming the path and the system's reason) when the file cannot be written, in which case
/// `path` is left as it was. The temp file is `<path>.tmp.<pid>.<n>`; a process killed mid-write leaves it behind.
void save_safetensors(const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata = {});

/// What a safetensors file holds: its tensors (fresh contiguous tensors, in buffer order) and metadata.
struct SafetensorsFile {
  StateDict tensors;
  std::map<std::string, std::string> metadata;
};

/// A safetensors file -> its tensors and metadata. IoError naming the file and what is wrong for a missing,
/// truncated or malformed file (bad header length or JSON, JSON nested more than 16 deep, unsupported dtype,
/// offsets out of range, overlapping, gapped or trailing data, size that does not match shape and dtype, a
/// dimension above 2^48, duplicate names).
SafetensorsFile load_safetensors(const std::string& path);

namespace detail {
/// save_safetensors with `where` naming the public caller in error messages (save_checkpoint reuses it).
void save_safetensors(const char* where, const std::string& path, const StateDict& tensors,
                      const std::map<std::string, std::string>& metadata);
/// load_safetensors with `where` naming the public caller in error messages.
SafetensorsFile load_safetensors(const char* where, const std::string& path);
}  // namespace detail

}  // namespace unroll
