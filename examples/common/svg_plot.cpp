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
// Okabe–Ito: distinguishable with the common forms of colour blindness.
constexpr const char* kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"};

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

std::string label(double v) {
  if (std::abs(v) < 1e-12) return "0";  // a tick computed as 1e-17 is zero
  return fmt::format("{:.6g}", v);
}

struct Range {
  double lo = INFINITY, hi = -INFINITY;
  void add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  void finish(double pad) {  // an empty or one-value range still needs a width to divide by
    if (!(lo <= hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {
      const double d = std::max(std::abs(hi) * 0.05, 0.5);
      lo -= d, hi += d;
    } else {
      const double d = (hi - lo) * pad;
      lo -= d, hi += d;
    }
  }
};
}  // namespace

std::vector<double> nice_ticks(double lo, double hi, int target) {
  std::vector<double> ticks;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi) || target < 1) return ticks;
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  for (double k = std::ceil(lo / step); k * step <= hi + step * 1e-9; k += 1) ticks.push_back(k * step);
  return ticks;
}

std::string render_svg(const LinePlot& plot) {
  for (const PlotSeries& s : plot.series)
    UNROLL_CHECK(s.x.size() == s.y.size(), ValueError,
                 "render_svg: series '{}' has x and y of different lengths; got {} and {}, expected equal", s.name,
                 s.x.size(), s.y.size());
  const auto ty = [&](double y) { return plot.log_y ? (y > 0 ? std::log10(y) : NAN) : y; };
  Range xr, yr;
  for (const PlotSeries& s : plot.series)
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      const double y = ty(s.y[i]);
      if (!std::isfinite(s.x[i]) || !std::isfinite(y)) continue;
      xr.add(s.x[i]);
      yr.add(y);
    }
  xr.finish(0.0);
  yr.finish(0.05);

  const double left = 72, right = 24, top = 40, bottom = 52;
  const double w = plot.width, h = plot.height, pw = w - left - right, ph = h - top - bottom;
  const auto px = [&](double x) { return left + (x - xr.lo) / (xr.hi - xr.lo) * pw; };
  const auto py = [&](double y) { return top + (1 - (y - yr.lo) / (yr.hi - yr.lo)) * ph; };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      plot.width, plot.height);
  svg += fmt::format("<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n", left + pw / 2,
                     escape(plot.title));
  // Grid and tick labels. A log axis gets a tick per decade when it spans two or more, else plain ticks.
  std::vector<double> yticks;  // in axis units (log10 for a log axis)
  if (plot.log_y && std::floor(yr.hi) - std::ceil(yr.lo) >= 1) {
    for (double k = std::ceil(yr.lo); k <= yr.hi; k += 1) yticks.push_back(k);
  } else if (plot.log_y) {
    for (const double v : nice_ticks(std::pow(10.0, yr.lo), std::pow(10.0, yr.hi)))
      if (v > 0) yticks.push_back(std::log10(v));
  } else {
    yticks = nice_ticks(yr.lo, yr.hi);
  }
  for (const double t : yticks) {
    const double y = py(t);
    svg += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e0e0e0\"/>\n", left,
                       left + pw, y, y);
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", left - 6, y + 4,
                       label(plot.log_y ? std::pow(10.0, t) : t));
  }
  for (const double t : nice_ticks(xr.lo, xr.hi, 8)) {
    const double x = px(t);
    svg += fmt::format("<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e0e0e0\"/>\n", x, x,
                       top, top + ph);
    svg +=
        fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", x, top + ph + 18, label(t));
  }
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n", left, top,
                     pw, ph);
  svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2, h - 12,
                     escape(plot.x_label));
  svg += fmt::format("<text transform=\"translate(18 {:.1f}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
                     top + ph / 2, escape(plot.y_label));

  for (std::size_t k = 0; k < plot.series.size(); ++k) {
    const PlotSeries& s = plot.series[k];
    const std::string color = s.color.empty() ? kPalette[k % std::size(kPalette)] : s.color;
    std::string path, dots;
    bool pen_down = false;
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      const double y = ty(s.y[i]);
      if (!std::isfinite(s.x[i]) || !std::isfinite(y)) {
        pen_down = false;  // a gap: the line resumes at the next finite point
        continue;
      }
      path += fmt::format("{}{:.1f},{:.1f}", pen_down ? " L" : " M", px(s.x[i]), py(y));
      pen_down = true;
      if (s.markers) dots += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\"/>", px(s.x[i]), py(y));
    }
    if (!path.empty())
      svg += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\"/>\n", path.substr(1), color);
    if (!dots.empty()) svg += fmt::format("<g fill=\"{}\">{}</g>\n", color, dots);
    // Legend, top right inside the plot area.
    const double ly = top + 16 + 18 * static_cast<double>(k);
    svg += fmt::format(
        "<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-width=\"3\"/>"
        "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n",
        left + pw - 34, left + pw - 12, ly - 4, ly - 4, color, left + pw - 40, ly, escape(s.name));
  }
  svg += "</svg>\n";
  return svg;
}

void write_file_atomic(const std::string& path, std::string_view text, std::string_view who) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    UNROLL_CHECK(out.good(), IoError, "{}: cannot write '{}'; got {}, expected a writable path", who, path,
                 std::strerror(errno));
    out << text;
    out.flush();
    UNROLL_CHECK(out.good(), IoError, "{}: cannot write '{}'; got a write error, expected a writable path", who,
                 path);
  }
  std::error_code ec, ignored;
  std::filesystem::rename(tmp, path, ec);
  if (ec) std::filesystem::remove(tmp, ignored);
  UNROLL_CHECK(!ec, IoError, "{}: cannot replace '{}'; got {}, expected a writable path", who, path, ec.message());
}

void write_line_plot(const std::string& path, const LinePlot& plot) {
  write_file_atomic(path, render_svg(plot), "write_line_plot");
}

}  // namespace unroll::examples
