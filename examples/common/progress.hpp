#pragma once
// Training progress on stdout: step, loss, tokens/s and ETA. On a terminal it is one line with a bar,
// redrawn in place at most ten times a second; when stdout is piped or redirected it is a plain line every
// `plain_every` steps (a log file should not fill with carriage returns).
//
//   examples::Progress progress({.total_steps = 3000, .first_step = 0, .tokens_per_step = 64 * 100});
//   for (step = 1; step <= 3000; ++step) { ...; progress.update(step, loss); }
//   progress.print_line("validation ...");   // a full line that does not break the bar
//   progress.finish();
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace unroll::examples {

struct ProgressOptions {
  std::int64_t total_steps = 0;      ///< the last step
  std::int64_t first_step = 0;       ///< steps already done when this run started (a resumed run)
  std::int64_t tokens_per_step = 1;  ///< for tokens/s
  std::int64_t plain_every = 100;    ///< print a plain line every this many steps when not on a terminal
  int interactive = -1;              ///< 1: bar, 0: plain lines, -1: decide by isatty(stdout)
  std::FILE* out = stdout;
};

/// "1:05:09", "4:07", "0:03" for a number of seconds (negative or non-finite: "?").
std::string format_duration(double seconds);
/// "532", "12.3k", "4.56M": a rate in a few characters.
std::string format_count(double value);

class Progress {
 public:
  explicit Progress(const ProgressOptions& options);
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress();

  /// Reports that `step` is done with training loss `loss` (and `extra` text such as "lr 3e-3").
  void update(std::int64_t step, double loss, std::string_view extra = {});
  /// Prints `text` as its own line, then redraws the bar under it (on a terminal).
  void print_line(std::string_view text);
  /// Ends the bar's line (on a terminal); later output starts on a fresh line.
  void finish();

  bool interactive() const { return interactive_; }
  /// Tokens per second over this run so far (0 before the second update).
  double tokens_per_second() const;
  /// Seconds since construction.
  double elapsed_seconds() const;

 private:
  using Clock = std::chrono::steady_clock;
  std::string status(std::int64_t step, double loss, std::string_view extra) const;
  void draw();

  ProgressOptions opt_;
  bool interactive_;
  bool line_open_ = false;  ///< the bar is on screen without a newline after it
  Clock::time_point start_, first_update_, last_draw_;
  std::int64_t first_update_step_ = -1;  ///< the step of the first update: rates start there (warm-up excluded)
  std::int64_t step_ = 0;
  double loss_ = 0;
  std::string extra_;
};

}  // namespace unroll::examples
