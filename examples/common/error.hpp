#pragma once
// The error type of the example programs' user-facing checks (kept apart from cli.hpp so that code which
// only reads data or writes files does not pull in CLI11).
#include "../../core/error.hpp"

namespace unroll::examples {

/// The exit code for bad input (a flag, a flag value or a data file): the user can fix it.
inline constexpr int kUsageExitCode = 2;

/// Bad input from the user (flag value, data file, checkpoint that does not fit the flags). guarded_main
/// (cli.hpp) prints its one-line message and exits with kUsageExitCode.
class UsageError : public unroll::Error {
 public:
  using unroll::Error::Error;
};

/// The exit code for a run that diverged (its loss became non-finite or stayed above a bound): the data and flags
/// were valid, the training settings were not.
inline constexpr int kDivergedExitCode = 3;

/// Training diverged. guarded_main prints its one-line message (what happened, what to try) and exits with
/// kDivergedExitCode.
class DivergedError : public unroll::Error {
 public:
  using unroll::Error::Error;
};

}  // namespace unroll::examples
