#include "cli.hpp"

#include <exception>

namespace unroll::examples {

std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help: CLI11 prints the usage to stdout
  } catch (const CLI::ParseError& e) {
    // CLI11's own exit codes (105, 109, ...) mean nothing to a shell script; one code for "fix your command".
    fmt::print(stderr, "{}: {}; run '{} --help' for the flags\n", app.get_name(), e.what(), app.get_name());
    return kUsageExitCode;
  }
}

int guarded_main(std::string_view program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    fmt::print(stderr, "{}\n", e.what());
    return kUsageExitCode;
  } catch (const unroll::IoError& e) {
    fmt::print(stderr, "{}\n", e.what());
    return kUsageExitCode;
  } catch (const DivergedError& e) {
    fmt::print(stderr, "{}\n", e.what());
    return kDivergedExitCode;
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}: internal error: {}\n", program, e.what());
    return 1;
  }
}

}  // namespace unroll::examples
