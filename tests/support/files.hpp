#pragma once
// Reading back what a test wrote to a temporary FILE* (tmpfile()).
#include <cstdio>
#include <string>

namespace test_support {

/// Everything written to `f` so far (flushes it and rewinds to the start).
inline std::string file_contents(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  for (int c; (c = std::fgetc(f)) != EOF;) s += static_cast<char>(c);
  return s;
}

}  // namespace test_support
