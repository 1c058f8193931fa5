// examples/common/svg_plot: tick choice, the SVG's content, gaps, atomic writing, error texts.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "../../../core/error.hpp"
#include "../../../examples/common/svg_plot.hpp"
#include "scratch.hpp"

using namespace unroll::examples;

namespace {
std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}
}  // namespace

TEST_SUITE("examples/common/svg_plot") {
  TEST_CASE("nice ticks step by 1, 2 or 5 times a power of ten and cover the range") {
    CHECK(nice_ticks(0, 10, 5) == std::vector<double>{0, 2, 4, 6, 8, 10});
    CHECK(nice_ticks(1.3, 4.1, 6) == std::vector<double>{1.5, 2, 2.5, 3, 3.5, 4});
    const auto t = nice_ticks(0, 3000, 8);
    CHECK(t.front() == 0);
    CHECK(t.back() == 3000);
    CHECK(t[1] == 500);
    CHECK(nice_ticks(1, 1, 5).empty());
    CHECK(nice_ticks(0, NAN, 5).empty());
  }

  TEST_CASE("an SVG with one path per series, markers, a legend and escaped text") {
    LinePlot p{.title = "loss <train & val>", .x_label = "step", .y_label = "bits"};
    p.series.push_back({.name = "train", .x = {1, 2, 3, 4}, .y = {4, 3, NAN, 2}});
    p.series.push_back({.name = "val", .x = {2, 4}, .y = {3.5, 2.5}, .color = "red", .markers = true});
    const std::string svg = render_svg(p);
    CHECK(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0) == 0);
    CHECK(svg.find("</svg>\n") == svg.size() - 7);
    CHECK(svg.find("loss &lt;train &amp; val&gt;") != std::string::npos);
    CHECK(count(svg, "<path ") == 2);
    CHECK(count(svg, "<circle ") == 2);                  // markers on the validation series only
    CHECK(count(svg, " M") + count(svg, "d=\"M") == 3);  // the NaN breaks the train line into two pieces
    CHECK(svg.find("stroke=\"red\"") != std::string::npos);
    CHECK(svg.find(">train</text>") != std::string::npos);
    p.series[0].y.pop_back();
    CHECK_THROWS_WITH_AS(render_svg(p),
                         "render_svg: series 'train' has x and y of different lengths; got 4 and 3, expected equal",
                         unroll::ValueError);
  }

  TEST_CASE("empty and constant series still render, a log axis skips non-positive values") {
    CHECK(render_svg(LinePlot{}).find("</svg>") != std::string::npos);
    LinePlot p;
    p.series.push_back({.name = "flat", .x = {0, 1}, .y = {2, 2}});
    CHECK(render_svg(p).find("<path ") != std::string::npos);
    p.log_y = true;
    p.series.push_back({.name = "decades", .x = {0, 1, 2}, .y = {0, 0.01, 100}});
    const std::string svg = render_svg(p);
    CHECK(svg.find(">0.01</text>") != std::string::npos);
    CHECK(svg.find(">100</text>") != std::string::npos);
  }

  TEST_CASE("write_line_plot replaces the file and leaves no temp file behind") {
    const std::string path = test_support::scratch_file("plot.svg");
    LinePlot p;
    p.series.push_back({.name = "a", .x = {0, 1}, .y = {0, 1}});
    write_line_plot(path, p);
    write_line_plot(path, p);
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    CHECK(s.str() == render_svg(p));
    int files = 0;
    for (const auto& e : std::filesystem::directory_iterator(test_support::scratch_dir()))
      files += e.path().filename().string().rfind("plot.svg", 0) == 0;
    CHECK(files == 1);
    CHECK_THROWS_AS(write_line_plot(test_support::scratch_file("no/such/dir/p.svg"), p), unroll::IoError);
  }
}
