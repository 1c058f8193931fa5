#include "progress.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <unistd.h>

namespace unroll::examples {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<std::int64_t>(std::llround(seconds));
  if (s >= 3600) return fmt::format("{}:{:02d}:{:02d}", s / 3600, s / 60 % 60, s % 60);
  return fmt::format("{}:{:02d}", s / 60, s % 60);
}

std::string format_count(double value) {
  if (!std::isfinite(value)) return "?";
  const double a = std::abs(value);
  if (a >= 1e9) return fmt::format("{:.3g}G", value / 1e9);
  if (a >= 1e6) return fmt::format("{:.3g}M", value / 1e6);
  if (a >= 1e3) return fmt::format("{:.3g}k", value / 1e3);
  return fmt::format("{:.0f}", value);
}

Progress::Progress(const ProgressOptions& options)
    : opt_(options),
      interactive_(options.interactive >= 0 ? options.interactive == 1 : ::isatty(::fileno(options.out)) == 1),
      start_(Clock::now()),
      first_update_(start_),
      last_draw_(start_),
      step_(options.first_step) {
  opt_.plain_every = std::max<std::int64_t>(opt_.plain_every, 1);
  opt_.tokens_per_step = std::max<std::int64_t>(opt_.tokens_per_step, 1);
}

Progress::~Progress() { finish(); }

double Progress::elapsed_seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

double Progress::tokens_per_second() const {
  // Rates count from the first update, so one-off start-up work (reading data, the first step's allocations)
  // does not drag them down.
  const double dt = std::chrono::duration<double>(Clock::now() - first_update_).count();
  const std::int64_t steps = step_ - first_update_step_;
  if (first_update_step_ < 0 || steps <= 0 || dt <= 0) return 0;
  return static_cast<double>(steps * opt_.tokens_per_step) / dt;
}

std::string Progress::status(std::int64_t step, double loss, std::string_view extra) const {
  const double rate = tokens_per_second();
  const double eta = rate > 0 ? static_cast<double>((opt_.total_steps - step) * opt_.tokens_per_step) / rate : NAN;
  const int width = static_cast<int>(fmt::formatted_size("{}", opt_.total_steps));
  std::string s = fmt::format("step {:>{}}/{}  loss {:.4f}", step, width, opt_.total_steps, loss);
  if (!extra.empty()) s += fmt::format("  {}", extra);
  s += fmt::format("  {} tok/s  ETA {}", rate > 0 ? format_count(rate) : std::string("-"), format_duration(eta));
  return s;
}

void Progress::update(std::int64_t step, double loss, std::string_view extra) {
  const auto now = Clock::now();
  if (first_update_step_ < 0) {
    first_update_step_ = step;
    first_update_ = now;
  }
  step_ = step;
  loss_ = loss;
  extra_.assign(extra);
  if (interactive_) {
    // Redrawing costs a write to the terminal: ten times a second is smooth enough.
    if (step == opt_.total_steps || now - last_draw_ >= std::chrono::milliseconds(100)) {
      last_draw_ = now;
      draw();
    }
  } else if (step % opt_.plain_every == 0 || step == opt_.total_steps) {
    fmt::print(opt_.out, "{}\n", status(step, loss, extra));
    std::fflush(opt_.out);
  }
}

void Progress::draw() {
  constexpr int kBar = 24;
  const double frac = opt_.total_steps > 0
                          ? std::clamp(static_cast<double>(step_) / static_cast<double>(opt_.total_steps), 0.0, 1.0)
                          : 1.0;
  const int filled = static_cast<int>(frac * kBar);
  // \r returns to the line start and \x1b[K clears what a longer previous line left behind.
  fmt::print(opt_.out, "\r[{:#<{}}{:.<{}}] {}\x1b[K", "", filled, "", kBar - filled, status(step_, loss_, extra_));
  std::fflush(opt_.out);
  line_open_ = true;
}

void Progress::print_line(std::string_view text) {
  if (interactive_ && line_open_) {
    fmt::print(opt_.out, "\r{}\x1b[K\n", text);
    draw();
  } else {
    fmt::print(opt_.out, "{}\n", text);
    std::fflush(opt_.out);
  }
}

void Progress::finish() {
  if (interactive_ && line_open_) {
    fmt::print(opt_.out, "\n");
    std::fflush(opt_.out);
  }
  line_open_ = false;
}

}  // namespace unroll::examples
