#include "heatmap.hpp"
#include "svg_plot.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <system_error>

#include <fmt/format.h>
#include <unistd.h>

#include "../../core/error.hpp"

namespace unroll::examples {
namespace {

std::string escape(const std::string& s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// White (0) to a dark blue (1), linear in each channel: light enough at the low end that a zero cell reads as
// empty, dark enough at the top that the diagonal of a good confusion matrix stands out.
std::string shade(double f) {
  f = std::isfinite(f) ? std::clamp(f, 0.0, 1.0) : 0.0;
  const auto mix = [f](int lo, int hi) { return static_cast<int>(std::lround(lo + (hi - lo) * f)); };
  return fmt::format("#{:02x}{:02x}{:02x}", mix(255, 8), mix(255, 48), mix(255, 107));
}

}  // namespace

std::string render_heatmap_svg(const Heatmap& map) {
  const std::size_t rows = map.row_labels.size(), cols = map.col_labels.size();
  UNROLL_CHECK(map.values.size() == rows * cols, ValueError,
               "render_heatmap_svg: values do not fit the labels; got {} values, expected {} rows x {} cols = {}",
               map.values.size(), rows, cols, rows * cols);
  UNROLL_CHECK(map.text.empty() || map.text.size() == rows * cols, ValueError,
               "render_heatmap_svg: text does not fit the labels; got {} annotations, expected 0 or {}",
               map.text.size(), rows * cols);
  std::size_t longest_row = 0, longest_col = 0;
  for (const auto& l : map.row_labels) longest_row = std::max(longest_row, l.size());
  for (const auto& l : map.col_labels) longest_col = std::max(longest_col, l.size());
  const int c = std::max(8, map.cell);
  // Room for the labels: about 7 px per character at font size 12 (column labels are rotated to vertical).
  const int left = 30 + 7 * static_cast<int>(longest_row), top = 40 + 7 * static_cast<int>(longest_col);
  // Wide enough for the title too (about 8 px per character at font size 15).
  const int width = std::max(left + c * static_cast<int>(cols) + 20, 40 + 8 * static_cast<int>(map.title.size()));
  const int height = top + c * static_cast<int>(rows) + 40;
  double hi = 0;
  for (const double v : map.values)
    if (std::isfinite(v)) hi = std::max(hi, v);
  if (hi <= 0) hi = 1;

  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n",
      width, height);
  s += fmt::format("<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n", width / 2,
                   escape(map.title));
  for (std::size_t i = 0; i < rows; ++i) {
    const int y = top + c * static_cast<int>(i);
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>\n", left - 6,
                     y + c / 2, escape(map.row_labels[i]));
    for (std::size_t j = 0; j < cols; ++j) {
      const int x = left + c * static_cast<int>(j);
      const double v = map.values[i * cols + j], f = v / hi;
      s += fmt::format(
          "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"#dddddd\"><title>{} / {}: "
          "{:.4g}</title></rect>\n",
          x, y, c, c, shade(f), escape(map.row_labels[i]), escape(map.col_labels[j]), v);
      if (!map.text.empty() && !map.text[i * cols + j].empty())
        s += fmt::format(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" dominant-baseline=\"middle\" font-size=\"{}\" "
            "fill=\"{}\">{}</text>\n",
            x + c / 2, y + c / 2, std::max(7, c / 3), f > 0.5 ? "white" : "black", escape(map.text[i * cols + j]));
    }
  }
  for (std::size_t j = 0; j < cols; ++j) {
    const int x = left + c * static_cast<int>(j) + c / 2;
    s += fmt::format("<text transform=\"translate({},{}) rotate(-90)\" dominant-baseline=\"middle\">{}</text>\n", x,
                     top - 6, escape(map.col_labels[j]));
  }
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + c * static_cast<int>(cols) / 2,
                   top + c * static_cast<int>(rows) + 25, escape(map.x_label));
  s += fmt::format("<text transform=\"translate(14,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                   top + c * static_cast<int>(rows) / 2, escape(map.y_label));
  s += "</svg>\n";
  return s;
}

void write_heatmap(const std::string& path, const Heatmap& map) {
  write_file_atomic(path, render_heatmap_svg(map), "write_heatmap");
}

}  // namespace unroll::examples
