// examples/common/progress: durations and counts, plain lines when piped, the bar on a terminal.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "../../../examples/common/progress.hpp"
#include "../../support/files.hpp"

using namespace unroll::examples;

TEST_SUITE("examples/common/progress") {
  TEST_CASE("durations and counts in a few characters") {
    CHECK(format_duration(0) == "0:00");
    CHECK(format_duration(3.4) == "0:03");
    CHECK(format_duration(247) == "4:07");
    CHECK(format_duration(3909) == "1:05:09");
    CHECK(format_duration(-1) == "?");
    CHECK(format_duration(NAN) == "?");
    CHECK(format_count(532) == "532");
    CHECK(format_count(12345) == "12.3k");
    CHECK(format_count(4.561e6) == "4.56M");
    CHECK(format_count(INFINITY) == "?");
  }

  TEST_CASE("piped: a plain line every plain_every steps and at the last step, lines in between untouched") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    {
      Progress p(
          {.total_steps = 25, .first_step = 0, .tokens_per_step = 100, .plain_every = 10, .interactive = 0, .out = f});
      CHECK_FALSE(p.interactive());
      for (int s = 1; s <= 25; ++s) {
        p.update(s, 1.0 / s, "lr 1e-3");
        if (s == 12) p.print_line("validation 2.5");
      }
    }
    const std::string out = test_support::file_contents(f);
    std::fclose(f);
    CHECK(out.find('\r') == std::string::npos);
    CHECK(out.find("step 10/25  loss 0.1000  lr 1e-3  ") == 0);
    CHECK(out.find("\nvalidation 2.5\nstep 20/25  loss 0.0500") != std::string::npos);
    CHECK(out.find("step 25/25  loss 0.0400") != std::string::npos);
    CHECK(out.find("step 11/") == std::string::npos);
    CHECK(out.find(" tok/s  ETA ") != std::string::npos);
    CHECK(out.back() == '\n');
  }

  TEST_CASE("terminal: one line redrawn with a bar; print_line goes above it; finish ends the line") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    Progress p({.total_steps = 4, .first_step = 2, .tokens_per_step = 10, .interactive = 1, .out = f});
    CHECK(p.interactive());
    p.update(4, 0.5);  // the last step is always drawn
    p.print_line("hello");
    p.finish();
    const std::string out = test_support::file_contents(f);
    std::fclose(f);
    CHECK(out.rfind("\r[########################] step 4/4  loss 0.5000", 0) == 0);
    CHECK(out.find("\rhello\x1b[K\n\r[####") != std::string::npos);
    CHECK(out.back() == '\n');
    CHECK(out.find('\n') != out.size() - 1);  // hello's line, then the final newline
  }
}
