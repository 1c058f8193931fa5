// examples/common/smoke: defaults only for the flags not given; the loss check fails only under --smoke.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <unroll/unroll.hpp>

#include "../../../examples/common/error.hpp"
#include "../../../examples/common/smoke.hpp"
#include "../../support/files.hpp"

using namespace unroll::examples;

namespace {

struct Flags {
  std::int64_t steps = 1000, hidden = 64;
  double lr = 3e-3;
  std::string out = "runs/prog";
  std::vector<std::int64_t> lengths{8, 20, 50};
  bool level = false;
};

// Parses `args` (after the program name) into a fresh set of flags; the App outlives the parse for count().
void parse(CLI::App& app, Flags& f, std::vector<std::string> args) {
  app.add_option("--steps", f.steps);
  app.add_option("--hidden", f.hidden);
  app.add_option("--lr", f.lr);
  app.add_option("--out", f.out);
  app.add_option("--lengths", f.lengths)->delimiter(',');
  app.add_flag("--level,!--no-level", f.level);
  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes the vector form in reverse
  app.parse(reversed);
}
}  // namespace

TEST_SUITE("examples/common/smoke") {
  TEST_CASE("FlagDefaults sets the flags the user did not give and keeps the ones given") {
    CLI::App app{"test", "prog"};
    Flags f;
    parse(app, f, {"--steps", "7", "--out", "mine", "--no-level"});
    const FlagDefaults def(app);
    def("--steps", f.steps, 150);
    def("--hidden", f.hidden, 16);
    def("--lr", f.lr, 1e-2);
    def("--out", f.out, "runs/prog_smoke");
    def("--lengths", f.lengths, {10});
    def("--level", f.level, true);
    CHECK(f.steps == 7);  // given: the user's value wins
    CHECK(f.hidden == 16);
    CHECK(f.lr == 1e-2);
    CHECK(f.out == "mine");
    CHECK(f.lengths == std::vector<std::int64_t>{10});
    CHECK_FALSE(f.level);  // --no-level is the same flag as --level
    CHECK(def.given("--level"));
    CHECK(def.given("--steps"));
    CHECK_FALSE(def.given("--hidden"));
  }

  TEST_CASE("FlagDefaults refuses a flag the program does not have (a typo in the defaults)") {
    CLI::App app{"test", "prog"};
    Flags f;
    parse(app, f, {});
    const FlagDefaults def(app);
    CHECK_THROWS_AS(def("--stpes", f.steps, 150), CLI::OptionNotFound);
    CHECK(f.steps == 1000);
  }

  TEST_CASE("LossFall: below factor x first, NaN never fell, and its message") {
    CHECK(LossFall{.first = 2.0, .last = 1.5}.fell());
    CHECK_FALSE(LossFall{.first = 2.0, .last = 1.7}.fell());  // fell, but by less than 20%
    CHECK_FALSE(LossFall{.first = 2.0, .last = 2.5}.fell());
    CHECK(LossFall{.first = 2.0, .last = 1.7, .factor = 0.9}.fell());
    CHECK_FALSE(LossFall{.first = NAN, .last = 1.0}.fell());
    CHECK_FALSE(LossFall{.first = 2.0, .last = NAN}.fell());
    CHECK(LossFall{.first = 2.0, .last = 1.7, .first_what = "the first 25 steps'"}.detail() ==
          "got 1.7 at the end, expected below 0.8 x 2 (the first 25 steps')");
    CHECK(LossFall{.first = 0.123456, .last = 0.1, .first_what = "the first step's", .factor = 0.5}.detail() ==
          "got 0.1 at the end, expected below 0.5 x 0.1235 (the first step's)");
  }

  TEST_CASE("check_loss_fell: silent when the loss fell, exit 1 only under --smoke, a warning in a real run") {
    const LossFall fell{.first = 2.0, .last = 1.0, .first_what = "the first step's"};
    const LossFall flat{.first = 2.0, .last = 1.9, .first_what = "the first step's"};
    for (const bool smoke : {false, true}) {
      std::FILE* f = std::tmpfile();
      REQUIRE(f != nullptr);
      CHECK(check_loss_fell("prog", smoke, fell, kLossHint, f) == 0);
      CHECK(test_support::file_contents(f).empty());
      std::fclose(f);
    }
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    CHECK(check_loss_fell("prog", true, flat, kLossHint, f) == 1);
    CHECK(test_support::file_contents(f) ==
          "prog: the loss did not fall; got 1.9 at the end, expected below 0.8 x 2 (the first step's)\n");
    std::fclose(f);
    f = std::tmpfile();
    REQUIRE(f != nullptr);
    CHECK(check_loss_fell("prog", false, flat, kLossHint, f) == 0);
    CHECK(test_support::file_contents(f) ==
          "prog: warning: the loss did not fall; got 1.9 at the end, expected below 0.8 x 2 (the first step's); try a "
          "lower --lr or more --steps\n");
    std::fclose(f);
  }

  TEST_CASE("check_loss_fell with a verdict and words of the program's own (several models, its own hint)") {
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    CHECK(check_loss_fell("prog", false, false, "got x, expected y", "see the table", f) == 0);
    CHECK(test_support::file_contents(f) == "prog: warning: the loss did not fall; got x, expected y; see the table\n");
    std::fclose(f);
    f = std::tmpfile();
    REQUIRE(f != nullptr);
    CHECK(check_loss_fell("prog", true, false, "got x, expected y", "see the table", f) == 1);
    CHECK(test_support::file_contents(f) == "prog: the loss did not fall; got x, expected y\n");
    std::fclose(f);
    f = std::tmpfile();
    REQUIRE(f != nullptr);
    CHECK(check_loss_fell("prog", true, true, "got x, expected y", "see the table", f) == 0);
    CHECK(test_support::file_contents(f).empty());
    std::fclose(f);
  }

  TEST_CASE("DivergenceWatch: a non-finite loss stops at once, saying where the step run again went non-finite") {
    DivergenceWatch w({.program = "prog", .ceiling = 2.0, .patience = 2, .hint = "try a smaller --lr"});
    w.check(1, 1.5);
    CHECK_THROWS_WITH_AS(w.check(2, NAN), "prog: training diverged at step 2; got loss nan, expected a finite loss; "
                                          "try a smaller --lr",
                         DivergedError);
    CHECK_THROWS_WITH_AS(w.check(3, INFINITY, [] { return std::string("exp: non-finite output"); }),
                         "prog: training diverged at step 3; got loss inf, expected a finite loss (the step run again "
                         "stops at: exp: non-finite output); try a smaller --lr",
                         DivergedError);
    // A real model: the op is named by anomaly detection.
    unroll::Tensor w0 = unroll::tensor({1e300, 1e300}, {2}, unroll::Dtype::float64).requires_grad_();
    auto locate = [&]() -> std::string {
      const unroll::autograd::DetectAnomaly anomaly;
      try {
        unroll::sum(unroll::exp(w0 * 1.0)).backward();
      } catch (const unroll::NonFiniteError& e) {
        return e.what();
      }
      return "";
    };
    CHECK_THROWS_WITH_AS(w.check(4, NAN, locate),
                         doctest::Contains("(the step run again stops at: exp: non-finite output (anomaly detection)"),
                         DivergedError);
    w.check(5, 3.0);  // above the ceiling once: not yet
    CHECK_THROWS_AS(w.check(6, 3.0), DivergedError);
  }
}
