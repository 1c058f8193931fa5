// long_memory: the long-range dependency problem the RNN literature is about. Two synthetic tasks whose
// answer depends on inputs far in the past, at several sequence lengths, each learned side by side by a tanh
// RNN, an LSTM and a GRU (same batches, same optimizer):
//   adding  x_t = (u_t ~ U[0, 1), marker_t); two steps are marked, one in each half of the sequence; the
//           target is the sum of the two marked values, read from the last hidden state (MSE).
//   copy    K symbols of an 8-letter alphabet, blanks, a delimiter, K more blanks during which the network
//           must output the K symbols in order (cross-entropy over the last K steps).
// Besides the learning curves it measures, per time step t, the norm of dL/dh_t (nn::StepRecorder watching
// every hidden state, nn/diagnostics.hpp): the vanishing-gradient curve, at the
// first step and at the last. The total gradient norm before clipping goes to the metrics too; --clip turns
// clipping on (off by default, so exploding gradients show as spikes in max_grad_norm).
//
//   long_memory                                  # adding + copy at T = 8, 20, 50 (a few minutes)
//   long_memory --tasks adding --lengths 20,100  # other lengths
//   long_memory --data my_lengths.txt            # lengths from a file (the tasks are generated)
//   long_memory --clip 1                         # with gradient-norm clipping
//   long_memory --smoke                          # what CI runs: seconds
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <unroll/unroll.hpp>

#include "../common/cli.hpp"
#include "../common/csv.hpp"
#include "../common/data.hpp"
#include "../common/progress.hpp"
#include "../common/smoke.hpp"
#include "../common/svg_plot.hpp"

using namespace unroll;
using examples::CsvCell;
using examples::UsageError;

namespace {
constexpr const char* kProgram = "long_memory";
constexpr std::int64_t kAlphabet = 8;  // copy task: symbols 0..7, then blank (8) and delimiter (9) as inputs

struct Options {
  std::vector<std::string> tasks = {"adding", "copy"};
  std::vector<std::string> cells = {"rnn", "lstm", "gru"};
  std::vector<std::int64_t> lengths = {8, 20, 50};
  std::string data;  ///< a file of sequence lengths (replaces --lengths)
  std::string out = "runs/long_memory";
  std::int64_t hidden = 64, batch = 32, steps = 1500, copy_symbols = 3, log_every = 50, eval_size = 256;
  double lr = 3e-3, clip = 0;
  std::uint64_t seed = 1;
  int threads = 1;  ///< these matrices are small: more threads only add synchronisation
  bool smoke = false;
};

// ---------------------------------------------------------------------------------------------------------
// The tasks: a batch is inputs [T, B, I] and targets ([B, 1] values for adding, [K*B] symbol ids for copy).

struct Batch {
  Tensor x, y;
};

std::int64_t min_length(const std::string& task, const Options& o) {
  return task == "adding" ? 2 : 2 * o.copy_symbols + 1;
}
std::int64_t input_size(const std::string& task) { return task == "adding" ? 2 : kAlphabet + 2; }
std::int64_t output_size(const std::string& task) { return task == "adding" ? 1 : kAlphabet; }

Batch make_batch(const std::string& task, std::int64_t T, std::int64_t B, std::int64_t K, Generator& gen) {
  const std::int64_t I = input_size(task);
  std::vector<double> x(static_cast<std::size_t>(T * B * I), 0.0);
  const auto at = [&](std::int64_t t, std::int64_t b, std::int64_t i) -> double& {
    return x[static_cast<std::size_t>((t * B + b) * I + i)];
  };
  const auto below = [&](std::int64_t n) {
    return std::min(n - 1, static_cast<std::int64_t>(gen.uniform() * static_cast<double>(n)));
  };
  if (task == "adding") {
    std::vector<double> y(static_cast<std::size_t>(B));
    for (std::int64_t b = 0; b < B; ++b) {
      for (std::int64_t t = 0; t < T; ++t) at(t, b, 0) = gen.uniform();
      const std::int64_t half = T / 2;
      const std::int64_t first = below(half), second = half + below(T - half);
      at(first, b, 1) = at(second, b, 1) = 1.0;
      y[static_cast<std::size_t>(b)] = at(first, b, 0) + at(second, b, 0);
    }
    return {tensor(x, {T, B, I}), tensor(y, {B, 1})};
  }
  // copy: symbols at 0..K-1, blanks, the delimiter at T-K-1, blanks while the answer is read at T-K..T-1.
  std::vector<std::int64_t> y(static_cast<std::size_t>(K * B));
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t t = 0; t < T; ++t) at(t, b, kAlphabet) = 1.0;
    for (std::int64_t k = 0; k < K; ++k) {
      const std::int64_t s = below(kAlphabet);
      at(k, b, kAlphabet) = 0.0, at(k, b, s) = 1.0;
      y[static_cast<std::size_t>(k * B + b)] = s;  // row order of the [K, B] outputs flattened
    }
    at(T - K - 1, b, kAlphabet) = 0.0, at(T - K - 1, b, kAlphabet + 1) = 1.0;
  }
  return {tensor(x, {T, B, I}), index_tensor(y, {K * B})};
}

/// The loss of always giving the best constant answer: var(u1 + u2) = 1/6 for adding, ln 8 for copy.
double baseline_loss(const std::string& task) {
  return task == "adding" ? 1.0 / 6.0 : std::log(static_cast<double>(kAlphabet));
}

// ---------------------------------------------------------------------------------------------------------
// A cell (the library's RNNCell, LSTMCell or GRUCell) unrolled step by step, and a linear read-out.

class Net : public nn::Module {
 public:
  Net(const std::string& cell, std::int64_t in, std::int64_t hidden, std::int64_t out)
      : hidden_(hidden), head(hidden, out) {
    if (cell == "rnn")
      register_module("cell", *(rnn = std::make_unique<nn::RNNCell>(in, hidden)));
    else if (cell == "lstm")
      register_module("cell", *(lstm = std::make_unique<nn::LSTMCell>(in, hidden)));
    else
      register_module("cell", *(gru = std::make_unique<nn::GRUCell>(in, hidden)));
    register_module("head", head);
  }

  /// x [T, B, I] -> h_t [B, H] for every t. With a `recorder` (nn/diagnostics.hpp), each h_t is watched under
  /// the key "h": after backward, recorder->grad_norm("h")[t] is ||dL/dh_t||.
  std::vector<Tensor> unroll(const Tensor& x, nn::StepRecorder* recorder) const {
    const std::int64_t T = x.size(0), B = x.size(1);
    Tensor h = zeros({B, hidden_}), c = zeros({B, hidden_});
    std::vector<Tensor> hs;
    hs.reserve(static_cast<std::size_t>(T));
    if (recorder) recorder->begin_state("h", T);
    for (std::int64_t t = 0; t < T; ++t) {
      if (lstm)
        std::tie(h, c) = (*lstm)(x[t], h, c);
      else
        h = rnn ? (*rnn)(x[t], h) : (*gru)(x[t], h);
      if (recorder) h = recorder->watch(h, "h", t);
      hs.push_back(h);
    }
    return hs;
  }

  /// The task's loss and accuracy-style score for a batch (adding: |error| < 0.04; copy: symbols right).
  std::pair<Tensor, double> loss(const std::string& task, const Batch& batch, std::int64_t K,
                                 nn::StepRecorder* recorder = nullptr) const {
    const std::vector<Tensor> hs = unroll(batch.x, recorder);
    if (task == "adding") {
      const Tensor pred = head(hs.back());  // [B, 1]
      const std::vector<double> p = pred.to_vector(), y = batch.y.to_vector();
      double hits = 0;
      for (std::size_t i = 0; i < p.size(); ++i) hits += std::abs(p[i] - y[i]) < 0.04 ? 1 : 0;
      return {mse_loss(pred, batch.y), hits / static_cast<double>(p.size())};
    }
    const std::vector<Tensor> last(hs.end() - K, hs.end());
    const Tensor logits = head(cat(last, 0));  // [K*B, 8], rows in (k, b) order as the targets
    const std::vector<double> predicted = argmax(logits, 1).to_vector(), y = batch.y.to_vector();
    double hits = 0;
    for (std::size_t i = 0; i < y.size(); ++i) hits += predicted[i] == y[i] ? 1 : 0;
    return {cross_entropy(logits, batch.y), hits / static_cast<double>(y.size())};
  }

 private:
  std::int64_t hidden_;

 public:
  std::unique_ptr<nn::RNNCell> rnn;
  std::unique_ptr<nn::LSTMCell> lstm;
  std::unique_ptr<nn::GRUCell> gru;
  nn::Linear head;
};

// ---------------------------------------------------------------------------------------------------------
// Command line and the lengths file

std::vector<std::int64_t> read_lengths(const std::string& path) {
  const std::string text = examples::read_data_file(kProgram, "--data", path, "file of sequence lengths");
  std::vector<std::int64_t> lengths;
  std::size_t pos = 0;
  std::int64_t line = 1;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view row(text.data() + pos, end - pos);
    if (const auto hash = row.find('#'); hash != std::string_view::npos) row = row.substr(0, hash);  // comment
    std::size_t p = 0;
    while (p <= row.size()) {
      std::size_t q = row.find(',', p);
      if (q == std::string_view::npos) q = row.size();
      std::string_view field = row.substr(p, q - p);
      while (!field.empty() && std::isspace(static_cast<unsigned char>(field.front()))) field.remove_prefix(1);
      while (!field.empty() && std::isspace(static_cast<unsigned char>(field.back()))) field.remove_suffix(1);
      if (!field.empty() && !(line == 1 && field == "length")) {  // an optional CSV header
        std::int64_t v = 0;
        const auto [ptr, err] = std::from_chars(field.data(), field.data() + field.size(), v);
        UNROLL_CHECK(err == std::errc() && ptr == field.data() + field.size(), examples::UsageError,
                     "{}: --data file is malformed; got '{}' on line {} of '{}', expected sequence lengths (whole "
                     "numbers), one per line or comma-separated",
                     kProgram, examples::printable(field), line, path);
        lengths.push_back(v);
      }
      p = q + 1;
    }
    pos = end + 1;
    ++line;
  }
  UNROLL_CHECK(!lengths.empty(), examples::UsageError,
               "{}: --data file has no sequence lengths; got only blank lines, comments or a header in '{}', expected "
               "at least one length",
               kProgram, path);
  return lengths;
}

void check_options(const Options& o) {
  using examples::check_flag_range;
  for (const std::string& t : o.tasks)
    UNROLL_CHECK(t == "adding" || t == "copy", examples::UsageError,
                 "{}: unknown --tasks entry; got '{}', expected adding or copy", kProgram, t);
  for (const std::string& c : o.cells)
    UNROLL_CHECK(c == "rnn" || c == "lstm" || c == "gru", examples::UsageError,
                 "{}: unknown --cells entry; got '{}', expected rnn, lstm or gru", kProgram, c);
  check_flag_range<std::int64_t>(kProgram, "--hidden", o.hidden, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--batch", o.batch, 1, 100000);
  check_flag_range<std::int64_t>(kProgram, "--steps", o.steps, 1, 100000000);
  check_flag_range<std::int64_t>(kProgram, "--copy-symbols", o.copy_symbols, 1, 1000);
  check_flag_range<std::int64_t>(kProgram, "--log-every", o.log_every, 1, 100000000);
  check_flag_range<std::int64_t>(kProgram, "--eval-size", o.eval_size, 1, 1000000);
  check_flag_range(kProgram, "--lr", o.lr, 0.0, 10.0);
  check_flag_range(kProgram, "--clip", o.clip, 0.0, 1e9);
  check_flag_range(kProgram, "--threads", o.threads, 0, 1024);
  const std::string source = o.data.empty() ? "--lengths" : fmt::format("--data file '{}'", o.data);
  for (const std::int64_t T : o.lengths) {
    check_flag_range<std::int64_t>(kProgram, "sequence length", T, 1, 100000);
    for (const std::string& task : o.tasks) {
      const std::int64_t need = min_length(task, o);
      UNROLL_CHECK(T >= need, examples::UsageError,
                   "{}: sequence length too short for the {} task; got {} in {}, expected at least {}{}", kProgram,
                   task, T, source, need, task == "copy" ? " (2 x --copy-symbols + 1)" : "");
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// One experiment: one task at one length, every cell trained in lockstep on the same batches.

struct CellResult {
  std::string task, cell;
  std::int64_t T;
  double first_loss, final_loss, final_score, max_grad_norm;
};

std::vector<CellResult> run_experiment(const Options& o, const std::string& task, std::int64_t T, int index,
                                       int count) {
  const std::int64_t K = o.copy_symbols, B = o.batch, H = o.hidden;
  const std::filesystem::path out(o.out);
  const std::string tag = fmt::format("{}_T{}", task, T);
  const std::size_t nc = o.cells.size();

  std::vector<std::unique_ptr<Net>> nets;
  std::vector<std::unique_ptr<optim::Adam>> opts;
  for (std::size_t c = 0; c < nc; ++c) {
    manual_seed(o.seed + c);  // each cell its own initialisation, the same one in every experiment
    nets.push_back(std::make_unique<Net>(o.cells[c], input_size(task), H, output_size(task)));
    opts.push_back(std::make_unique<optim::Adam>(nets.back()->parameters(), optim::AdamOptions{.lr = o.lr}));
  }
  Generator data_gen(o.seed * 1000003 + static_cast<std::uint64_t>(T) * 7 + (task == "copy" ? 1 : 0));
  Generator eval_gen(o.seed ^ 0xe7a1u);
  const Batch eval_batch = make_batch(task, T, o.eval_size, K, eval_gen);

  std::vector<std::string> columns = {"step"};
  for (const std::string& c : o.cells)
    for (const char* what : {"train_loss", "val_loss", "val_score", "mean_grad_norm", "max_grad_norm"})
      columns.push_back(c + "_" + what);
  examples::CsvWriter metrics((out / ("metrics_" + tag + ".csv")).string(), columns);

  // dL/dh_t at the first and at the last step, per cell.
  std::vector<std::vector<double>> grad_first(nc), grad_last(nc);
  std::int64_t step_now = 0;  // for step_once's divergence message
  const auto step_once = [&](std::size_t c, const Batch& batch,
                             std::vector<double>* record) -> std::pair<double, double> {
    nn::StepRecorder recorder;
    auto [loss, score] = nets[c]->loss(task, batch, K, record ? &recorder : nullptr);
    (void)score;
    opts[c]->zero_grad();
    loss.backward();
    const double l = loss.item();
    if (!std::isfinite(l)) {  // before the update: the step run again under anomaly detection names the op
      const std::string where = examples::locate_non_finite(
          *nets[c], [&] { return nets[c]->loss(task, batch, K, nullptr).first; });
      ::unroll::detail::throw_error<examples::DivergedError>(
          "{}: {} diverged on the {} task at T = {}, step {}; got loss {}, expected a finite loss{}; try --clip 1 or "
          "a smaller --lr",
          kProgram, o.cells[c], task, T, step_now, l,
          where.empty() ? std::string() : fmt::format(" (the step run again stops at: {})", where));
    }
    if (record) *record = recorder.grad_norm("h");  // 0 where no gradient reached h_t
    // Clipping at infinity leaves the gradient alone and still returns its norm.
    const double norm = optim::clip_grad_norm_(opts[c]->params(), o.clip > 0 ? o.clip : INFINITY);
    opts[c]->step();
    return {l, norm};
  };
  const auto evaluate = [&](std::size_t c) {
    NoGradGuard no_grad;
    auto [loss, score] = nets[c]->loss(task, eval_batch, K);
    return std::pair{loss.item(), score};
  };

  fmt::print("[{}/{}] {} task, T = {}: {} x {} steps, batch {}, hidden {}, lr {}, clip {}\n", index, count, task, T,
             fmt::join(o.cells, "/"), o.steps, B, H, o.lr, o.clip > 0 ? fmt::format("{}", o.clip) : "off");
  examples::Progress progress(
      {.total_steps = o.steps, .tokens_per_step = T * B * static_cast<std::int64_t>(nc), .plain_every = o.log_every});
  std::vector<double> first_val(nc), sum_loss(nc, 0), sum_norm(nc, 0), max_norm(nc, 0), overall_max(nc, 0);
  std::vector<double> last_val(nc), last_score(nc);
  {
    std::vector<CsvCell> row = {0.0};
    for (std::size_t c = 0; c < nc; ++c) {
      std::tie(first_val[c], last_score[c]) = evaluate(c);
      last_val[c] = first_val[c];
      for (const CsvCell v : {CsvCell{}, CsvCell{first_val[c]}, CsvCell{last_score[c]}, CsvCell{}, CsvCell{}})
        row.push_back(v);
    }
    metrics.row(row);
  }
  std::int64_t interval = 0;
  for (std::int64_t step = 1; step <= o.steps; ++step) {
    const Batch batch = make_batch(task, T, B, K, data_gen);
    double shown = 0;
    for (std::size_t c = 0; c < nc; ++c) {
      std::vector<double>* record = step == 1 ? &grad_first[c] : step == o.steps ? &grad_last[c] : nullptr;
      step_now = step;
      const auto [l, norm] = step_once(c, batch, record);
      sum_loss[c] += l, sum_norm[c] += norm, max_norm[c] = std::max(max_norm[c], norm);
      overall_max[c] = std::max(overall_max[c], norm);
      shown += l / static_cast<double>(nc);
    }
    ++interval;
    progress.update(step, shown, "mean of the cells");
    if (step % o.log_every == 0 || step == o.steps) {
      std::vector<CsvCell> row = {static_cast<double>(step)};
      std::string line = fmt::format("  step {:>5}", step);
      for (std::size_t c = 0; c < nc; ++c) {
        std::tie(last_val[c], last_score[c]) = evaluate(c);
        const double n = static_cast<double>(interval);
        for (const double v : {sum_loss[c] / n, last_val[c], last_score[c], sum_norm[c] / n, max_norm[c]})
          row.push_back(v);
        line += fmt::format("  {} {:.4f} ({:.0f}%)", o.cells[c], last_val[c], 100 * last_score[c]);
        sum_loss[c] = sum_norm[c] = max_norm[c] = 0;
      }
      metrics.row(row);
      interval = 0;
      if (step % (o.log_every * 5) == 0 || step == o.steps) progress.print_line(line);
    }
  }
  progress.finish();

  // Learning curves: validation loss per cell, with the best constant answer for reference.
  const examples::CsvTable& table = metrics.table();
  examples::LinePlot curves{.title = fmt::format("{} task, T = {}: validation loss", task, T),
                            .x_label = "step",
                            .y_label = task == "adding" ? "mean squared error" : "cross-entropy (nats)",
                            .log_y = true};
  for (std::size_t c = 0; c < nc; ++c) {
    examples::PlotSeries s{.name = o.cells[c]};
    const int col = table.column(o.cells[c] + "_val_loss");
    for (const auto& r : table.rows)
      s.x.push_back(*r[0]), s.y.push_back(r[static_cast<std::size_t>(col)].value_or(NAN));
    curves.series.push_back(std::move(s));
  }
  curves.series.push_back({.name = "best constant answer",
                           .x = {0.0, static_cast<double>(o.steps)},
                           .y = {baseline_loss(task), baseline_loss(task)},
                           .color = "#888888"});
  examples::write_line_plot((out / ("learning_" + tag + ".svg")).string(), curves);

  // The vanishing-gradient curve: ||dL/dh_t|| against t, at the first step and at the last.
  examples::CsvWriter grads((out / ("grad_norm_" + tag + ".csv")).string(), [&] {
    std::vector<std::string> cols = {"t"};
    for (const std::string& c : o.cells) cols.push_back(c + "_first_step"), cols.push_back(c + "_last_step");
    return cols;
  }());
  examples::LinePlot gplot{
      .title = fmt::format("{} task, T = {}: ||dL/dh_t|| at the first and (dots) the last training step", task, T),
      .x_label = "time step t",
      .y_label = "||dL/dh_t||",
      .log_y = true};
  const char* palette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00"};
  for (std::int64_t t = 0; t < T; ++t) {
    std::vector<CsvCell> row = {static_cast<double>(t)};
    for (std::size_t c = 0; c < nc; ++c)
      row.push_back(grad_first[c][static_cast<std::size_t>(t)]),
          row.push_back(grad_last[c][static_cast<std::size_t>(t)]);
    grads.row(row);
  }
  std::vector<double> ts(static_cast<std::size_t>(T));
  std::iota(ts.begin(), ts.end(), 0.0);
  for (std::size_t c = 0; c < nc; ++c) {
    const std::string color = palette[c % 5];
    gplot.series.push_back({.name = o.cells[c] + " (first step)", .x = ts, .y = grad_first[c], .color = color});
    gplot.series.push_back(
        {.name = o.cells[c] + " (last step)", .x = ts, .y = grad_last[c], .color = color, .markers = true});
  }
  examples::write_line_plot((out / ("grad_norm_" + tag + ".svg")).string(), gplot);

  std::vector<CellResult> results;
  for (std::size_t c = 0; c < nc; ++c)
    results.push_back({task, o.cells[c], T, first_val[c], last_val[c], last_score[c], overall_max[c]});
  return results;
}

int run(const Options& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  UNROLL_CHECK(!ec, examples::UsageError, "{}: cannot create --out directory; got '{}' ({}), expected a writable path",
               kProgram, o.out, ec.message());
  const std::filesystem::path out(o.out);
  std::vector<CellResult> results;
  const int count = static_cast<int>(o.tasks.size() * o.lengths.size());
  int index = 0;
  for (const std::string& task : o.tasks)
    for (const std::int64_t T : o.lengths)
      for (CellResult& r : run_experiment(o, task, T, ++index, count)) results.push_back(std::move(r));

  // The summary: where each cell learned the task (validation loss below a tenth of the best constant answer).
  examples::CsvWriter summary((out / "summary.csv").string(), {"task", "T", "cell", "first_val_loss", "final_val_loss",
                                                               "final_val_score", "max_grad_norm", "solved"});
  fmt::print("\n{:<7} {:>5}  {:<5} {:>10} {:>10} {:>7} {:>10}  {}\n", "task", "T", "cell", "val loss", "baseline",
             "score", "max |g|", "learned?");
  bool fell = true;
  for (const CellResult& r : results) {
    const double base = baseline_loss(r.task);
    const bool solved = r.final_loss < 0.1 * base;
    fmt::print("{:<7} {:>5}  {:<5} {:>10.4f} {:>10.4f} {:>6.1f}% {:>10.3g}  {}\n", r.task, r.T, r.cell, r.final_loss,
               base, 100 * r.final_score, r.max_grad_norm,
               solved                      ? "yes"
               : r.final_loss < 0.5 * base ? "partly"
                                           : "no");
    // Numbers only in the CSV: task 0 = adding, 1 = copy; cell = its position in --cells.
    const auto cell_id = std::find(o.cells.begin(), o.cells.end(), r.cell) - o.cells.begin();
    summary.row({r.task == "adding" ? 0.0 : 1.0, static_cast<double>(r.T), static_cast<double>(cell_id), r.first_loss,
                 r.final_loss, r.final_score, r.max_grad_norm, solved ? 1.0 : 0.0});
    fell = fell && r.final_loss < r.first_loss;
  }
  fmt::print(
      "(score: adding = answers within 0.04 of the sum, copy = symbols recalled; summary.csv codes task 0 adding, "
      "1 copy, and cell by its position in --cells)\n");
  fmt::print(
      "{}: wrote {}/summary.csv and, per task and length, metrics_*.csv, learning_*.svg, grad_norm_*.csv, "
      "grad_norm_*.svg\n",
      kProgram, o.out);
  // What CI's smoke run checks. In a full run a cell that does not learn a long sequence is the result, not an
  // error: the warning points at the table rather than at --lr.
  return examples::check_loss_fell(kProgram, o.smoke, fell,
                                   "got a final validation loss not below the first for some cell, expected every "
                                   "cell to improve",
                                   "see 'learned?' above: at long lengths a cell that does not learn is the finding");
}
}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main(kProgram, [&]() -> int {
    Options o;
    CLI::App app{
        "long_memory: the adding problem and the copy task at several sequence lengths, a tanh RNN vs an LSTM "
        "vs a GRU, with learning curves and the per-step gradient norm ||dL/dh_t|| (vanishing gradients). "
        "The tasks are generated, so there is no dataset to give; --data takes a file of sequence lengths.",
        kProgram};
    app.get_formatter()->column_width(34);
    app.add_option("--tasks", o.tasks, "adding and/or copy")->delimiter(',')->capture_default_str();
    app.add_option("--lengths", o.lengths, "sequence lengths T to sweep")->delimiter(',')->capture_default_str();
    app.add_option(
        "--data", o.data,
        "file of sequence lengths to sweep instead of --lengths (one per line or comma-separated, # comments, "
        "optional 'length' header); the tasks themselves are generated");
    app.add_option("--cells", o.cells, "rnn (tanh), lstm and/or gru")->delimiter(',')->capture_default_str();
    app.add_option("--out", o.out, "directory for every file written")->capture_default_str();
    app.add_option("--hidden", o.hidden, "hidden size of every cell")->capture_default_str();
    app.add_option("--batch", o.batch, "sequences per step")->capture_default_str();
    app.add_option("--steps", o.steps, "training steps per task, length and cell")->capture_default_str();
    app.add_option("--lr", o.lr, "Adam learning rate")->capture_default_str();
    app.add_option("--clip", o.clip, "clip the gradient norm to this (0: off, to see exploding gradients)")
        ->capture_default_str();
    app.add_option("--copy-symbols", o.copy_symbols, "K: symbols to remember in the copy task")->capture_default_str();
    app.add_option("--log-every", o.log_every, "validate and write a metrics row every N steps")->capture_default_str();
    app.add_option("--eval-size", o.eval_size, "validation sequences (fixed, never trained on)")->capture_default_str();
    app.add_option("--seed", o.seed, "random seed")->capture_default_str();
    app.add_option("--threads", o.threads,
                   "threads for BLAS and TBB (0: all cores; 1 is fastest for these small matrices)")
        ->capture_default_str();
    app.add_flag("--smoke", o.smoke, "a run of a few seconds (what CI runs); fails unless every cell's loss falls");
    if (auto code = examples::parse_command_line(app, argc, argv)) return *code;
    if (o.smoke) {  // tiny defaults; flags given explicitly still win
      const examples::FlagDefaults def(app);
      def("--lengths", o.lengths, std::vector<std::int64_t>{10});
      def("--hidden", o.hidden, std::int64_t{16});
      def("--batch", o.batch, std::int64_t{16});
      def("--steps", o.steps, std::int64_t{100});
      def("--lr", o.lr, 1e-2);
      def("--log-every", o.log_every, std::int64_t{20});
      def("--eval-size", o.eval_size, std::int64_t{64});
      def("--out", o.out, std::string("runs/long_memory_smoke"));
    }
    if (!o.data.empty()) o.lengths = read_lengths(o.data);
    check_options(o);
    return run(o);
  });
}
