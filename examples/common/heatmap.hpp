#pragma once
// Heatmaps as SVG files: a matrix a person reads by colour, such as a confusion matrix (rows: the true class,
// columns: the predicted one). Each cell is shaded by its value on a white-to-blue scale and may carry a
// text annotation (a count). Plain SVG 1.1, no dependencies.
//
//   examples::Heatmap map{.title = "confusion", .x_label = "predicted", .y_label = "true",
//                         .row_labels = names, .col_labels = names, .values = row_fractions, .text = counts};
//   examples::write_heatmap("runs/classify/confusion.svg", map);
#include <string>
#include <vector>

namespace unroll::examples {

struct Heatmap {
  std::string title{}, x_label{}, y_label{};
  std::vector<std::string> row_labels{}, col_labels{};
  std::vector<double> values{};     ///< rows x cols, row-major; the colour scale runs from 0 to the largest value
  std::vector<std::string> text{};  ///< empty, or one annotation per cell (row-major)
  int cell = 28;                    ///< cell size in pixels
};

/// The heatmap as SVG text. ValueError if values (or a non-empty text) does not hold rows x cols entries.
std::string render_heatmap_svg(const Heatmap& map);
/// Writes render_heatmap_svg(map) to `path` atomically (a temp file renamed over it). IoError if it cannot.
void write_heatmap(const std::string& path, const Heatmap& map);

}  // namespace unroll::examples
