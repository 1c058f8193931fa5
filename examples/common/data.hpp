#pragma once
// Reading the user's data files with messages that say what is wrong with the file, never a crash: a
// missing or unreadable file, a directory, an empty file. Checks that depend on the model (too short for
// the window, a symbol the vocabulary lacks) stay in the example, which raises the same UsageError.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <unroll/core/random.hpp>

#include "error.hpp"

namespace unroll::examples {

/// The whole file as bytes. UsageError "<program>: cannot read <flag> file; got '<path>' (<reason>), expected
/// a readable <what>" for a missing, unreadable or non-regular file, and "<program>: <flag> file is empty;
/// got '<path>' (0 bytes), expected <what>" for an empty one. `what` names the expected contents ("text file").
std::string read_data_file(std::string_view program, std::string_view flag, const std::string& path,
                           std::string_view what = "text file");

/// 64-bit FNV-1a hash of bytes: a cheap fingerprint to tell whether a resumed run sees the same data.
std::uint64_t fingerprint(std::string_view bytes);

/// `s` with control characters and non-ASCII bytes shown as escapes (\n, \t, \xNN), for error messages
/// that quote the user's data on one line.
std::string printable(std::string_view s);

/// Shuffles `items` in place: Fisher–Yates from the end with gen.next_u64() % i, so the same generator state
/// gives the same order (the examples' splits and epochs).
template <class T>
void shuffle(std::vector<T>& items, Generator& gen) {
  for (std::size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[static_cast<std::size_t>(gen.next_u64() % i)]);
}
/// 0, 1, ..., n-1 shuffled.
std::vector<std::size_t> shuffled_indices(std::size_t n, Generator& gen);

/// Minibatches of indices into n training examples: each epoch visits every example once in a new random
/// order (shuffle, above); an epoch's end starts the next in the middle of a batch if need be.
class EpochSampler {
 public:
  /// `gen` is kept by reference and draws each epoch's order.
  EpochSampler(std::size_t n, Generator& gen);
  /// The next min(batch, n) indices.
  std::vector<std::size_t> next_batch(std::int64_t batch);

 private:
  std::vector<std::size_t> order_;
  std::size_t next_;
  Generator& gen_;
};

}  // namespace unroll::examples
