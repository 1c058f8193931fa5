#pragma once
// What --smoke means, in one place for every example: a run of a few seconds whose tiny defaults apply only to
// the flags the user did not give, and an end-of-run check that the loss fell. The check fails the program only
// under --smoke, where "the model learned something" is what CI asks; a real run that trained and wrote its
// files succeeds even when its loss fell less than the heuristic expects, and gets a one-line warning.
//
//   if (o.smoke) {  // tiny defaults; flags given explicitly still win
//     const examples::FlagDefaults def(app);
//     def("--steps", o.steps, 150);
//     def("--out", o.out, "runs/my_example_smoke");
//   }
//   ...
//   return examples::check_loss_fell("my_example", o.smoke,
//                                    {.first = first, .last = last, .first_what = "the first step's"});
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <CLI/CLI.hpp>

#include <unroll/unroll.hpp>

namespace unroll::examples {

/// Sets flags' values unless the user gave them on the command line (use after parse_command_line): --smoke's
/// tiny run and forecast's --dataset presets are defaults that an explicit flag overrides.
class FlagDefaults {
 public:
  explicit FlagDefaults(const CLI::App& app) : app_(app) {}
  /// field = value unless `flag` was given. CLI::OptionNotFound if the app has no such flag (a typo here).
  template <class T>
  void operator()(const std::string& flag, T& field, std::type_identity_t<T> value) const {
    if (!given(flag)) field = std::move(value);
  }
  /// Whether the user gave `flag` (any of its names). CLI::OptionNotFound if the app has no such flag.
  bool given(const std::string& flag) const { return app_.count(flag) > 0; }

 private:
  const CLI::App& app_;
};

/// A run's loss at its start and at its end, for the usual form of the check: it fell if last < factor x first.
struct LossFall {
  double first = 0, last = 0;
  std::string_view first_what{};  ///< what `first` is, for the message: "the first step's", "the first 25 steps'"
  double factor = 0.8;
  /// last < factor x first; false if either is NaN (a loss never measured did not fall).
  bool fell() const { return last < factor * first; }
  /// "got <last> at the end, expected below <factor> x <first> (<first_what>)"
  std::string detail() const;
};

/// What a real run's warning suggests when the loss did not fall.
inline constexpr std::string_view kLossHint = "try a lower --lr or more --steps";

/// The end-of-run check. If `fell`, prints nothing and returns 0. Otherwise prints one line to `err` and
/// returns the program's exit code: under --smoke "<program>: the loss did not fall; <detail>" and 1; in a real
/// run "<program>: warning: the loss did not fall; <detail>; <hint>" and 0 (the run finished and wrote its
/// files; how well it learned is the user's to judge).
int check_loss_fell(std::string_view program, bool smoke, bool fell, std::string_view detail,
                    std::string_view hint = kLossHint, std::FILE* err = stderr);
/// The same for one loss: check_loss_fell(program, smoke, loss.fell(), loss.detail(), hint, err).
int check_loss_fell(std::string_view program, bool smoke, const LossFall& loss, std::string_view hint = kLossHint,
                    std::FILE* err = stderr);

/// Watches a run's loss for divergence: a non-finite loss stops it at once; a loss above `ceiling` (e.g. the loss
/// of predicting uniformly, log V for V classes: a model doing worse than knowing nothing) for `patience` checks
/// in a row stops it too. Stopping is a DivergedError "<program>: training diverged at step N; <what>; try a
/// smaller --lr (now X) or a tighter --clip (now Y)", exit code kDivergedExitCode, where a run whose loss merely
/// fell less than expected only warns (check_loss_fell).
/// DivergenceWatch::check's `locate` for a model: runs `loss()` (the step's forward, same batch, same parameters)
/// and its backward again under autograd::DetectAnomaly and returns the first NonFiniteError's message (the op
/// whose output or gradient went non-finite, and the time step inside a recurrent layer or run_cell), or "" if
/// the step stays finite this time. The model's gradients are dropped before and after.
std::string locate_non_finite(nn::Module& model, const std::function<Tensor()>& loss);

class DivergenceWatch {
 public:
  struct Options {
    std::string program{};
    double ceiling = INFINITY;  ///< a loss above this counts against the run
    int patience = 3;           ///< consecutive checks above the ceiling that stop it
    std::string hint{};         ///< what to try, e.g. "try a smaller --lr (now 1) or a tighter --clip (now 5)"
  };
  explicit DivergenceWatch(Options o) : o_(std::move(o)) {}
  /// Throws DivergedError if the run diverged; call with each step's (or each logged interval's) loss. For a
  /// non-finite loss, `locate` (if given) runs the step again under autograd::DetectAnomaly and returns the
  /// NonFiniteError's message (the first op whose output or gradient went non-finite), or "" if none did; the
  /// error then says where it happened. Call it before the optimizer step, while the parameters are still the
  /// ones that gave the loss.
  void check(std::int64_t step, double loss, const std::function<std::string()>& locate = {});

 private:
  Options o_;
  int above_ = 0;
};

}  // namespace unroll::examples
