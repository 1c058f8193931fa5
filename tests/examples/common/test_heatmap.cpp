// examples/common/heatmap: the SVG's cells, shades, annotations and escaping; atomic writing; error texts.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "../../../core/error.hpp"
#include "../../../examples/common/heatmap.hpp"
#include "scratch.hpp"

using namespace unroll::examples;

namespace {
std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}
}  // namespace

TEST_SUITE("examples/common/heatmap") {
  TEST_CASE("one shaded cell per entry, the largest darkest, counts as text, labels escaped") {
    const Heatmap map{.title = "a <confusion> & b",
                      .x_label = "predicted",
                      .y_label = "true",
                      .row_labels = {"x", "y&z"},
                      .col_labels = {"x", "y&z"},
                      .values = {0.9, 0.1, 0.0, 1.0},
                      .text = {"9", "1", "", "4"}};
    const std::string svg = render_heatmap_svg(map);
    CHECK(svg.rfind("<svg ", 0) == 0);
    CHECK(svg.find("</svg>") != std::string::npos);
    CHECK(count(svg, "<rect x=") == 4);
    CHECK(count(svg, "fill=\"#08306b\"") == 1);         // 1.0, the maximum: the darkest shade
    CHECK(count(svg, "fill=\"#ffffff\" stroke") == 1);  // 0: white
    CHECK(svg.find(">9</text>") != std::string::npos);
    CHECK(svg.find(">4</text>") != std::string::npos);
    CHECK(count(svg, "</text>") == 3 + 4 + 3);  // annotations, labels, title and axis labels
    CHECK(svg.find("a &lt;confusion&gt; &amp; b") != std::string::npos);
    CHECK(svg.find("y&amp;z") != std::string::npos);
    CHECK(svg.find("y&z") == std::string::npos);
  }

  TEST_CASE("values or text that do not fit the labels are a ValueError") {
    Heatmap map{.row_labels = {"a", "b"}, .col_labels = {"a", "b"}, .values = {1, 2, 3}};
    CHECK_THROWS_WITH_AS(render_heatmap_svg(map),
                         "render_heatmap_svg: values do not fit the labels; got 3 values, expected 2 rows x 2 cols = 4",
                         unroll::ValueError);
    map.values = {1, 2, 3, 4};
    map.text = {"1"};
    CHECK_THROWS_WITH_AS(render_heatmap_svg(map),
                         "render_heatmap_svg: text does not fit the labels; got 1 annotations, expected 0 or 4",
                         unroll::ValueError);
  }

  TEST_CASE("write_heatmap replaces the file and leaves no temp file; an unwritable path is an IoError") {
    const std::string path = test_support::scratch_file("confusion.svg");
    const Heatmap map{.row_labels = {"a"}, .col_labels = {"a"}, .values = {1}};
    write_heatmap(path, map);
    write_heatmap(path, map);
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    CHECK(ss.str() == render_heatmap_svg(map));
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(test_support::scratch_dir()))
      files += e.path().filename().string().rfind("confusion.svg", 0) == 0 ? 1 : 0;
    CHECK(files == 1);
    CHECK_THROWS_AS(write_heatmap(test_support::scratch_file("no/such/dir/x.svg"), map), unroll::IoError);
  }

}  // TEST_SUITE
