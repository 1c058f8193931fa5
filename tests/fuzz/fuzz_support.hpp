#pragma once
// What every fuzz target shares: the input as a file (the loaders take paths), and the one rule for
// exceptions. A loader given bad bytes must throw its documented error type, naming the file; any other
// exception (std::bad_alloc, std::length_error, an unroll::ShapeError where an IoError is promised, ...) is a
// bug, and so is a message that does not say which file was bad. fail() aborts, so libFuzzer (or replay_main)
// reports it with the input that caused it.
#include <fcntl.h>
#include <unistd.h>

#include <cxxabi.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <typeinfo>

#include <fmt/format.h>

namespace unroll::fuzz {

/// A broken expectation: prints `what` and aborts (libFuzzer saves the input as crash-<sha1>).
[[noreturn]] inline void fail(std::string_view what) {
  std::fprintf(stderr, "fuzz: %.*s\n", static_cast<int>(what.size()), what.data());
  std::fflush(stderr);
  std::abort();
}

/// The readable name of an exception's dynamic type ("std::length_error").
inline std::string type_name(const std::exception& e) {
  int status = 0;
  const std::unique_ptr<char, decltype(&std::free)> name(
      abi::__cxa_demangle(typeid(e).name(), nullptr, nullptr, &status), &std::free);
  return status == 0 && name ? name.get() : typeid(e).name();
}

/// A file of this process's own in the temp directory (the pid keeps parallel fuzzers, -jobs=N, apart),
/// rewritten with each input and removed at exit. TMPDIR=/dev/shm keeps it off the disk.
class InputFile {
 public:
  explicit InputFile(std::string_view name)
      : path_((std::filesystem::temp_directory_path() / fmt::format("unroll_fuzz_{}_{}", ::getpid(), name)).string()) {}
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() { ::unlink(path_.c_str()); }

  /// Replaces the file's contents with `data` and returns its path.
  const std::string& write(const std::uint8_t* data, std::size_t size) {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) fail(fmt::format("cannot create the input file '{}'", path_));
    while (size > 0) {
      const ssize_t n = ::write(fd, data, size);
      if (n <= 0) fail(fmt::format("cannot write the input file '{}'", path_));
      data += n;
      size -= static_cast<std::size_t>(n);
    }
    if (::close(fd) != 0) fail(fmt::format("cannot close the input file '{}'", path_));
    return path_;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// Runs `run`: true if it returned, false if it threw `Expected` with a message naming `path`. Any other
/// exception, or an `Expected` that does not name the file, fails with `where` and the message.
template <class Expected, class F>
bool expect_ok_or(std::string_view where, const std::string& path, F&& run) {
  try {
    run();
    return true;
  } catch (const Expected& e) {
    if (std::string_view(e.what()).find(path) == std::string_view::npos)
      fail(fmt::format("{}: the error does not name the file '{}': {}", where, path, e.what()));
    return false;
  } catch (const std::exception& e) {
    fail(fmt::format("{}: unexpected exception {}: {}", where, type_name(e), e.what()));
  }
}

}  // namespace unroll::fuzz
