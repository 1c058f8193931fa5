#include "cli.hpp"

#include "distributed.hpp"

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

int exit_code_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const UsageError&) {
    return kUsageExitCode;
  } catch (const unroll::IoError&) {
    return kUsageExitCode;
  } catch (const DivergedError&) {
    return kDivergedExitCode;
  } catch (...) {
    return 1;
  }
}

int guarded_main(std::string_view program, const std::function<int()>& body) {
  try {
    return body();
  } catch (...) {
    const std::exception_ptr error = std::current_exception();
    const int code = exit_code_of(error);
    std::string message;
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      message = code == 1 ? fmt::format("{}: internal error: {}", program, e.what()) : std::string(e.what());
    } catch (...) {
      message = fmt::format("{}: internal error: an exception that is not a std::exception", program);
    }
    // In a data-parallel job one rank reports (examples/common/distributed.hpp).
    if (const Job* job = current_job())
      if (const std::optional<int> c = job->report(program, error, code, message)) return *c;
    fmt::print(stderr, "{}\n", message);
    return code;
  }
}

}  // namespace unroll::examples
