// bench/harness.hpp — shared command-line, timing and reporting code for the
// benchmark binaries (unroll-bench, torch-bench).
//
// Header-only and deliberately free of any dependency on unroll or LibTorch:
// both binaries must parse flags, time steps and print results in exactly
// the same way, or their numbers are not comparable.  Only the standard
// library, POSIX getrusage and nlohmann/json are used.
//
// Written to compile as C++17 as well as C++20, because torch-bench may have
// to be built as C++17 when the LibTorch headers object to C++20.
//
// Output contract: one JSON object per line on stdout,
//   {"workload":..., "impl":..., "config":{...}, "ms_median":..., "ms_min":...,
//    "ms_max":..., "tokens_per_s":..., "peak_rss_kb":...[, "extra":{...}]}
// Usage errors (unknown workload, malformed or unknown flag) go to stderr
// and exit with code 2.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace bench {

// Thrown for anything the user typed wrong.  run_main() turns it into a
// message on stderr and exit code 2; other exceptions exit with 1, so a
// script can tell "bad invocation" from "benchmark crashed".
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

// Parsed command line.  The four common settings are fields; every other
// `--key value` pair is kept in `flags` for the workload to read with the
// typed getters.  The getters remember which keys were asked for, so that
// unused_flags() can report flags that no workload consumed (typically a typo
// such as --hiden, which would otherwise silently benchmark the default).
struct Args {
  std::string workload;
  int threads = 1;
  int steps = 20;
  int warmup = 3;
  bool help = false;
  std::map<std::string, std::string> flags;  // key without the leading "--"

  // Parse argv.  Accepted forms: `--key value` and `--help`/`-h`.
  // Throws UsageError for a bare word, a flag without a value, a repeated
  // flag or a bad value for one of the common settings.
  static Args parse(int argc, const char* const* argv) {
    Args a;
    bool seen_threads = false, seen_steps = false, seen_warmup = false;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (arg == "--help" || arg == "-h") {
        a.help = true;
        continue;
      }
      if (arg.size() < 3 || arg.compare(0, 2, "--") != 0)
        throw UsageError("malformed argument '" + arg + "' (expected --key value)");
      // A value may itself start with '-' (a negative number), but not
      // with "--": that would almost certainly be a forgotten value.
      if (i + 1 >= argc || std::string(argv[i + 1]).compare(0, 2, "--") == 0)
        throw UsageError("flag " + arg + " needs a value");
      const std::string key = arg.substr(2);
      const std::string value = argv[++i];
      if (key == "workload") {
        if (!a.workload.empty()) throw UsageError("flag --workload given twice");
        a.workload = value;
      } else if (key == "threads") {
        a.threads = parse_common(key, value, 1, seen_threads);
      } else if (key == "steps") {
        a.steps = parse_common(key, value, 1, seen_steps);
      } else if (key == "warmup") {
        a.warmup = parse_common(key, value, 0, seen_warmup);
      } else if (!a.flags.emplace(key, value).second) {
        throw UsageError("flag " + arg + " given twice");
      }
    }
    return a;
  }

  // Integer flag, or `def` when absent.  Throws UsageError when the value is
  // not a whole integer or is below `min_value` (e.g. pass 1 for sizes, so
  // that --batch 0 is rejected instead of dividing by zero later).
  int get_int(const std::string& key, int def, int min_value = std::numeric_limits<int>::min()) {
    used_.insert(key);
    auto it = flags.find(key);
    if (it == flags.end()) return def;
    return to_int(key, it->second, min_value);
  }

  // Floating-point flag, or `def` when absent.
  double get_double(const std::string& key, double def) {
    used_.insert(key);
    auto it = flags.find(key);
    if (it == flags.end()) return def;
    // std::stod rather than from_chars<double>: the latter is missing from
    // some older standard libraries and speed does not matter here.
    std::size_t pos = 0;
    double v = 0;
    try {
      v = std::stod(it->second, &pos);
    } catch (const std::exception&) {
      pos = 0;
    }
    if (pos == 0 || pos != it->second.size() || !std::isfinite(v))
      throw UsageError("flag --" + key + " expects a number, got '" + it->second + "'");
    return v;
  }

  // String flag, or `def` when absent.
  std::string get_str(const std::string& key, const std::string& def) {
    used_.insert(key);
    auto it = flags.find(key);
    return it == flags.end() ? def : it->second;
  }

  // Workload-specific flags that were given but never read by a getter.
  std::vector<std::string> unused_flags() const {
    std::vector<std::string> out;
    for (const auto& kv : flags)
      if (!used_.count(kv.first)) out.push_back("--" + kv.first);
    return out;
  }

  // Throws UsageError naming every unconsumed flag.  Call after the workload
  // has read all its flags (run_main does this for you).
  void check_all_used() const {
    const auto unused = unused_flags();
    if (unused.empty()) return;
    std::string msg = "unknown flag";
    if (unused.size() > 1) msg += "s";
    msg += " for workload '" + workload + "':";
    for (const auto& f : unused) msg += " " + f;
    throw UsageError(msg);
  }

 private:
  std::set<std::string> used_;

  static int to_int(const std::string& key, const std::string& s, int min_value) {
    int v = 0;
    const char* first = s.data();
    const char* last = s.data() + s.size();
    auto [ptr, ec] = std::from_chars(first, last, v);
    if (s.empty() || ec != std::errc() || ptr != last)
      throw UsageError("flag --" + key + " expects an integer, got '" + s + "'");
    if (v < min_value) throw UsageError("flag --" + key + " must be >= " + std::to_string(min_value) + ", got " + s);
    return v;
  }

  static int parse_common(const std::string& key, const std::string& s, int min_value, bool& seen) {
    if (seen) throw UsageError("flag --" + key + " given twice");
    seen = true;
    return to_int(key, s, min_value);
  }
};

// ---------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------

// Per-step wall-clock times in milliseconds.  The median is the headline
// number: it ignores the occasional step hit by a page fault, allocator growth
// or the other process on a shared machine, which would skew a mean.
struct Timing {
  double ms_median = 0;
  double ms_min = 0;
  double ms_max = 0;
  std::vector<double> samples_ms;  // in the order they were run
};

// Wall time of one call of f, in ms.
inline double time_ms(const std::function<void()>& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// Median of a sample (0 for an empty one).
inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return (n % 2 == 1) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Runs `warmup` untimed steps (first-touch allocation, thread-pool start-up,
// caches), then `steps` individually timed ones.  Each step is timed on its
// own so min/median/max describe the step distribution, not just an average.
// steady_clock because it never jumps with wall-clock adjustments.
inline Timing run_timed(int warmup, int steps, const std::function<void()>& step) {
  if (steps < 1) throw std::invalid_argument("run_timed: steps must be >= 1");
  for (int i = 0; i < warmup; ++i) step();

  Timing t;
  t.samples_ms.reserve(static_cast<std::size_t>(steps));
  for (int i = 0; i < steps; ++i) t.samples_ms.push_back(time_ms(step));

  t.ms_min = *std::min_element(t.samples_ms.begin(), t.samples_ms.end());
  t.ms_max = *std::max_element(t.samples_ms.begin(), t.samples_ms.end());
  t.ms_median = median(t.samples_ms);
  return t;
}

// ---------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------

// Peak resident set size of this process so far, in KiB (Linux reports
// ru_maxrss in kilobytes).  It includes the framework's own footprint (the
// LibTorch shared libraries alone are large), which is part of the cost.
inline long peak_rss_kb() {
  struct rusage ru {};
  if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
  return ru.ru_maxrss;
}

namespace detail {
// Round to `digits` decimals for readability; finer digits are noise anyway.
// Multiply-then-divide by a power of ten (not multiply by 1e-4) so the result
// is the double nearest the decimal and prints short (13.9386, not
// 13.938600000000001).
inline double round_to(double v, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(v * scale) / scale;
}
}  // namespace detail

// Prints one result line and flushes, so a driver script reading the pipe sees
// each result immediately even when several runs share one process.
// Key order is fixed (ordered_json) so lines are easy to eyeball and diff.
inline void print_result(const std::string& workload, const std::string& impl, const nlohmann::json& config,
                         const Timing& t, double tokens_per_step, const nlohmann::json& extra = nullptr) {
  nlohmann::ordered_json out;
  out["workload"] = workload;
  out["impl"] = impl;
  out["config"] = nlohmann::ordered_json(config);
  out["ms_median"] = detail::round_to(t.ms_median, 4);
  out["ms_min"] = detail::round_to(t.ms_min, 4);
  out["ms_max"] = detail::round_to(t.ms_max, 4);
  // A median of 0 ms cannot happen with a real step, but guard anyway:
  // JSON has no infinity and nlohmann would print null.
  out["tokens_per_s"] = t.ms_median > 0 ? detail::round_to(tokens_per_step / (t.ms_median / 1000.0), 1) : 0.0;
  out["peak_rss_kb"] = peak_rss_kb();
  if (!extra.is_null()) out["extra"] = nlohmann::ordered_json(extra);
  std::cout << out.dump() << std::endl;  // endl: flush
}

// ---------------------------------------------------------------------------
// Driver shared by both binaries
// ---------------------------------------------------------------------------

// What a workload hands back after reading its flags and building its model
// and data: the effective config to echo, the token count of one step, and
// the step itself.  Setup is kept out of the timed region by construction.
struct Prepared {
  nlohmann::json config;   // the workload's own sizes; run_main adds threads/steps/warmup
  double tokens_per_step;  // batch * seq
  std::function<void()> step;
  // Optional: results of the workload's own that the timing of whole steps cannot show (e.g. the two halves
  // of a paired step), added to the output line under "extra" after the timed run.
  std::function<nlohmann::json()> extra = nullptr;
};

struct Workload {
  std::string name;
  std::string help;  // one line: what it measures and its flags with defaults
  std::function<Prepared(Args&)> prepare;
};

inline void print_usage(std::ostream& os, const std::string& prog, const std::vector<Workload>& workloads) {
  os << "usage: " << prog << " --workload NAME [--threads N] [--steps N] [--warmup N]"
     << " [workload flags as --key value]\n"
     << "  --threads N   worker threads (default 1)\n"
     << "  --steps N     timed steps (default 20)\n"
     << "  --warmup N    untimed steps run first (default 3)\n"
     << "prints one JSON line per run; usage errors exit with code 2\n"
     << "workloads:\n";
  for (const auto& w : workloads) os << "  " << w.name << "  " << w.help << "\n";
}

// The whole main() of a benchmark binary:
//   parse -> --help? -> find workload -> set_threads -> prepare (reads flags)
//   -> reject unconsumed flags -> run_timed -> print_result.
// `set_threads` is called before the workload builds anything, since
// libraries usually fix their thread pools on first use.
// Returns the process exit code: 0 ok, 1 runtime failure, 2 usage error.
inline int run_main(int argc, const char* const* argv, const std::string& impl, const std::vector<Workload>& workloads,
                    const std::function<void(int threads)>& set_threads) {
  const std::string prog = argc > 0 ? argv[0] : "bench";
  try {
    Args args = Args::parse(argc, argv);
    if (args.help) {
      print_usage(std::cout, prog, workloads);
      return 0;
    }
    if (args.workload.empty()) throw UsageError("missing --workload NAME");
    auto it =
        std::find_if(workloads.begin(), workloads.end(), [&](const Workload& w) { return w.name == args.workload; });
    if (it == workloads.end()) {
      std::string known;
      for (const auto& w : workloads) known += (known.empty() ? "" : ", ") + w.name;
      throw UsageError("unknown workload '" + args.workload + "' (known: " + known + ")");
    }

    set_threads(args.threads);
    Prepared p = it->prepare(args);
    args.check_all_used();

    const Timing t = run_timed(args.warmup, args.steps, p.step);
    nlohmann::json config = p.config;
    config["threads"] = args.threads;
    config["steps"] = args.steps;
    config["warmup"] = args.warmup;
    print_result(args.workload, impl, config, t, p.tokens_per_step, p.extra ? p.extra() : nlohmann::json());
    return 0;
  } catch (const UsageError& e) {
    std::cerr << prog << ": error: " << e.what() << "\n"
              << "run '" << prog << " --help' for usage\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << prog << ": failed: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace bench
