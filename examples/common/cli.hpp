#pragma once
// Command-line plumbing shared by the example programs: CLI11 parsing with one-line errors, range checks on
// flag values, and a main() wrapper that turns the user's mistakes into exit code 2 (and a message that says
// what to change) instead of a crash.
//
//   int main(int argc, char** argv) {
//     return unroll::examples::guarded_main("my_example", [&]() -> int {
//       CLI::App app{"what it does", "my_example"};
//       app.add_option("--steps", steps, "training steps");
//       if (auto code = unroll::examples::parse_command_line(app, argc, argv)) return *code;
//       unroll::examples::check_flag_range("my_example", "--steps", steps, 1, 1000000);
//       ...
//     });
//   }
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string_view>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "error.hpp"

namespace unroll::examples {

/// Parses argv. nullopt: go on. Otherwise the program should return the value: 0 after printing --help,
/// kUsageExitCode after printing a one-line error for an unknown flag, a missing or unparsable value.
std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv);

/// Runs body() and returns its exit code. UsageError and unroll::IoError (a file that cannot be read or
/// written) print their message to stderr and give kUsageExitCode; DivergedError gives kDivergedExitCode; any other exception prints
/// "<program>: internal error: <what>" and gives 1.
int guarded_main(std::string_view program, const std::function<int()>& body);
/// The exit code guarded_main gives an exception: kUsageExitCode, kDivergedExitCode or 1.
int exit_code_of(const std::exception_ptr& error);

/// UsageError "<program>: <flag> out of range; got <value>, expected <lo> <= <flag> <= <hi>" unless lo <= value <= hi.
template <class T>
void check_flag_range(std::string_view program, std::string_view flag, T value, T lo, T hi) {
  UNROLL_CHECK(lo <= value && value <= hi, examples::UsageError, "{}: {} out of range; got {}, expected {} <= {} <= {}",
               program, flag, value, lo, flag, hi);
}

}  // namespace unroll::examples
