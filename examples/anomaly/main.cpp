// anomaly: anomalies in a time series flagged by an LSTM forecaster's errors. The model predicts each value from the
// W before it; a value it predicts badly (its error, in units of the training errors' typical size) is flagged.
// On US daily births 2000–2014, where the labelled anomalies are the US federal holidays (births fall to ~0.78x on
// them: scheduled deliveries move), against a seasonal detector (each day predicted by the median of the same
// weekday over the four weeks before). Reports precision, recall and F1 at a threshold chosen on the training
// period, and ROC-AUC (threshold-free) on the test period; plots the last year with detections and true events.
//
//   anomaly                                    # births: train 2000-2009, test 2010-2014, ~2 s on 2 cores
//   anomaly --data sensors.csv --value-column temp --label-column fault --group-column sensor --group s7
//   anomaly --data mine.csv --value-column v   # no labels: flags the top 1% of scores, lists them
#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <unroll/unroll.hpp>

#include "../common/cli.hpp"
#include "../common/csv.hpp"
#include "../common/data.hpp"
#include "../common/progress.hpp"
#include "../common/series.hpp"
#include "../common/smoke.hpp"
#include "../common/svg_plot.hpp"

using namespace unroll;

#ifndef ANOMALY_DEFAULT_DATA
#define ANOMALY_DEFAULT_DATA "data/us_births/us_births_2000_2014.csv"
#endif

namespace {
constexpr const char* kProgram = "anomaly";

struct Options {
  std::string data = ANOMALY_DEFAULT_DATA;
  std::string test;  ///< the values that follow --data's, to test on (instead of its last --test-fraction)
  std::string value_column = "births", label_column = "holiday", group_column, group;
  std::string out = "runs/anomaly";
  bool log = true;  ///< model log(value) (positive series whose swings scale with their level)
  double test_fraction = 1.0 / 3;
  std::int64_t window = 28, hidden = 32, batch = 32, steps = 1500, log_every = 100, season = 7;
  double lr = 3e-3, clip = 1.0;
  std::uint64_t seed = 1;
  int threads = 0;
  bool smoke = false;
};

void check_options(const Options& o) {
  using examples::check_flag_range;
  check_flag_range(kProgram, "--test-fraction", o.test_fraction, 0.05, 0.9);
  check_flag_range<std::int64_t>(kProgram, "--window", o.window, 2, 10000);
  check_flag_range<std::int64_t>(kProgram, "--hidden", o.hidden, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--batch", o.batch, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--steps", o.steps, 1, 10000000);
  check_flag_range<std::int64_t>(kProgram, "--log-every", o.log_every, 1, 10000000);
  check_flag_range<std::int64_t>(kProgram, "--season", o.season, 1, 1000);
  check_flag_range(kProgram, "--lr", o.lr, 0.0, 1e30);  // absurd rates allowed: divergence is caught
  check_flag_range(kProgram, "--clip", o.clip, 0.0, 1e9);
  check_flag_range(kProgram, "--threads", o.threads, 0, 1024);
  UNROLL_CHECK(o.group.empty() == o.group_column.empty(), examples::UsageError,
               "{}: --group-column and --group go together; got {}, expected both or neither", kProgram,
               o.group.empty() ? "--group-column alone" : "--group alone");
}

// ---------------------------------------------------------------------------------------------------------
// Data

struct Data {
  std::vector<double> y;            ///< the values, in order
  std::vector<int> label;           ///< 0/1, or empty: no labels
  std::vector<std::string> date;    ///< the first column's text, per value
  std::int64_t n_train = 0;         ///< [0, n_train) trains, the rest tests
};

/// One CSV's rows (of --group, if given): the value, the optional label, the first column.
void append_rows(const Options& o, const std::string& path, const char* flag, Data& d, bool want_labels) {
  const examples::TextTable t = examples::read_text_table(kProgram, flag, path);
  const auto col = [&](const std::string& name, const char* which) {
    const int c = t.column(name);
    UNROLL_CHECK(c >= 0, examples::UsageError, "{}: no such column in the {} file; got {} '{}' in '{}', expected one of {}",
                 kProgram, flag, which, name, path, fmt::join(t.columns, ", "));
    return static_cast<std::size_t>(c);
  };
  const std::size_t vc = col(o.value_column, "--value-column");
  // (plain indices with a flag: GCC 12 misreads optional<size_t> here as maybe uninitialised)
  const bool has_label = want_labels, has_group = !o.group_column.empty();
  const std::size_t lc = has_label ? col(o.label_column, "--label-column") : 0;
  const std::size_t gc = has_group ? col(o.group_column, "--group-column") : 0;
  for (std::size_t r = 0; r < t.rows.size(); ++r) {
    const auto& row = t.rows[r];
    if (has_group && row[gc] != o.group) continue;
    double v = 0;
    const std::string& cell = row[vc];
    const auto [end, err] = std::from_chars(cell.data(), cell.data() + cell.size(), v);
    UNROLL_CHECK(err == std::errc() && end == cell.data() + cell.size() && std::isfinite(v) && (!o.log || v > 0),
                 examples::UsageError, "{}: {} file has a bad value; got '{}' at line {} of '{}', expected a {} number",
                 kProgram, flag, examples::printable(cell), t.lines[r], path, o.log ? "positive" : "finite");
    d.y.push_back(v);
    d.date.push_back(row[0]);
    if (has_label) {
      UNROLL_CHECK(row[lc] == "0" || row[lc] == "1", examples::UsageError,
                   "{}: {} file has a bad label; got '{}' at line {} of '{}', expected 0 or 1 in column '{}'", kProgram,
                   flag, examples::printable(row[lc]), t.lines[r], path, o.label_column);
      d.label.push_back(row[lc] == "1");
    }
  }
}

Data load(const Options& o, bool labels_given) {
  Data d;
  // Labels: the default column when the file has it, or the one the user named (then it must exist).
  bool want_labels = labels_given;
  if (!labels_given) {
    const examples::TextTable t = examples::read_text_table(kProgram, "--data", o.data);
    want_labels = t.column(o.label_column) >= 0;
  }
  append_rows(o, o.data, "--data", d, want_labels);
  const auto n_data = static_cast<std::int64_t>(d.y.size());
  if (!o.test.empty()) append_rows(o, o.test, "--test", d, want_labels);
  const auto n = static_cast<std::int64_t>(d.y.size());
  d.n_train = o.test.empty() ? n - static_cast<std::int64_t>(std::llround(static_cast<double>(n) * o.test_fraction)) : n_data;
  const std::int64_t need = 4 * o.season + o.window + 2;  // the baseline's history, a window, a target
  UNROLL_CHECK(d.n_train >= need + o.batch && n - d.n_train >= 1, examples::UsageError,
               "{}: too few values{}; got {} for training and {} for testing in '{}', expected at least {} and 1",
               kProgram, o.group.empty() ? "" : fmt::format(" for --group '{}'", o.group), d.n_train, n - d.n_train,
               o.data, need + o.batch);
  return d;
}

// ---------------------------------------------------------------------------------------------------------
// Detectors: a score per day (higher = more anomalous), from day `first` on.

/// Robust scale: the median absolute value of `r` over [a, b), times 1.4826 (a normal's sigma), at least 1e-12.
double mad_scale(const std::vector<double>& r, std::int64_t a, std::int64_t b) {
  std::vector<double> v;
  for (std::int64_t i = a; i < b; ++i) v.push_back(std::abs(r[static_cast<std::size_t>(i)]));
  if (v.empty()) return 1;
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return std::max(1e-12, 1.4826 * v[v.size() / 2]);
}

/// The seasonal detector: each day's value predicted by the median of the same season position over the four
/// seasons before (weekday, with --season 7); its error, scaled. z: the (log-)values.
std::vector<double> seasonal_scores(const std::vector<double>& z, std::int64_t m, std::int64_t first, std::int64_t n_train) {
  std::vector<double> r(z.size(), 0.0);
  for (std::size_t t = static_cast<std::size_t>(first); t < z.size(); ++t) {
    std::array<double, 4> past{};
    for (std::size_t k = 0; k < 4; ++k) past[k] = z[t - (k + 1) * static_cast<std::size_t>(m)];
    std::sort(past.begin(), past.end());
    r[t] = z[t] - 0.5 * (past[1] + past[2]);
  }
  const double s = mad_scale(r, first, n_train);
  for (double& v : r) v = std::abs(v) / s;
  return r;
}

/// The LSTM forecaster: the W values before each day -> that day's value (normalised log-values); the last
/// layer's final state -> a linear read-out.
class Forecaster : public nn::Module {
 public:
  explicit Forecaster(std::int64_t hidden) : lstm({.input_size = 1, .hidden_size = hidden}), head(hidden, 1) {
    register_module("lstm", lstm);
    register_module("head", head);
  }
  Tensor forward(const Tensor& x) const { return reshape(head(select(lstm(x).h_n, 0, 0)), {-1}); }  // x [W, B, 1] -> [B]
  nn::LSTM lstm;
  nn::Linear head;
};

/// Windows ending just before each target day: inputs [W, B, 1], targets [B].
std::pair<Tensor, Tensor> batch_of(const std::vector<double>& z, const std::vector<std::int64_t>& targets, std::int64_t W) {
  const auto B = static_cast<std::int64_t>(targets.size());
  std::vector<double> in(static_cast<std::size_t>(W * B)), out;
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t t = targets[static_cast<std::size_t>(b)];
    for (std::int64_t k = 0; k < W; ++k) in[static_cast<std::size_t>(k * B + b)] = z[static_cast<std::size_t>(t - W + k)];
    out.push_back(z[static_cast<std::size_t>(t)]);
  }
  return {tensor(in, {W, B, 1}), tensor(out, {B})};
}

// ---------------------------------------------------------------------------------------------------------
// Metrics

struct Detection {
  double threshold = 0, precision = NAN, recall = NAN, f1 = NAN, auc = NAN;
  std::int64_t flagged = 0;
};

/// ROC-AUC of `score` against `label` over [a, b): the chance that an anomaly outscores a normal day (ties half).
double roc_auc(const std::vector<double>& score, const std::vector<int>& label, std::int64_t a, std::int64_t b) {
  std::vector<std::pair<double, int>> v;
  for (std::int64_t i = a; i < b; ++i) v.emplace_back(score[static_cast<std::size_t>(i)], label[static_cast<std::size_t>(i)]);
  std::sort(v.begin(), v.end());
  double rank_sum = 0, pos = 0;
  for (std::size_t i = 0; i < v.size();) {
    std::size_t j = i;
    while (j < v.size() && v[j].first == v[i].first) ++j;
    const double mid = 0.5 * static_cast<double>(i + 1 + j);  // the tied block's mean rank (1-based)
    for (std::size_t k = i; k < j; ++k)
      if (v[k].second) rank_sum += mid, ++pos;
    i = j;
  }
  const double neg = static_cast<double>(v.size()) - pos;
  return pos > 0 && neg > 0 ? (rank_sum - pos * (pos + 1) / 2) / (pos * neg) : NAN;
}

Detection evaluate(const std::vector<double>& score, const std::vector<int>& label, double threshold, std::int64_t a,
                   std::int64_t b) {
  Detection d{.threshold = threshold};
  std::int64_t tp = 0, fp = 0, fn = 0;
  for (std::int64_t i = a; i < b; ++i) {
    const bool flag = score[static_cast<std::size_t>(i)] > threshold;
    d.flagged += flag;
    if (label.empty()) continue;
    const bool truth = label[static_cast<std::size_t>(i)] != 0;
    tp += flag && truth, fp += flag && !truth, fn += !flag && truth;
  }
  if (label.empty()) return d;
  d.precision = tp + fp > 0 ? static_cast<double>(tp) / static_cast<double>(tp + fp) : 0;
  d.recall = tp + fn > 0 ? static_cast<double>(tp) / static_cast<double>(tp + fn) : 0;
  d.f1 = d.precision + d.recall > 0 ? 2 * d.precision * d.recall / (d.precision + d.recall) : 0;
  d.auc = roc_auc(score, label, a, b);
  return d;
}

/// The threshold used on the test period, chosen on the training period [a, b): the best F1 there when it has
/// labelled anomalies (one sweep over the sorted scores), else the 99th percentile of the scores (the top 1%).
double choose_threshold(const std::vector<double>& score, const std::vector<int>& label, std::int64_t a, std::int64_t b) {
  std::vector<std::pair<double, int>> v;
  std::int64_t positives = 0;
  for (std::int64_t i = a; i < b; ++i) {
    const int y = label.empty() ? 0 : label[static_cast<std::size_t>(i)];
    v.emplace_back(score[static_cast<std::size_t>(i)], y);
    positives += y;
  }
  std::sort(v.begin(), v.end(), [](const auto& x, const auto& y) { return x.first > y.first; });  // highest first
  if (positives == 0) return v[static_cast<std::size_t>(0.01 * static_cast<double>(v.size() - 1))].first;
  // Flagging the k highest (a threshold just below the k-th score, between tied blocks only).
  double best = v.front().first, best_f1 = 0;
  std::int64_t tp = 0, fp = 0;
  for (std::size_t i = 0; i < v.size(); ++i) {
    (v[i].second ? tp : fp) += 1;
    if (i + 1 < v.size() && v[i + 1].first == v[i].first) continue;
    const double f1 = 2.0 * static_cast<double>(tp) / static_cast<double>(tp + fp + positives);
    if (f1 > best_f1) best_f1 = f1, best = i + 1 < v.size() ? v[i + 1].first : v[i].first - 1;
  }
  return best;
}

/// "YYYY-MM-DD" -> years as a number (for the plot's axis), else the row index.
double x_of(const std::string& date, std::int64_t i) {
  int y = 0, m = 0, d = 0;
  if (date.size() == 10 && std::sscanf(date.c_str(), "%d-%d-%d", &y, &m, &d) == 3)
    return y + ((m - 1) * 30.44 + (d - 1)) / 365.25;
  return static_cast<double>(i);
}

// ---------------------------------------------------------------------------------------------------------

int run(const Options& o, bool labels_given) {
  if (o.threads > 0) set_num_threads(o.threads);
  const Data d = load(o, labels_given);
  const auto n = static_cast<std::int64_t>(d.y.size());
  const bool labelled = !d.label.empty();
  // Normalised (log-)values, with the training period's mean and deviation.
  std::vector<double> z;
  for (double v : d.y) z.push_back(o.log ? std::log(v) : v);
  double mean = 0, var = 0;
  for (std::int64_t i = 0; i < d.n_train; ++i) mean += z[static_cast<std::size_t>(i)];
  mean /= static_cast<double>(d.n_train);
  for (std::int64_t i = 0; i < d.n_train; ++i) var += (z[static_cast<std::size_t>(i)] - mean) * (z[static_cast<std::size_t>(i)] - mean);
  const double sd = std::max(1e-12, std::sqrt(var / static_cast<double>(d.n_train)));
  for (double& v : z) v = (v - mean) / sd;
  const std::int64_t first = std::max(o.window, 4 * o.season);  // the first day both detectors can score
  std::int64_t anomalies_train = 0, anomalies_test = 0;
  for (std::int64_t i = 0; i < n && labelled; ++i) (i < d.n_train ? anomalies_train : anomalies_test) += d.label[static_cast<std::size_t>(i)];
  fmt::print("{}: {} values of '{}'{} in '{}': {} for training ({} to {}), {} for testing{}\n", kProgram, n, o.value_column,
             o.group.empty() ? "" : fmt::format(" (group {})", o.group), o.data, d.n_train, d.date.front(),
             d.date[static_cast<std::size_t>(d.n_train - 1)], n - d.n_train,
             labelled ? fmt::format("; labelled anomalies: {} and {}", anomalies_train, anomalies_test) : "; no labels");

  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  UNROLL_CHECK(!ec, examples::UsageError, "{}: cannot create --out directory; got '{}' ({}), expected a writable path",
               kProgram, o.out, ec.message());
  const std::filesystem::path out_dir(o.out);

  // Train the forecaster on the training period's days.
  manual_seed(o.seed);
  Forecaster model(o.hidden);
  optim::Adam opt(model.parameters(), {.lr = o.lr});
  optim::CosineAnnealingLR schedule(opt, o.steps, o.lr / 10);
  Generator gen(o.seed ^ 0xa5a5u);
  examples::CsvWriter metrics((out_dir / "metrics.csv").string(), {"step", "train_loss"});
  examples::Progress progress({.total_steps = o.steps, .first_step = 0, .tokens_per_step = o.batch * o.window, .plain_every = o.log_every});
  examples::DivergenceWatch divergence(
      {.program = kProgram, .ceiling = INFINITY, .patience = 1,
       .hint = fmt::format("try a smaller --lr (now {}) or a tighter --clip (now {})", o.lr, o.clip)});
  const std::vector<Tensor> params = model.parameters();
  double interval = 0, smooth = NAN, first_loss = NAN, last_loss = NAN, seconds = 0;
  std::int64_t in_interval = 0;
  for (std::int64_t step = 1; step <= o.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::int64_t> targets;
    for (std::int64_t b = 0; b < o.batch; ++b)
      targets.push_back(first + static_cast<std::int64_t>(gen.next_u64() % static_cast<std::uint64_t>(d.n_train - first)));
    auto [x, y] = batch_of(z, targets, o.window);
    Tensor loss = mse_loss(model.forward(x), y);
    loss.backward();
    const double l = loss.item();
    divergence.check(step, l, [&] { return examples::locate_non_finite(model, [&] { return mse_loss(model.forward(x), y); }); });
    optim::clip_grad_norm_(params, o.clip > 0 ? o.clip : INFINITY);
    opt.step();
    opt.zero_grad();
    schedule.step();
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    smooth = std::isnan(smooth) ? l : 0.95 * smooth + 0.05 * l;
    interval += l, ++in_interval;
    progress.update(step, smooth, fmt::format("lr {:.2e}", opt.lr()));
    if (step % o.log_every == 0 || step == o.steps) {
      last_loss = interval / static_cast<double>(in_interval);
      if (std::isnan(first_loss)) first_loss = last_loss;
      metrics.row({static_cast<double>(step), last_loss});
      interval = 0, in_interval = 0;
    }
  }
  progress.finish();

  // Scores: the forecaster's errors over every day, scaled by their training MAD; the seasonal detector's.
  std::vector<double> residual(static_cast<std::size_t>(n), 0.0);
  {
    NoGradGuard no_grad;
    model.eval();
    for (std::int64_t t = first; t < n; t += 512) {
      std::vector<std::int64_t> targets;
      for (std::int64_t u = t; u < std::min(n, t + 512); ++u) targets.push_back(u);
      auto [x, y] = batch_of(z, targets, o.window);
      const auto pred = model.forward(x).to_vector();
      for (std::size_t k = 0; k < targets.size(); ++k)
        residual[static_cast<std::size_t>(targets[k])] = z[static_cast<std::size_t>(targets[k])] - pred[k];
    }
  }
  const double scale = mad_scale(residual, first, d.n_train);
  std::vector<double> lstm_score(residual.size());
  for (std::size_t i = 0; i < residual.size(); ++i) lstm_score[i] = std::abs(residual[i]) / scale;
  const std::vector<double> base_score = seasonal_scores(z, o.season, first, d.n_train);
  const Detection lstm = evaluate(lstm_score, d.label, choose_threshold(lstm_score, d.label, first, d.n_train), d.n_train, n);
  const Detection base = evaluate(base_score, d.label, choose_threshold(base_score, d.label, first, d.n_train), d.n_train, n);

  // The plot: the last year (or fewer days) of the test period, detections and true events as dots.
  {
    const std::int64_t from = std::max(d.n_train, n - 365);
    examples::PlotSeries series{.name = o.value_column}, flagged{.name = "LSTM detections", .markers = true},
        truth{.name = "labelled anomalies", .markers = true};
    for (std::int64_t i = from; i < n; ++i) {
      const double xi = x_of(d.date[static_cast<std::size_t>(i)], i), yi = d.y[static_cast<std::size_t>(i)];
      series.x.push_back(xi), series.y.push_back(yi);
      if (lstm_score[static_cast<std::size_t>(i)] > lstm.threshold)
        flagged.x.insert(flagged.x.end(), {xi, NAN}), flagged.y.insert(flagged.y.end(), {yi, NAN});
      if (labelled && d.label[static_cast<std::size_t>(i)])
        truth.x.insert(truth.x.end(), {xi, NAN}), truth.y.insert(truth.y.end(), {yi * 0.97, NAN});  // just below
    }
    examples::write_line_plot((out_dir / "anomalies.svg").string(),
                              {.title = fmt::format("anomaly: {} with LSTM detections{}", o.value_column,
                                                    labelled ? " and labelled anomalies (just below)" : ""),
                               .x_label = "time", .y_label = o.value_column, .series = {series, flagged, truth}});
  }
  // Every test day's scores, for the user's own analysis.
  {
    std::string csv = fmt::format("{},value,label,lstm_score,seasonal_score,lstm_flag,seasonal_flag\n", "date");
    for (std::int64_t i = d.n_train; i < n; ++i) {
      const auto k = static_cast<std::size_t>(i);
      csv += fmt::format("{},{},{},{},{},{},{}\n", d.date[k], d.y[k], labelled ? fmt::format("{}", d.label[k]) : "",
                         lstm_score[k], base_score[k], lstm_score[k] > lstm.threshold ? 1 : 0,
                         base_score[k] > base.threshold ? 1 : 0);
    }
    examples::write_file_atomic((out_dir / "scores.csv").string(), csv, kProgram);
  }
  if (!labelled) {  // no labels: the days flagged, highest score first
    std::vector<std::int64_t> days;
    for (std::int64_t i = d.n_train; i < n; ++i)
      if (lstm_score[static_cast<std::size_t>(i)] > lstm.threshold) days.push_back(i);
    std::sort(days.begin(), days.end(), [&](auto a, auto b) { return lstm_score[static_cast<std::size_t>(a)] > lstm_score[static_cast<std::size_t>(b)]; });
    for (std::size_t k = 0; k < std::min<std::size_t>(10, days.size()); ++k)
      fmt::print("{}: flagged {} (value {}, score {:.1f})\n", kProgram, d.date[static_cast<std::size_t>(days[k])],
                 d.y[static_cast<std::size_t>(days[k])], lstm_score[static_cast<std::size_t>(days[k])]);
  }
  fmt::print("{}: trained in {:.1f} s, {} values/s; wrote {}/metrics.csv, anomalies.svg, scores.csv\n", kProgram, seconds,
             examples::format_count(static_cast<double>(o.steps * o.batch * o.window) / seconds), o.out);
  if (labelled)
    fmt::print("{}: seasonal detector: precision {:.2f}, recall {:.2f}, F1 {:.2f}, ROC-AUC {:.3f} ({} flagged)\n",
               kProgram, base.precision, base.recall, base.f1, base.auc, base.flagged);
  if (labelled)
    fmt::print("{}: test precision {:.2f}, recall {:.2f}, F1 {:.2f}, ROC-AUC {:.3f} ({} flagged of {} days, {} "
               "anomalies); seasonal detector F1 {:.2f}, ROC-AUC {:.3f}\n",
               kProgram, lstm.precision, lstm.recall, lstm.f1, lstm.auc, lstm.flagged, n - d.n_train, anomalies_test,
               base.f1, base.auc);
  else
    fmt::print("{}: test: {} of {} days flagged (no labels to score them; seasonal detector {})\n", kProgram,
               lstm.flagged, n - d.n_train, base.flagged);
  return examples::check_loss_fell(kProgram, o.smoke, {.first = first_loss, .last = last_loss, .first_what = "the first steps'"});
}
}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main(kProgram, [&]() -> int {
    Options o;
    CLI::App app{"anomaly: anomalies in a time series flagged by an LSTM forecaster's errors (US daily births, "
                 "holidays as the labelled anomalies), against a seasonal detector; or your own CSV.",
                 kProgram};
    app.get_formatter()->column_width(34);
    app.add_option("--data", o.data, "CSV with a header, a value column and optionally a 0/1 label column")->capture_default_str();
    app.add_option("--test", o.test, "test on the values in this CSV, taken as the ones that follow --data's");
    app.add_option("--value-column", o.value_column, "the column of values")->capture_default_str();
    app.add_option("--label-column", o.label_column, "the 0/1 column marking anomalies (used when present)")->capture_default_str();
    app.add_option("--group-column", o.group_column, "a column naming each row's series (several in one file)");
    app.add_option("--group", o.group, "the series to take from --group-column");
    app.add_option("--log", o.log, "model log(value) (positive values)")->capture_default_str();
    app.add_option("--test-fraction", o.test_fraction, "the last part of the series held out for testing")->capture_default_str();
    app.add_option("--window", o.window, "W: the values before each day the forecaster reads")->capture_default_str();
    app.add_option("--season", o.season, "the seasonal detector's period (7: weekday)")->capture_default_str();
    app.add_option("--hidden", o.hidden, "LSTM hidden size")->capture_default_str();
    app.add_option("--batch", o.batch, "windows per step")->capture_default_str();
    app.add_option("--steps", o.steps, "training steps")->capture_default_str();
    app.add_option("--lr", o.lr, "Adam learning rate (cosine decay to lr/10)")->capture_default_str();
    app.add_option("--clip", o.clip, "gradient norm clipping (0: off)")->capture_default_str();
    app.add_option("--log-every", o.log_every, "a metrics.csv row (and a progress line when piped) every N steps")->capture_default_str();
    app.add_option("--out", o.out, "directory for metrics.csv, anomalies.svg, scores.csv")->capture_default_str();
    app.add_option("--seed", o.seed, "random seed")->capture_default_str();
    app.add_option("--threads", o.threads, "threads for BLAS and TBB (0: all cores)")->capture_default_str();
    app.add_flag("--smoke", o.smoke, "a tiny run of a few seconds (what CI runs); fails unless the loss falls");
    if (auto code = examples::parse_command_line(app, argc, argv)) return *code;
    if (o.smoke) {
      const examples::FlagDefaults def(app);
      def("--steps", o.steps, std::int64_t{150});
      def("--hidden", o.hidden, std::int64_t{16});
      def("--log-every", o.log_every, std::int64_t{25});
      def("--lr", o.lr, 1e-2);
      def("--out", o.out, std::string("runs/anomaly_smoke"));
    }
    check_options(o);
    return run(o, app.count("--label-column") > 0);
  });
}
