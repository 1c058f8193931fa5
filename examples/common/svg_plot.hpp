#pragma once
// Line plots as SVG files: what a person would rather look at than read (a loss curve, a forecast against
// the truth). Plain SVG 1.1 that every browser and image viewer shows; no dependencies.
//
//   examples::LinePlot plot{.title = "char_lm", .x_label = "step", .y_label = "bits per character"};
//   plot.series.push_back({.name = "train", .x = steps, .y = train_bpc});
//   plot.series.push_back({.name = "validation", .x = eval_steps, .y = val_bpc, .markers = true});
//   examples::write_line_plot("runs/char_lm/loss.svg", plot);
#include <string>
#include <string_view>
#include <vector>

namespace unroll::examples {

/// One line: points (x[i], y[i]); non-finite values are skipped (the line breaks there).
struct PlotSeries {
  std::string name{};
  std::vector<double> x{}, y{};
  std::string color{};   ///< an SVG colour; empty: the next of a colour-blind-safe palette
  bool markers = false;  ///< a dot at each point (for sparse series such as validation results)
};

struct LinePlot {
  std::string title{}, x_label{}, y_label{};
  std::vector<PlotSeries> series{};
  bool log_y = false;  ///< logarithmic y axis (non-positive values are skipped)
  int width = 800, height = 480;
};

/// The plot as SVG text. ValueError if a series' x and y differ in length.
std::string render_svg(const LinePlot& plot);
/// Writes `text` to `path` atomically (a temp file renamed over it): a reader never sees half a file. IoError
/// starting with `who` if it cannot.
void write_file_atomic(const std::string& path, std::string_view text, std::string_view who);
/// Writes render_svg(plot) to `path` atomically (a temp file renamed over it), so a viewer that reloads the
/// file while training runs never sees half a plot. IoError if it cannot be written.
void write_line_plot(const std::string& path, const LinePlot& plot);

/// "Nice" tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi], about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);

}  // namespace unroll::examples
