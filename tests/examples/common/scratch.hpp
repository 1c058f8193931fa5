#pragma once
// A scratch directory per test process for the examples/common tests, removed at exit.
#include <filesystem>
#include <string>

#include <unistd.h>

namespace test_support {

inline const std::filesystem::path& scratch_dir() {
  struct Dir {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("unroll_examples_common_" + std::to_string(::getpid()));
    Dir() { std::filesystem::create_directories(path); }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Dir dir;
  return dir.path;
}

inline std::string scratch_file(const std::string& name) { return (scratch_dir() / name).string(); }

}  // namespace test_support
