// forecast: multi-step forecasting of a time series with a GRU or LSTM: the Mauna Loa weekly CO2 record by
// default, the yearly sunspot numbers with --dataset sunspots, or a column of your own CSV file. The series is
// split by time (the last --test-fraction is the test period, never seen in training), normalised with the
// mean and standard deviation of the training part only, and cut into sliding windows: --window past values
// in, the next --horizon values out, all at once from the last hidden state. Reports test RMSE next to the
// naive (repeat the last value) and seasonal-naive (repeat the value one season back) baselines, and writes
// metrics.csv, loss.svg and forecast.svg (history, forecast and truth over the test period).
//
//   forecast                                    # CO2, 26 weeks ahead from 2 years of history
//   forecast --dataset sunspots                 # yearly sunspots, 6 years ahead
//   forecast --data my.csv --column sales --season 12 --window 36 --horizon 6
//   forecast --help
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <unroll/unroll.hpp>

#include "../common/cli.hpp"
#include "../common/distributed.hpp"
#include "../common/csv.hpp"
#include "../common/progress.hpp"
#include "../common/series.hpp"
#include "../common/smoke.hpp"
#include "../common/svg_plot.hpp"

using namespace unroll;
using examples::UsageError;

#ifndef FORECAST_DATA_DIR
#define FORECAST_DATA_DIR "data"
#endif

namespace {
constexpr const char* kProgram = "forecast";

// ---------------------------------------------------------------------------------------------------------
// Settings

struct Options {
  std::string dataset = "co2";
  std::string data, column;  ///< empty: the dataset's file and column
  std::string test;          ///< the values that follow --data's, to test on (instead of its last part)
  std::string out = "runs/forecast";
  std::string cell = "gru";
  std::int64_t hidden = 48, layers = 1;
  std::int64_t window = 104, horizon = 26, season = 52;
  bool level = false;  ///< also feed the normalised level, not only the change from the window's last value
  double test_fraction = 0.2;
  std::int64_t batch = 32, steps = 1500;
  double lr = 3e-3, clip = 1.0;
  std::int64_t eval_every = 250, log_every = 50;
  std::uint64_t seed = 1;
  int threads = 0;
  bool smoke = false;
  bool distributed = false;  ///< join an MPI job (automatic when started by mpirun with several processes)
};

/// What --dataset chooses when the matching flags are not given.
struct Preset {
  const char* name;
  const char* file;
  const char* column;
  std::int64_t window, horizon, season, hidden, steps, eval_every;
  bool level;
};
// CO2 rises steadily, so the test period lies above every training value: the model sees only changes from
// the window's last value, which look alike in both periods. Sunspot cycles return to the same levels, and
// where in the cycle a window is depends on the level too; with only 220 training windows, longer training
// overfits them (test RMSE rises from step ~300 on).
constexpr Preset kPresets[] = {
    {"co2", "co2_weekly/co2_weekly.csv", "co2_ppm", 104, 26, 52, 48, 1500, 250, false},
    {"sunspots", "sunspots_yearly/sunspots_yearly.csv", "sunspots", 22, 6, 11, 32, 300, 50, true},
};

void check_options(const Options& o) {
  using examples::check_flag_range;
  UNROLL_CHECK(o.cell == "gru" || o.cell == "lstm", examples::UsageError,
               "{}: unknown --cell; got '{}', expected gru or lstm", kProgram, o.cell);
  check_flag_range<std::int64_t>(kProgram, "--hidden", o.hidden, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--layers", o.layers, 1, 8);
  check_flag_range<std::int64_t>(kProgram, "--window", o.window, 1, 100000);
  check_flag_range<std::int64_t>(kProgram, "--horizon", o.horizon, 1, 10000);
  check_flag_range<std::int64_t>(kProgram, "--season", o.season, 1, 100000);
  check_flag_range(kProgram, "--test-fraction", o.test_fraction, 0.01, 0.9);
  check_flag_range<std::int64_t>(kProgram, "--batch", o.batch, 1, 100000);
  check_flag_range<std::int64_t>(kProgram, "--steps", o.steps, 1, 100000000);
  check_flag_range(kProgram, "--lr", o.lr, 0.0, 1e30);  // absurd rates allowed: divergence is caught
  check_flag_range(kProgram, "--clip", o.clip, 0.0, 1e9);
  check_flag_range<std::int64_t>(kProgram, "--eval-every", o.eval_every, 1, 100000000);
  check_flag_range<std::int64_t>(kProgram, "--log-every", o.log_every, 1, 100000000);
  check_flag_range(kProgram, "--threads", o.threads, 0, 1024);
}

// ---------------------------------------------------------------------------------------------------------
// Data

/// A label as a position on the plot's x axis: a number (a year) as itself, an ISO date as a decimal year;
/// nullopt for anything else (the plot then uses the row number).
std::optional<double> label_to_x(const std::string& s) {
  double v = 0;
  if (const auto [end, err] = std::from_chars(s.data(), s.data() + s.size(), v);
      err == std::errc() && end == s.data() + s.size() && std::isfinite(v))
    return v;
  int y = 0, m = 0, d = 0;
  if (s.size() == 10 && s[4] == '-' && s[7] == '-' && std::from_chars(s.data(), s.data() + 4, y).ec == std::errc() &&
      std::from_chars(s.data() + 5, s.data() + 7, m).ec == std::errc() &&
      std::from_chars(s.data() + 8, s.data() + 10, d).ec == std::errc() && m >= 1 && m <= 12 && d >= 1 && d <= 31)
    return y + ((m - 1) * 30.44 + (d - 1)) / 365.25;
  return std::nullopt;
}

/// The series split by time and normalised with the training part's statistics. Window origin t (the last
/// observed index) has inputs z[t-W+1 .. t] and targets z[t+1 .. t+H].
struct Windows {
  std::vector<double> y, z;  ///< raw and normalised values
  double mean = 0, std = 1;
  std::int64_t W = 0, H = 0, features = 1;
  std::int64_t n_train = 0;  ///< values [0, n_train) are the training period
  std::vector<std::int64_t> train_origins, test_origins;

  /// Origins -> (inputs [W, B, F], targets [B, H]) in normalised units, relative to each window's last value.
  std::pair<Tensor, Tensor> batch(const std::vector<std::int64_t>& origins) const {
    const auto B = static_cast<std::int64_t>(origins.size());
    std::vector<double> in(static_cast<std::size_t>(W * B * features)), out(static_cast<std::size_t>(B * H));
    for (std::int64_t b = 0; b < B; ++b) {
      const std::int64_t t = origins[static_cast<std::size_t>(b)];
      const double last = z[static_cast<std::size_t>(t)];
      for (std::int64_t k = 0; k < W; ++k) {
        const double v = z[static_cast<std::size_t>(t - W + 1 + k)];
        const auto at = static_cast<std::size_t>((k * B + b) * features);
        in[at] = v - last;
        if (features == 2) in[at + 1] = v;
      }
      for (std::int64_t h = 0; h < H; ++h)
        out[static_cast<std::size_t>(b * H + h)] = z[static_cast<std::size_t>(t + 1 + h)] - last;
    }
    return {tensor(in, {W, B, features}), tensor(out, {B, H})};
  }
  /// A prediction relative to origin t's last value (normalised) -> the series' units.
  double denormalise(std::int64_t t, double relative) const {
    return (z[static_cast<std::size_t>(t)] + relative) * std + mean;
  }
};

/// `test_from`: the series' values from this index on are a --test file's (the test period), else the last
/// --test-fraction of it.
Windows make_windows(const Options& o, const examples::Series& s, const std::string& path,
                     std::optional<std::int64_t> test_from = std::nullopt) {
  Windows w;
  w.y = s.values;
  const auto n = static_cast<std::int64_t>(w.y.size());
  w.W = o.window, w.H = o.horizon, w.features = o.level ? 2 : 1;
  const auto split = [&](std::int64_t len) {
    if (test_from) return *test_from + (len - n);  // (len: the need search below grows the --data part)
    return len - static_cast<std::int64_t>(std::llround(len * o.test_fraction));
  };
  // Training needs one whole window plus its targets; testing needs one horizon of targets after the split.
  const auto fits = [&](std::int64_t len) {
    const std::int64_t tr = split(len);
    return tr - w.W - w.H + 1 >= 1 && len - tr >= w.H && tr > o.season;
  };
  UNROLL_CHECK(!test_from || n - *test_from >= w.H, examples::UsageError,
               "{}: --test file too short for --horizon {}; got {} values, expected at least {}", kProgram, w.H,
               test_from ? n - *test_from : 0, w.H);
  UNROLL_CHECK(!test_from || fits(n), examples::UsageError,
               "{}: --data file too short for --window {}, --horizon {} and --season {}; got {} values in column '{}' of "
               "'{}', expected more than window + horizon - 1 and season (the --test file holds the test period)",
               kProgram, w.W, w.H, o.season, test_from ? *test_from : 0, s.column, path);
  if (!fits(n)) {
    std::int64_t need = std::max<std::int64_t>(n + 1, 2);
    while (!fits(need)) ++need;
    detail::throw_error<UsageError>(
        "{}: --data file too short for --window {}, --horizon {} and --season {}; got {} values in column '{}' of "
        "'{}', expected at least {} (the first {:g}% for training >= window + horizon, the rest for testing >= "
        "horizon)",
        kProgram, w.W, w.H, o.season, n, s.column, path, need, 100 * (1 - o.test_fraction));
  }
  w.n_train = split(n);
  const auto first = w.y.begin(), train_end = w.y.begin() + w.n_train;
  w.mean = std::accumulate(first, train_end, 0.0) / static_cast<double>(w.n_train);
  double var = 0;
  for (auto it = first; it != train_end; ++it) var += (*it - w.mean) * (*it - w.mean);
  w.std = std::sqrt(var / static_cast<double>(w.n_train));
  UNROLL_CHECK(w.std > 0, examples::UsageError,
               "{}: --data column '{}' is constant over the training part; got every value = {} in '{}', expected a "
               "series that varies",
               kProgram, s.column, w.mean, path);
  for (const double v : w.y) w.z.push_back((v - w.mean) / w.std);
  for (std::int64_t t = w.W - 1; t + w.H < w.n_train; ++t) w.train_origins.push_back(t);
  // Test forecasts start from every point from the last training value on; their targets lie in the test
  // period only (their input windows may reach back into the training period, as a real forecast would).
  for (std::int64_t t = w.n_train - 1; t + w.H < n; ++t) w.test_origins.push_back(t);
  return w;
}

// ---------------------------------------------------------------------------------------------------------
// The model: a GRU or LSTM over the window; the last layer's final hidden state -> all H future values.

class Forecaster : public nn::Module {
 public:
  Forecaster(const Options& o, std::int64_t features) : layers_(o.layers), head(o.hidden, o.horizon) {
    const nn::RecurrentOptions ro{.input_size = features, .hidden_size = o.hidden, .num_layers = o.layers};
    if (o.cell == "lstm")
      register_module("rnn", *(lstm = std::make_unique<nn::LSTM>(ro)));
    else
      register_module("rnn", *(gru = std::make_unique<nn::GRU>(ro)));
    register_module("head", head);
  }
  /// x [W, B, F] -> [B, H]
  Tensor forward(const Tensor& x) const {
    const Tensor h_n = lstm ? (*lstm)(x).h_n : (*gru)(x).h_n;  // [L, B, hidden]
    return head(select(h_n, 0, layers_ - 1));
  }

 private:
  std::int64_t layers_;

 public:
  std::unique_ptr<nn::GRU> gru;
  std::unique_ptr<nn::LSTM> lstm;
  nn::Linear head;
};

/// Test forecasts in the series' units, one row of H per test origin. Eval mode, no tape; chunks keep the
/// activations small on long series.
std::vector<std::vector<double>> predict(Forecaster& model, const Windows& w) {
  NoGradGuard no_grad;
  model.eval();
  std::vector<std::vector<double>> out;
  for (std::size_t i = 0; i < w.test_origins.size(); i += 512) {
    const std::vector<std::int64_t> chunk(
        w.test_origins.begin() + static_cast<std::ptrdiff_t>(i),
        w.test_origins.begin() + static_cast<std::ptrdiff_t>(std::min(i + 512, w.test_origins.size())));
    const std::vector<double> p = model.forward(w.batch(chunk).first).to_vector();
    for (std::size_t b = 0; b < chunk.size(); ++b) {
      std::vector<double> row(static_cast<std::size_t>(w.H));
      for (std::int64_t h = 0; h < w.H; ++h)
        row[static_cast<std::size_t>(h)] =
            w.denormalise(chunk[b], p[b * static_cast<std::size_t>(w.H) + static_cast<std::size_t>(h)]);
      out.push_back(std::move(row));
    }
  }
  model.train();
  return out;
}

/// Root mean squared error over every test origin and step ahead; forecast(t, h) gives the value for t+1+h.
template <class F>
double test_rmse(const Windows& w, F forecast) {
  double se = 0;
  std::int64_t count = 0;
  for (std::size_t i = 0; i < w.test_origins.size(); ++i) {
    const std::int64_t t = w.test_origins[i];
    for (std::int64_t h = 0; h < w.H; ++h) {
      const double e = forecast(i, t, h) - w.y[static_cast<std::size_t>(t + 1 + h)];
      se += e * e, ++count;
    }
  }
  return std::sqrt(se / static_cast<double>(count));
}

// ---------------------------------------------------------------------------------------------------------

int run(Options& o) {
  // Under mpirun: one rank of a data-parallel job (examples/common/distributed.hpp); rank 0 prints and writes.
  examples::Job& job = examples::join_job(kProgram, o.distributed);
  if (o.threads > 0) set_num_threads(o.threads);
  else if (job.active()) set_num_threads(job.default_threads());  // the cores shared among this machine's ranks
  examples::Series series;  // under mpirun every rank reads its own copy: one that cannot stops all
  std::optional<std::int64_t> test_from;
  job.agree([&] {
    series = examples::read_series(kProgram, "--data", o.data, o.column);
    if (!o.test.empty()) {  // --test: the values after --data's, appended: its forecasts start at --data's end
      const examples::Series t = examples::read_series(kProgram, "--test", o.test, series.column);
      test_from = static_cast<std::int64_t>(series.values.size());
      series.values.insert(series.values.end(), t.values.begin(), t.values.end());
      series.labels.insert(series.labels.end(), t.labels.begin(), t.labels.end());
    }
  });
  Windows w = make_windows(o, series, o.data, test_from);
  const auto n = static_cast<std::int64_t>(w.y.size());

  manual_seed(o.seed);
  Forecaster model(o, w.features);
  job.attach(model.parameters(), 1);  // across ranks: every rank now holds rank 0's parameters
  optim::Adam opt(model.parameters(), {.lr = o.lr});
  optim::CosineAnnealingLR schedule(opt, o.steps, o.lr / 10);  // decay to a tenth over the run
  Generator gen(o.seed ^ 0x9e3779b97f4a7c15ull);               // minibatch draws, apart from initialisation

  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  UNROLL_CHECK(!ec, examples::UsageError, "{}: cannot create --out directory; got '{}' ({}), expected a writable path",
               kProgram, o.out, ec.message());
  const std::filesystem::path out_dir(o.out);
  std::optional<examples::CsvWriter> metrics;  // rank 0's (in a single process: this one's)
  if (job.is_root())
    metrics.emplace((out_dir / "metrics.csv").string(),
                    std::vector<std::string>{"step", "train_loss", "test_loss", "test_rmse", "lr"});

  // Baselines on the same test windows: the last value, and the value one season before each target.
  const double naive =
      test_rmse(w, [&](std::size_t, std::int64_t t, std::int64_t) { return w.y[static_cast<std::size_t>(t)]; });
  const double seasonal = test_rmse(w, [&](std::size_t, std::int64_t t, std::int64_t h) {
    const std::int64_t target = t + 1 + h, m = o.season;
    return w.y[static_cast<std::size_t>(target - m * ((h + m) / m))];  // back whole seasons to at or before t
  });

  fmt::print("{}: {} column '{}': {} values, {} for training ({} windows), {} for testing ({} forecasts of {} steps)\n",
             kProgram, o.data, series.column, n, w.n_train, w.train_origins.size(), n - w.n_train,
             w.test_origins.size(), w.H);
  fmt::print("{}: {} with {} layer(s) of {}, {} parameters; window {}, horizon {}, batch {}, lr {}, {} input(s)\n",
             kProgram, o.cell, o.layers, o.hidden, model.num_parameters(), w.W, w.H, o.batch, o.lr,
             o.level ? "change + level" : "change");

  const auto plot_loss = [&]() {
    examples::PlotSeries train{.name = "train"}, test{.name = "test", .markers = true};
    if (!metrics) return;
    for (const auto& r : metrics->table().rows) {
      if (r[1]) train.x.push_back(*r[0]), train.y.push_back(*r[1]);
      if (r[2]) test.x.push_back(*r[0]), test.y.push_back(*r[2]);
    }
    examples::write_line_plot(
        (out_dir / "loss.svg").string(),
        {.title = fmt::format("forecast: {} {}x{}, window {}, horizon {}", o.cell, o.layers, o.hidden, w.W, w.H),
         .x_label = "step",
         .y_label = "MSE (normalised units)",
         .series = {train, test},
         .log_y = true});
  };

  examples::Progress progress(
      {.total_steps = o.steps, .first_step = 0, .tokens_per_step = o.batch * w.W, .plain_every = o.log_every});
  const std::vector<Tensor> params = model.parameters();
  double interval_loss = 0, smooth = NAN, first_interval = NAN, last_interval = NAN, last_rmse = NAN;
  // No ceiling here: only a non-finite loss counts as diverged.
  examples::DivergenceWatch divergence(
      {.program = kProgram,
       .ceiling = INFINITY,
       .patience = 1,
       .hint = fmt::format("try a smaller --lr (now {}) or a tighter --clip (now {})", o.lr, o.clip)});
  std::int64_t interval_steps = 0;
  std::vector<std::int64_t> origins(static_cast<std::size_t>(o.batch));
  for (std::int64_t step = 1; step <= o.steps; ++step) {
    for (auto& t : origins) t = w.train_origins[static_cast<std::size_t>(gen.next_u64() % w.train_origins.size())];
    auto [x, y] = w.batch(origins);
    double l = 0;
    if (job.active()) {  // each rank its rows of the batch, the gradients summed over the ranks
      l = job.backward(
          o.batch,
          [&](const autograd::Shard& s) {
            return mse_loss(model.forward(narrow(x, 1, s.begin, s.size())), narrow(y, 0, s.begin, s.size()));
          },
          {.shards = 1});
    } else {
      Tensor loss = mse_loss(model.forward(x), y);
      loss.backward();
      l = loss.item();
    }
    // Before the update, while the parameters are still the ones that gave the loss: a non-finite loss stops
    // the run, naming the op where it went non-finite (the step run again under anomaly detection).
    divergence.check(step, l, [&] { return examples::locate_non_finite(model, [&] { return mse_loss(model.forward(x), y); }); });
    optim::clip_grad_norm_(params, o.clip);
    opt.step();
    opt.zero_grad();
    schedule.step();
    smooth = std::isnan(smooth) ? l : 0.95 * smooth + 0.05 * l;
    interval_loss += l, ++interval_steps;
    progress.update(step, smooth, fmt::format("lr {:.2e}", opt.lr()));
    const bool eval_now = step % o.eval_every == 0 || step == o.steps;
    if (eval_now || step % o.log_every == 0) {
      std::optional<double> test_loss, rmse;
      if (eval_now) {
        const auto pred = predict(model, w);
        rmse = last_rmse = test_rmse(
            w, [&](std::size_t i, std::int64_t, std::int64_t h) { return pred[i][static_cast<std::size_t>(h)]; });
        test_loss = (*rmse / w.std) * (*rmse / w.std);  // the training loss's units
        progress.print_line(fmt::format("step {:>{}}  test RMSE {:.4g} (naive {:.4g}, seasonal naive {:.4g})", step,
                                        fmt::formatted_size("{}", o.steps), *rmse, naive, seasonal));
      }
      last_interval = interval_loss / static_cast<double>(interval_steps);
      if (std::isnan(first_interval)) first_interval = last_interval;
      if (metrics) metrics->row({static_cast<double>(step), last_interval, test_loss, rmse, opt.lr()});
      interval_loss = 0, interval_steps = 0;
      plot_loss();
    }
  }
  progress.finish();

  // forecast.svg: recent history, the truth over the test period, and forecasts from successive origins H
  // apart (each drawn from its origin's value, so the segments join the history they start from).
  const auto pred = predict(model, w);
  bool dated = true;
  for (const auto& l : series.labels) dated = dated && label_to_x(l).has_value();
  const auto x_of = [&](std::int64_t i) {
    return dated ? *label_to_x(series.labels[static_cast<std::size_t>(i)]) : static_cast<double>(i);
  };
  examples::PlotSeries history{.name = "history"}, truth{.name = "truth"}, forecast{.name = "forecast"};
  for (std::int64_t i = std::max<std::int64_t>(0, w.n_train - 3 * w.W); i < w.n_train; ++i)
    history.x.push_back(x_of(i)), history.y.push_back(w.y[static_cast<std::size_t>(i)]);
  for (std::int64_t i = w.n_train - 1; i < n; ++i)
    truth.x.push_back(x_of(i)), truth.y.push_back(w.y[static_cast<std::size_t>(i)]);
  for (std::size_t i = 0; i < w.test_origins.size(); i += static_cast<std::size_t>(w.H)) {
    const std::int64_t t = w.test_origins[i];
    forecast.x.push_back(x_of(t)), forecast.y.push_back(w.y[static_cast<std::size_t>(t)]);
    for (std::int64_t h = 0; h < w.H; ++h)
      forecast.x.push_back(x_of(t + 1 + h)), forecast.y.push_back(pred[i][static_cast<std::size_t>(h)]);
    forecast.x.push_back(NAN), forecast.y.push_back(NAN);  // a break before the next segment
  }
  if (job.is_root())
    examples::write_line_plot(
      (out_dir / "forecast.svg").string(),
      {.title = fmt::format("{}: {}-step forecasts, test RMSE {:.3g} (naive {:.3g}, seasonal naive {:.3g})",
                            series.column, w.H, last_rmse, naive, seasonal),
       .x_label = dated ? "time" : "row",
       .y_label = series.column,
       .series = {history, truth, forecast}});

  fmt::print("{}: {} steps in {}; train loss {:.4g} (first {} steps {:.4g})\n", kProgram, o.steps,
             examples::format_duration(progress.elapsed_seconds()), last_interval, o.log_every, first_interval);
  fmt::print("{}: test RMSE over {} steps ahead: {} {:.4g}, naive {:.4g}, seasonal naive (season {}) {:.4g}\n",
             kProgram, w.H, o.cell, last_rmse, naive, o.season, seasonal);
  fmt::print("{}: wrote {}/metrics.csv, loss.svg, forecast.svg\n", kProgram, o.out);
  // Did the model learn something: --smoke (what CI runs) fails if not; a real run, say on the user's --data,
  // has finished and written its files, so it only warns.
  const std::string first_what = fmt::format("the first {} steps'", o.log_every);
  return examples::check_loss_fell(kProgram, o.smoke,
                                   {.first = first_interval, .last = last_interval, .first_what = first_what});
}
}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main(kProgram, [&]() -> int {
    Options o;
    CLI::App app{
        "forecast: multi-step time-series forecasting with a GRU or LSTM on the Mauna Loa CO2 record, the "
        "yearly sunspot numbers, or a column of your own CSV file.",
        kProgram};
    app.get_formatter()->column_width(34);
    app.add_option("--dataset", o.dataset,
                   "co2 (weekly, Mauna Loa 1958-2001) | sunspots (yearly, 1700-2008): the "
                   "data and the defaults of --window, --horizon, --season, --hidden, --steps, --level")
        ->capture_default_str();
    app.add_option("--data", o.data, "your own CSV file (header row, ',' separated) [the dataset's file]");
    app.add_option("--column", o.column, "the CSV column to forecast [co2_ppm or sunspots]");
    app.add_option("--out", o.out, "directory for metrics.csv, loss.svg, forecast.svg")->capture_default_str();
    app.add_option("--cell", o.cell, "gru | lstm")->capture_default_str();
    app.add_option("--hidden", o.hidden, "hidden size")->capture_default_str();
    app.add_option("--layers", o.layers, "recurrent layers")->capture_default_str();
    app.add_option("--window", o.window, "past values the model reads")->capture_default_str();
    app.add_option("--horizon", o.horizon, "future values it forecasts at once")->capture_default_str();
    app.add_option("--season", o.season, "season length in steps, for the seasonal-naive baseline")
        ->capture_default_str();
    app.add_flag("--level,!--no-level", o.level,
                 "also feed the normalised level, not only the change from the "
                 "window's last value");
    app.add_option("--test", o.test,
                   "test on the values in this CSV (same column), taken as the ones that follow --data's, instead of "
                   "on the last --test-fraction of --data");
    app.add_option("--test-fraction", o.test_fraction, "the last part of the series held out for testing")
        ->capture_default_str();
    app.add_option("--batch", o.batch, "windows per step")->capture_default_str();
    app.add_option("--steps", o.steps, "training steps")->capture_default_str();
    app.add_option("--lr", o.lr, "Adam learning rate (cosine decay to lr/10)")->capture_default_str();
    app.add_option("--clip", o.clip, "gradient norm clipping")->capture_default_str();
    app.add_option("--eval-every", o.eval_every, "test RMSE every N steps")->capture_default_str();
    app.add_option("--log-every", o.log_every, "metrics.csv row (and a progress line when piped) every N steps")
        ->capture_default_str();
    app.add_option("--seed", o.seed, "random seed")->capture_default_str();
    app.add_option("--threads", o.threads, "threads for BLAS and TBB (0: all cores)")->capture_default_str();
    app.add_flag("--distributed", o.distributed,
                 "join a data-parallel MPI job (automatic under mpirun with several processes): each rank trains on "
                 "its share of every batch, rank 0 prints and writes the files");
    app.add_flag("--smoke", o.smoke, "a tiny run of a few seconds (what CI runs); fails unless the loss falls");
    if (auto code = examples::parse_command_line(app, argc, argv)) return *code;
    // Before any check: under mpirun a bad flag is then reported once (by rank 0), not once per rank.
    examples::join_job(kProgram, o.distributed);

    const Preset* preset = nullptr;
    for (const Preset& p : kPresets)
      if (o.dataset == p.name) preset = &p;
    UNROLL_CHECK(preset != nullptr, examples::UsageError, "{}: unknown --dataset; got '{}', expected co2 or sunspots",
                 kProgram, o.dataset);
    const examples::FlagDefaults def(app);  // the preset's values and the smoke run's apply to flags not given
    def("--data", o.data, (std::filesystem::path(FORECAST_DATA_DIR) / preset->file).string());
    def("--column", o.column, std::string(preset->column));
    def("--window", o.window, preset->window);
    def("--horizon", o.horizon, preset->horizon);
    def("--season", o.season, preset->season);
    def("--hidden", o.hidden, preset->hidden);
    def("--steps", o.steps, preset->steps);
    def("--eval-every", o.eval_every, preset->eval_every);
    def("--level", o.level, preset->level);  // --no-level is the same flag
    if (o.smoke) {                           // tiny defaults; flags given explicitly still win
      def("--hidden", o.hidden, std::int64_t{16});
      def("--steps", o.steps, std::int64_t{150});
      def("--batch", o.batch, std::int64_t{16});
      def("--eval-every", o.eval_every, std::int64_t{75});
      def("--log-every", o.log_every, std::int64_t{25});
      def("--lr", o.lr, 1e-2);
      def("--out", o.out, std::string("runs/forecast_smoke"));
    }
    check_options(o);
    return run(o);
  });
}
