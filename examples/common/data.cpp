#include "data.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>
#include <system_error>

namespace unroll::examples {

std::string read_data_file(std::string_view program, std::string_view flag, const std::string& path,
                           std::string_view what) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  // Ask the file system first: an ifstream opened on a directory "succeeds" on Linux and then reads nothing.
  UNROLL_CHECK(status.type() != std::filesystem::file_type::not_found, examples::UsageError,
               "{}: cannot read {} file; got '{}' (no such file), expected a readable {}", program, flag, path, what);
  UNROLL_CHECK(!ec, examples::UsageError, "{}: cannot read {} file; got '{}' ({}), expected a readable {}", program,
               flag, path, ec.message(), what);
  UNROLL_CHECK(std::filesystem::is_regular_file(status), examples::UsageError,
               "{}: cannot read {} file; got '{}' (not a regular file), expected a readable {}", program, flag, path,
               what);
  std::ifstream in(path, std::ios::binary);
  UNROLL_CHECK(in.good(), examples::UsageError, "{}: cannot read {} file; got '{}' ({}), expected a readable {}",
               program, flag, path, std::strerror(errno), what);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  UNROLL_CHECK(!in.bad(), examples::UsageError,
               "{}: cannot read {} file; got '{}' (read error), expected a readable {}", program, flag, path, what);
  UNROLL_CHECK(!bytes.empty(), examples::UsageError,
               "{}: {} file is empty; got '{}' (0 bytes), expected a {} with data", program, flag, path, what);
  return bytes;
}

std::uint64_t fingerprint(std::string_view bytes) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a offset basis and prime
  for (const char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string printable(std::string_view s) {
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '\n')
      out += "\\n";
    else if (c == '\t')
      out += "\\t";
    else if (c == '\\')
      out += "\\\\";
    else if (c < 0x20 || c >= 0x7f)
      out += fmt::format("\\x{:02x}", c);
    else
      out += ch;
  }
  return out;
}

std::vector<std::size_t> shuffled_indices(std::size_t n, Generator& gen) {
  std::vector<std::size_t> out(n);
  std::iota(out.begin(), out.end(), std::size_t{0});
  shuffle(out, gen);
  return out;
}

EpochSampler::EpochSampler(std::size_t n, Generator& gen) : order_(n), next_(n), gen_(gen) {
  std::iota(order_.begin(), order_.end(), std::size_t{0});
}

std::vector<std::size_t> EpochSampler::next_batch(std::int64_t batch) {
  std::vector<std::size_t> out;
  const auto want = static_cast<std::size_t>(std::max<std::int64_t>(0, batch));
  while (out.size() < std::min(want, order_.size())) {
    if (next_ == order_.size()) {  // a new epoch: a new order
      shuffle(order_, gen_);
      next_ = 0;
    }
    out.push_back(order_[next_++]);
  }
  return out;
}

}  // namespace unroll::examples
