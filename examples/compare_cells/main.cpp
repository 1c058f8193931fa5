// compare_cells: which recurrent cell learns the most per parameter, per second and per byte? Trains char_lm
// (examples/char_lm) once per cell on the same text, with the same windows, steps and learning rate, each sized
// to the parameter count of a reference model (by default a one-layer LSTM of 256), and reports validation
// bits/char, training tokens/s and peak memory, with plots of validation bits/char against steps and against
// training time.
//
// Each model trains in its own char_lm process, so its peak resident memory (getrusage's ru_maxrss of that child)
// is its own and one model's allocations cannot slow the next.
//
//   compare_cells                                   # lstm gru mingru minlstm rglru slstm mlstm, ~2 hours
//   compare_cells --cells lstm,mingru --steps 500   # a subset
//   compare_cells --smoke                           # what CI runs: seconds
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <unroll/unroll.hpp>

#include "../common/cli.hpp"
#include "../common/csv.hpp"
#include "../common/smoke.hpp"
#include "../common/svg_plot.hpp"

extern char** environ;

using namespace unroll;

#ifndef COMPARE_CELLS_DEFAULT_DATA
#define COMPARE_CELLS_DEFAULT_DATA "data/austen/austen5.txt"
#endif

namespace {
constexpr const char* kProgram = "compare_cells";

struct Options {
  std::string cells = "lstm,gru,mingru,minlstm,rglru,slstm,mlstm";
  std::string budget_cell = "lstm";
  std::int64_t budget_hidden = 256;
  std::int64_t layers = 1, embed = 48, window = 64, batch = 64, steps = 1500, eval_every = 250;
  double lr = 1e-2;
  int threads = 0;
  std::string data = COMPARE_CELLS_DEFAULT_DATA;
  std::string out = "runs/compare_cells";
  std::string char_lm;  ///< empty: the char_lm next to this program
  bool smoke = false;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Child processes

struct ChildResult {
  int exit_code = -1;
  double peak_rss_mib = 0;  ///< the child's maximum resident set size
};

/// Runs `args` (args[0] the program) with stdout and stderr appended to `log`, waits, and returns its exit code
/// and peak memory. UsageError if it cannot be started.
ChildResult run_child(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int err = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  UNROLL_CHECK(err == 0, examples::UsageError,
               "{}: cannot run '{}'; got {}, expected an executable char_lm (give --char-lm)", kProgram, args[0],
               std::strerror(err));
  int status = 0;
  rusage usage{};
  while (wait4(pid, &status, 0, &usage) < 0 && errno == EINTR) {
  }
  ChildResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.peak_rss_mib = static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports KiB
  return r;
}

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// The last line of a child's log, for an error message.
std::string last_line(const std::string& text) {
  std::string t = text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const auto nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

// ---------------------------------------------------------------------------------------------------------
// Sizing every model to one parameter budget

struct Runner {
  const Options& o;
  std::string exe;
  std::filesystem::path out;

  /// char_lm's flags shared by every run of `cell` with `hidden` units.
  std::vector<std::string> model_args(const std::string& cell, std::int64_t hidden) const {
    return {exe,
            "--data",
            o.data,
            "--cell",
            cell,
            "--hidden",
            std::to_string(hidden),
            "--layers",
            std::to_string(o.layers),
            "--embed",
            std::to_string(o.embed),
            "--window",
            std::to_string(o.window),
            "--batch",
            std::to_string(o.batch)};
  }

  std::int64_t count_params(const std::string& cell, std::int64_t hidden) const {
    std::vector<std::string> args = model_args(cell, hidden);
    args.push_back("--count-params");
    const std::string log = (out / "count.log").string();
    const ChildResult r = run_child(args, log);
    const std::string text = file_text(log);
    UNROLL_CHECK(r.exit_code == 0, examples::UsageError,
                 "{}: char_lm --count-params failed for --cell {}; got exit code {}: {}", kProgram, cell, r.exit_code,
                 last_line(text));
    return std::stoll(text);
  }

  /// The hidden size whose parameter count is closest to `target` (the count grows with hidden). xLSTM cells run
  /// 4 heads in char_lm, so their hidden size is a multiple of 4.
  std::int64_t matching_hidden(const std::string& cell, std::int64_t target) const {
    const std::int64_t unit = cell == "slstm" || cell == "mlstm" ? 4 : 1;
    const auto count = [&](std::int64_t k) { return count_params(cell, k * unit); };
    std::int64_t lo = 1, hi = 8192 / unit;
    while (lo < hi) {  // smallest k with count >= target
      const std::int64_t mid = (lo + hi) / 2;
      if (count(mid) >= target)
        hi = mid;
      else
        lo = mid + 1;
    }
    if (lo > 1 && std::llabs(count(lo - 1) - target) <= std::llabs(count(lo) - target)) --lo;
    return lo * unit;
  }
};

// ---------------------------------------------------------------------------------------------------------
// One training run and what it measured

struct Result {
  std::string cell;
  std::int64_t hidden = 0, params = 0;
  double final_bpc = NAN, best_bpc = NAN, tokens_per_s = NAN, train_seconds = 0, peak_rss_mib = 0;
  std::vector<double> eval_step{}, eval_seconds{}, eval_bpc{};  ///< validation curve: step, training time, bits/char
};

Result train(const Runner& runner, const std::string& cell, std::int64_t hidden, std::int64_t params) {
  const Options& o = runner.o;
  const std::filesystem::path dir = runner.out / cell;
  std::vector<std::string> args = runner.model_args(cell, hidden);
  for (const std::string& a :
       {std::string("--out"), dir.string(), std::string("--steps"), std::to_string(o.steps), std::string("--lr"),
        fmt::format("{}", o.lr), std::string("--eval-every"), std::to_string(o.eval_every),
        std::string("--checkpoint-every"), std::to_string(o.steps), std::string("--sample-chars"), std::string("0"),
        std::string("--threads"), std::to_string(o.threads)})
    args.push_back(a);
  if (o.smoke) args.push_back("--smoke");
  std::filesystem::create_directories(dir);
  const std::string log = (runner.out / (cell + ".log")).string();
  fmt::print("{}: training {} (hidden {}, {} parameters) ...\n", kProgram, cell, hidden, params);
  std::fflush(stdout);
  const ChildResult r = run_child(args, log);
  UNROLL_CHECK(r.exit_code == 0, examples::UsageError, "{}: char_lm --cell {} failed; got exit code {}: {} (see {})",
               kProgram, cell, r.exit_code, last_line(file_text(log)), log);

  Result res{.cell = cell, .hidden = hidden, .params = params, .peak_rss_mib = r.peak_rss_mib};
  const examples::CsvTable t = examples::read_csv((dir / "metrics.csv").string());
  const int c_step = t.column("step"), c_val = t.column("val_bpc"), c_tps = t.column("tokens_per_s");
  double prev_step = 0, tokens = 0;
  for (const auto& row : t.rows) {
    const double step = *row[static_cast<std::size_t>(c_step)];
    // Each row's tokens/s covers the steps since the previous row, training time only (not validation).
    if (const auto tps = row[static_cast<std::size_t>(c_tps)]; tps && *tps > 0) {
      const double interval_tokens = (step - prev_step) * static_cast<double>(o.window * o.batch);
      tokens += interval_tokens;
      res.train_seconds += interval_tokens / *tps;
    }
    prev_step = step;
    if (const auto v = row[static_cast<std::size_t>(c_val)]) {
      res.eval_step.push_back(step);
      res.eval_seconds.push_back(res.train_seconds);
      res.eval_bpc.push_back(*v);
    }
  }
  UNROLL_CHECK(!res.eval_bpc.empty(), examples::UsageError, "{}: char_lm --cell {} wrote no validation result to {}",
               kProgram, cell, (dir / "metrics.csv").string());
  res.final_bpc = res.eval_bpc.back();
  res.best_bpc = *std::min_element(res.eval_bpc.begin(), res.eval_bpc.end());
  res.tokens_per_s = res.train_seconds > 0 ? tokens / res.train_seconds : NAN;
  return res;
}

std::string markdown_table(const std::vector<Result>& results, const Options& o, std::int64_t target) {
  std::string s = fmt::format(
      "Budget: {} parameters (a {}-layer {} of {}); {} steps of {} streams x {} characters, Adam lr {}.\n\n", target,
      o.layers, o.budget_cell, o.budget_hidden, o.steps, o.batch, o.window, o.lr);
  s += "| cell | hidden | parameters | val bits/char (final) | best | tokens/s | train time (s) | peak RSS (MiB) |\n";
  s += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const Result& r : results)
    s += fmt::format("| {} | {} | {} | {:.3f} | {:.3f} | {:.0f} | {:.1f} | {:.0f} |\n", r.cell, r.hidden, r.params,
                     r.final_bpc, r.best_bpc, r.tokens_per_s, r.train_seconds, r.peak_rss_mib);
  return s;
}

void check_options(const Options& o, const std::vector<std::string>& cells) {
  using examples::check_flag_range;
  UNROLL_CHECK(!cells.empty(), examples::UsageError,
               "{}: --cells is empty; got '{}', expected a comma-separated list of cells", kProgram, o.cells);
  check_flag_range<std::int64_t>(kProgram, "--budget-hidden", o.budget_hidden, 1, 8192);
  check_flag_range<std::int64_t>(kProgram, "--layers", o.layers, 1, 16);
  check_flag_range<std::int64_t>(kProgram, "--steps", o.steps, 1, 100000000);
  check_flag_range<std::int64_t>(kProgram, "--eval-every", o.eval_every, 1, 100000000);
}

int run(const Options& o) {
  const std::vector<std::string> cells = split_list(o.cells);
  check_options(o, cells);
  std::filesystem::create_directories(o.out);
  const Runner runner{o, o.char_lm, std::filesystem::path(o.out)};
  // Unknown cells, a missing data file and bad flags get char_lm's own messages here, before any training.
  const std::int64_t target = runner.count_params(o.budget_cell, o.budget_hidden);
  std::vector<Result> results;
  for (const std::string& cell : cells) {
    const std::int64_t hidden = cell == o.budget_cell ? o.budget_hidden : runner.matching_hidden(cell, target);
    results.push_back(train(runner, cell, hidden, runner.count_params(cell, hidden)));
    fmt::print("{}: {} validation {:.3f} bits/char, {:.0f} tokens/s, peak {:.0f} MiB\n", kProgram, cell,
               results.back().final_bpc, results.back().tokens_per_s, results.back().peak_rss_mib);
  }

  const std::string table = markdown_table(results, o, target);
  fmt::print("\n{}", table);
  std::ofstream((std::filesystem::path(o.out) / "compare.md").string()) << table;
  examples::LinePlot by_step{.title = "compare_cells: validation at equal parameter count",
                             .x_label = "training step",
                             .y_label = "validation bits per character"};
  examples::LinePlot by_time{.title = "compare_cells: validation against training time",
                             .x_label = "training seconds",
                             .y_label = "validation bits per character"};
  for (const Result& r : results) {
    const std::string name = fmt::format("{} ({})", r.cell, r.hidden);
    by_step.series.push_back({.name = name, .x = r.eval_step, .y = r.eval_bpc, .markers = true});
    by_time.series.push_back({.name = name, .x = r.eval_seconds, .y = r.eval_bpc, .markers = true});
  }
  examples::write_line_plot((std::filesystem::path(o.out) / "compare_steps.svg").string(), by_step);
  examples::write_line_plot((std::filesystem::path(o.out) / "compare_time.svg").string(), by_time);
  fmt::print("{}: wrote {}/compare.md, compare_steps.svg, compare_time.svg and each run's directory\n", kProgram,
             o.out);
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main(kProgram, [&]() -> int {
    Options o;
    CLI::App app{
        "compare_cells: char_lm trained once per recurrent cell at equal parameter count; validation bits/char, "
        "tokens/s and peak memory, with plots.",
        kProgram};
    app.get_formatter()->column_width(34);
    app.add_option("--cells", o.cells, "comma-separated char_lm cells to train")->capture_default_str();
    app.add_option("--budget-cell", o.budget_cell, "the reference model's cell ...")->capture_default_str();
    app.add_option("--budget-hidden", o.budget_hidden, "... and hidden size: every model gets its parameter count")
        ->capture_default_str();
    app.add_option("--layers", o.layers, "layers of every model")->capture_default_str();
    app.add_option("--embed", o.embed, "embedding size")->capture_default_str();
    app.add_option("--window", o.window, "T: characters per truncated-BPTT window")->capture_default_str();
    app.add_option("--batch", o.batch, "B: parallel streams through the text")->capture_default_str();
    app.add_option("--steps", o.steps, "training steps, the same for every model")->capture_default_str();
    app.add_option("--lr", o.lr, "Adam learning rate, the same for every model")->capture_default_str();
    app.add_option("--eval-every", o.eval_every, "validate every N steps")->capture_default_str();
    app.add_option("--threads", o.threads, "threads per run (0: all cores)")->capture_default_str();
    app.add_option("--data", o.data, "training text")->capture_default_str();
    app.add_option("--out", o.out, "directory for compare.md, the plots and each run")->capture_default_str();
    app.add_option("--char-lm", o.char_lm, "the char_lm program [next to this one]");
    app.add_flag("--smoke", o.smoke, "tiny runs of a few seconds (what CI runs)");
    if (auto code = examples::parse_command_line(app, argc, argv)) return *code;
    if (o.smoke) {
      const examples::FlagDefaults def(app);
      def("--cells", o.cells, std::string("lstm,mingru,rglru"));
      def("--budget-hidden", o.budget_hidden, std::int64_t{48});
      def("--embed", o.embed, std::int64_t{16});
      def("--window", o.window, std::int64_t{32});
      def("--batch", o.batch, std::int64_t{16});
      def("--steps", o.steps, std::int64_t{80});
      def("--eval-every", o.eval_every, std::int64_t{40});
      def("--out", o.out, std::string("runs/compare_cells_smoke"));
    }
    if (o.char_lm.empty()) {
      std::error_code ec;
      const std::filesystem::path self = std::filesystem::canonical("/proc/self/exe", ec);
      o.char_lm = ((ec ? std::filesystem::path(argv[0]) : self).parent_path() / "char_lm").string();
    }
    return run(o);
  });
}
