// classify: sequence classification with variable-length inputs: a surname -> its language of origin (17
// classes, from the name lists of the Faker library), or your own CSV of text,label rows. Characters (UTF-8
// code points) -> Embedding -> a bidirectional GRU or LSTM that reads each name only up to its own length
// (the layer's `lengths` mask, no packing) -> both directions' final states -> Linear over the classes. The
// classes are imbalanced (1000 Spanish names, 81 Portuguese), so the loss weights each class by
// N / (C * N_c) as scikit-learn's "balanced" weights, normalised as PyTorch's weighted cross-entropy. Reports
// test accuracy and balanced accuracy (the mean per-class recall), and writes metrics.csv, loss.svg and
// confusion.svg (the test confusion matrix as a heatmap).
//
//   classify                                  # surnames, about 10 seconds on 2 cores
//   classify --cell lstm --class-weights none
//   classify --data my.csv --text-column text --label-column label --out runs/mine
//   classify --help
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <unroll/unroll.hpp>

#include "../common/cli.hpp"
#include "../common/csv.hpp"
#include "../common/data.hpp"
#include "../common/heatmap.hpp"
#include "../common/progress.hpp"
#include "../common/series.hpp"
#include "../common/smoke.hpp"
#include "../common/svg_plot.hpp"

using namespace unroll;
using examples::UsageError;

#ifndef CLASSIFY_DEFAULT_DATA
#define CLASSIFY_DEFAULT_DATA "data/surnames/surnames.csv"
#endif

namespace {
constexpr const char* kProgram = "classify";

struct Options {
  std::string data = CLASSIFY_DEFAULT_DATA;
  std::string test;  ///< test rows from this file (same columns) instead of a split of --data
  std::string text_column = "name", label_column = "label";
  std::string out = "runs/classify";
  std::string cell = "gru";
  std::int64_t embed = 32, hidden = 64, layers = 1;
  double dropout = 0.4;
  std::string class_weights = "balanced";
  double test_fraction = 0.2;
  std::int64_t batch = 64, steps = 1500;
  double lr = 3e-3, clip = 1.0;
  std::int64_t eval_every = 250, log_every = 50;
  std::uint64_t seed = 1;
  int threads = 0;
  bool smoke = false;
};

void check_options(const Options& o) {
  using examples::check_flag_range;
  UNROLL_CHECK(o.cell == "gru" || o.cell == "lstm", examples::UsageError,
               "{}: unknown --cell; got '{}', expected gru or lstm", kProgram, o.cell);
  UNROLL_CHECK(o.class_weights == "balanced" || o.class_weights == "none", examples::UsageError,
               "{}: unknown --class-weights; got '{}', expected balanced or none", kProgram, o.class_weights);
  check_flag_range<std::int64_t>(kProgram, "--embed", o.embed, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--hidden", o.hidden, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--layers", o.layers, 1, 8);
  check_flag_range(kProgram, "--dropout", o.dropout, 0.0, 0.95);
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
// Data: names as code points (so 'ł' is one step of the model, not two bytes), labels as class ids.

/// UTF-8 -> code points; nullopt for malformed input (a stray continuation byte, a truncated or overlong
/// sequence, a surrogate or a value above U+10FFFF).
std::optional<std::vector<char32_t>> decode_utf8(std::string_view s) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    const int extra = b < 0x80 ? 0 : (b >> 5) == 0x6 ? 1 : (b >> 4) == 0xe ? 2 : (b >> 3) == 0x1e ? 3 : -1;
    if (extra < 0 || i + static_cast<std::size_t>(extra) >= s.size()) return std::nullopt;
    char32_t cp = extra == 0 ? b : extra == 1 ? (b & 0x1fu) : extra == 2 ? (b & 0x0fu) : (b & 0x07u);
    for (int k = 1; k <= extra; ++k) {
      const auto c = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      if ((c & 0xc0u) != 0x80u) return std::nullopt;
      cp = (cp << 6) | (c & 0x3fu);
    }
    static constexpr char32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[extra] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return std::nullopt;
    out.push_back(cp);
    i += static_cast<std::size_t>(extra) + 1;
  }
  return out;
}

struct Example {
  std::vector<std::int64_t> ids;  ///< character ids
  std::int64_t label = 0;
};

struct Dataset {
  std::vector<std::string> classes;  ///< class id -> label, sorted
  std::int64_t vocab = 0;            ///< distinct characters
  std::vector<Example> train, test;
};

Dataset load(const Options& o) {
  const examples::TextTable table = examples::read_text_table(kProgram, "--data", o.data);
  const auto column = [&](const std::string& name, const char* flag) {
    const int c = table.column(name);
    std::string names;
    for (std::size_t i = 0; i < table.columns.size(); ++i) names += (i ? ", " : "") + table.columns[i];
    UNROLL_CHECK(c >= 0, examples::UsageError,
                 "{}: no such column in the --data file; got {} '{}' in '{}', expected one of {}", kProgram, flag, name,
                 o.data, names);
    return static_cast<std::size_t>(c);
  };
  const std::size_t text_col = column(o.text_column, "--text-column"),
                    label_col = column(o.label_column, "--label-column");
  std::map<std::string, std::int64_t> class_of;
  std::map<char32_t, std::int64_t> char_id;
  for (const auto& row : table.rows) class_of[row[label_col]] = 0;
  Dataset d;
  for (auto& [name, id] : class_of) id = static_cast<std::int64_t>(d.classes.size()), d.classes.push_back(name);
  UNROLL_CHECK(table.rows.size() >= 10 && d.classes.size() >= 2, examples::UsageError,
               "{}: --data file too short; got {} row(s) and {} label(s) in '{}', expected at least 10 rows and 2 "
               "labels",
               kProgram, table.rows.size(), d.classes.size(), o.data);
  std::vector<std::vector<Example>> by_class(d.classes.size());
  for (std::size_t r = 0; r < table.rows.size(); ++r) {
    const std::string& text = table.rows[r][text_col];
    const auto cps = decode_utf8(text);
    UNROLL_CHECK(cps.has_value(), examples::UsageError,
                 "{}: --data file is not UTF-8; got '{}' at line {} of '{}', expected UTF-8 text", kProgram,
                 examples::printable(text), table.lines[r], o.data);
    UNROLL_CHECK(!cps->empty() && !table.rows[r][label_col].empty(), examples::UsageError,
                 "{}: --data file has an empty cell; got '{}' at line {} of '{}', expected a non-empty {} and {}",
                 kProgram, examples::printable(text + "," + table.rows[r][label_col]), table.lines[r], o.data,
                 o.text_column, o.label_column);
    Example e{.ids = {}, .label = class_of[table.rows[r][label_col]]};
    for (const char32_t c : *cps) {
      const auto [it, inserted] = char_id.try_emplace(c, static_cast<std::int64_t>(char_id.size()));
      e.ids.push_back(it->second);
    }
    by_class[static_cast<std::size_t>(e.label)].push_back(std::move(e));
  }
  d.vocab = static_cast<std::int64_t>(char_id.size());
  // Split within each class (the file is grouped by label), so that every class with two or more names has
  // at least one in the test set and one in the training set.
  Generator gen(o.seed ^ 0x5317u);
  for (auto& group : by_class) {
    examples::shuffle(group, gen);
    const auto n = static_cast<std::int64_t>(group.size());
    const std::int64_t n_test =
        n < 2 ? 0 : std::clamp<std::int64_t>(std::llround(static_cast<double>(n) * o.test_fraction), 1, n - 1);
    for (std::int64_t i = 0; i < n; ++i)
      (i < n_test ? d.test : d.train).push_back(group[static_cast<std::size_t>(i)]);
  }
  if (!o.test.empty()) {  // every --data row trains; the test rows come from --test
    for (Example& e : d.test) d.train.push_back(std::move(e));
    d.test.clear();
    const examples::TextTable t = examples::read_text_table(kProgram, "--test", o.test);
    UNROLL_CHECK(!t.rows.empty(), examples::UsageError, "{}: --test file has no rows; got only a header in '{}'",
                 kProgram, o.test);
    const int tc = t.column(o.text_column), lc = t.column(o.label_column);
    UNROLL_CHECK(tc >= 0 && lc >= 0, examples::UsageError,
                 "{}: --test file lacks a column; got no '{}' in '{}', expected the --data file's columns", kProgram,
                 tc < 0 ? o.text_column : o.label_column, o.test);
    const std::int64_t unknown = d.vocab++;  // one id for the characters training never saw
    for (std::size_t r = 0; r < t.rows.size(); ++r) {
      const std::string& label = t.rows[r][static_cast<std::size_t>(lc)];
      const auto it = class_of.find(label);
      UNROLL_CHECK(it != class_of.end(), examples::UsageError,
                   "{}: --test file has a label the training data lacks; got '{}' at line {} of '{}', expected one "
                   "of the --data file's {} labels",
                   kProgram, examples::printable(label), t.lines[r], o.test, d.classes.size());
      const auto cps = decode_utf8(t.rows[r][static_cast<std::size_t>(tc)]);
      UNROLL_CHECK(cps.has_value() && !cps->empty(), examples::UsageError,
                   "{}: --test file has an empty or non-UTF-8 text; got '{}' at line {} of '{}', expected UTF-8 text",
                   kProgram, examples::printable(t.rows[r][static_cast<std::size_t>(tc)]), t.lines[r], o.test);
      Example e{.ids = {}, .label = it->second};
      for (const char32_t c : *cps) {
        const auto at = char_id.find(c);
        e.ids.push_back(at == char_id.end() ? unknown : at->second);
      }
      d.test.push_back(std::move(e));
    }
  }
  UNROLL_CHECK(!d.test.empty(), examples::UsageError,
               "{}: --data file too short to test on; got {} labels with one row each in '{}', expected a label with "
               "at least 2 rows",
               kProgram, d.classes.size(), o.data);
  return d;
}

/// A batch of examples -> (character ids [T, B] padded with 0, their lengths, labels [B]); T = the longest.
struct Batch {
  Tensor x, y;
  std::vector<std::int64_t> lengths, labels;
};
Batch make_batch(const std::vector<Example>& data, const std::vector<std::size_t>& which) {
  Batch b;
  std::int64_t T = 0;
  for (const std::size_t i : which) T = std::max<std::int64_t>(T, static_cast<std::int64_t>(data[i].ids.size()));
  const auto B = static_cast<std::int64_t>(which.size());
  std::vector<std::int64_t> x(static_cast<std::size_t>(T * B), 0);
  for (std::int64_t j = 0; j < B; ++j) {
    const Example& e = data[which[static_cast<std::size_t>(j)]];
    for (std::size_t t = 0; t < e.ids.size(); ++t)
      x[t * static_cast<std::size_t>(B) + static_cast<std::size_t>(j)] = e.ids[t];
    b.lengths.push_back(static_cast<std::int64_t>(e.ids.size()));
    b.labels.push_back(e.label);
  }
  b.x = index_tensor(x, {T, B});
  b.y = index_tensor(b.labels, {B});
  return b;
}

// ---------------------------------------------------------------------------------------------------------
// The model

/// ids [T, B] with lengths -> logits [B, C].
class Classifier : public nn::Module {
 public:
  Classifier(const Options& o, std::int64_t vocab, std::int64_t classes)
      : layers_(o.layers), dropout_(o.dropout), embed(vocab, o.embed), head(2 * o.hidden, classes) {
    register_module("embed", embed);
    const nn::RecurrentOptions ro{.input_size = o.embed,
                                  .hidden_size = o.hidden,
                                  .num_layers = o.layers,
                                  .dropout = o.dropout,
                                  .bidirectional = true};
    if (o.cell == "lstm")
      register_module("rnn", *(lstm = std::make_unique<nn::LSTM>(ro)));
    else
      register_module("rnn", *(gru = std::make_unique<nn::GRU>(ro)));
    register_module("head", head);
  }
  Tensor forward(const Tensor& ids, const std::vector<std::int64_t>& lengths) const {
    const Tensor x = embed(ids);  // [T, B, E]
    // h_n [L*2, B, H]: with lengths, the forward direction's final state is at each name's own last character
    // and the reverse direction starts there, so padding never reaches either.
    const Tensor h_n = lstm ? (*lstm)(x, {}, {}, lengths).h_n : (*gru)(x, {}, lengths).h_n;
    const Tensor both = cat({select(h_n, 0, 2 * (layers_ - 1)), select(h_n, 0, 2 * (layers_ - 1) + 1)}, 1);  // [B, 2H]
    return head(dropout(both, dropout_, is_training()));
  }

 private:
  std::int64_t layers_;
  double dropout_;

 public:
  nn::Embedding embed;
  std::unique_ptr<nn::GRU> gru;
  std::unique_ptr<nn::LSTM> lstm;
  nn::Linear head;
};

/// Class-weighted cross-entropy, PyTorch's weighted mean: sum_i w[y_i] * loss_i / sum_i w[y_i].
Tensor weighted_cross_entropy(const Tensor& logits, const Batch& b, const std::vector<double>& class_weight) {
  std::vector<double> w;
  double total = 0;
  for (const std::int64_t y : b.labels) w.push_back(class_weight[static_cast<std::size_t>(y)]), total += w.back();
  const Tensor per_example = cross_entropy(logits, b.y, Reduction::none);  // [B]
  return sum(per_example * tensor(w, {static_cast<std::int64_t>(w.size())})) / total;
}

struct Evaluation {
  double loss = 0, accuracy = 0, balanced_accuracy = 0;
  std::vector<std::int64_t> confusion;  ///< C x C counts, row = true class, column = predicted
  std::vector<double> recall;           ///< per class (NaN for a class absent from the test set)
};

Evaluation evaluate(Classifier& model, const std::vector<Example>& data, const std::vector<double>& class_weight,
                    std::int64_t C) {
  NoGradGuard no_grad;
  model.eval();
  Evaluation ev;
  ev.confusion.assign(static_cast<std::size_t>(C * C), 0);
  double loss = 0, weight = 0;
  for (std::size_t i = 0; i < data.size(); i += 256) {
    std::vector<std::size_t> which(std::min<std::size_t>(256, data.size() - i));
    std::iota(which.begin(), which.end(), i);
    const Batch b = make_batch(data, which);
    const Tensor logits = model.forward(b.x, b.lengths);
    double w = 0;
    for (const std::int64_t y : b.labels) w += class_weight[static_cast<std::size_t>(y)];
    loss += weighted_cross_entropy(logits, b, class_weight).item() * w, weight += w;
    const std::vector<double> pred = argmax(logits, 1).to_vector();
    for (std::size_t j = 0; j < which.size(); ++j)
      ++ev.confusion[static_cast<std::size_t>(b.labels[j] * C + static_cast<std::int64_t>(pred[j]))];
  }
  model.train();
  ev.loss = loss / weight;
  std::int64_t right = 0, classes_present = 0;
  double recall_sum = 0;
  for (std::int64_t c = 0; c < C; ++c) {
    std::int64_t row = 0;
    for (std::int64_t k = 0; k < C; ++k) row += ev.confusion[static_cast<std::size_t>(c * C + k)];
    const std::int64_t hit = ev.confusion[static_cast<std::size_t>(c * C + c)];
    right += hit;
    ev.recall.push_back(row > 0 ? static_cast<double>(hit) / static_cast<double>(row) : NAN);
    if (row > 0) recall_sum += ev.recall.back(), ++classes_present;
  }
  ev.accuracy = static_cast<double>(right) / static_cast<double>(data.size());
  ev.balanced_accuracy = recall_sum / static_cast<double>(std::max<std::int64_t>(1, classes_present));
  return ev;
}

void write_confusion(const std::string& path, const Evaluation& ev, const std::vector<std::string>& classes,
                     const std::string& title) {
  const auto C = classes.size();
  examples::Heatmap map{
      .title = title, .x_label = "predicted", .y_label = "true", .row_labels = classes, .col_labels = classes};
  for (std::size_t r = 0; r < C; ++r) {
    std::int64_t row = 0;
    for (std::size_t k = 0; k < C; ++k) row += ev.confusion[r * C + k];
    for (std::size_t k = 0; k < C; ++k) {
      const std::int64_t n = ev.confusion[r * C + k];
      // Shade by the fraction of the true class (a small class's errors show as clearly as a large one's).
      map.values.push_back(row > 0 ? static_cast<double>(n) / static_cast<double>(row) : 0.0);
      map.text.push_back(n > 0 ? fmt::format("{}", n) : "");
    }
  }
  examples::write_heatmap(path, map);
}

// ---------------------------------------------------------------------------------------------------------

int run(const Options& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  const Dataset d = load(o);
  const auto C = static_cast<std::int64_t>(d.classes.size());
  std::vector<std::int64_t> count(static_cast<std::size_t>(C), 0);
  for (const Example& e : d.train) ++count[static_cast<std::size_t>(e.label)];
  std::vector<double> class_weight(static_cast<std::size_t>(C), 1.0);
  if (o.class_weights == "balanced")
    for (std::int64_t c = 0; c < C; ++c)  // a class absent from training never appears in a loss: any weight
      if (count[static_cast<std::size_t>(c)] > 0)
        class_weight[static_cast<std::size_t>(c)] =
            static_cast<double>(d.train.size()) / static_cast<double>(C * count[static_cast<std::size_t>(c)]);

  manual_seed(o.seed);
  Classifier model(o, d.vocab, C);
  optim::Adam opt(model.parameters(), {.lr = o.lr});
  optim::CosineAnnealingLR schedule(opt, o.steps, o.lr / 10);  // decay to a tenth over the run
  Generator gen(o.seed ^ 0x9e3779b97f4a7c15ull);               // epoch shuffles, apart from initialisation

  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  UNROLL_CHECK(!ec, examples::UsageError, "{}: cannot create --out directory; got '{}' ({}), expected a writable path",
               kProgram, o.out, ec.message());
  const std::filesystem::path out_dir(o.out);
  examples::CsvWriter metrics((out_dir / "metrics.csv").string(),
                              {"step", "train_loss", "test_loss", "test_accuracy", "test_balanced_accuracy", "lr"});
  const auto majority = *std::max_element(count.begin(), count.end());
  fmt::print(
      "{}: {}: {} classes, {} characters; {} names for training, {} for testing (the largest class is "
      "{:.1f}% of training)\n",
      kProgram, o.data, C, d.vocab, d.train.size(), d.test.size(),
      100.0 * static_cast<double>(majority) / static_cast<double>(d.train.size()));
  fmt::print(
      "{}: bidirectional {}, {} layer(s) of {}, embedding {}, {} parameters; batch {}, lr {}, class weights {}\n",
      kProgram, o.cell, o.layers, o.hidden, o.embed, model.num_parameters(), o.batch, o.lr, o.class_weights);

  const auto plot_loss = [&]() {
    examples::PlotSeries train{.name = "train"}, test{.name = "test", .markers = true};
    for (const auto& r : metrics.table().rows) {
      if (r[1]) train.x.push_back(*r[0]), train.y.push_back(*r[1]);
      if (r[2]) test.x.push_back(*r[0]), test.y.push_back(*r[2]);
    }
    examples::write_line_plot((out_dir / "loss.svg").string(),
                              {.title = fmt::format("classify: bidirectional {} {}x{}, class weights {}", o.cell,
                                                    o.layers, o.hidden, o.class_weights),
                               .x_label = "step",
                               .y_label = "cross-entropy (class-weighted)",
                               .series = {train, test}});
  };

  std::int64_t tokens = 0;
  for (const Example& e : d.train) tokens += static_cast<std::int64_t>(e.ids.size());
  const std::int64_t tokens_per_step =
      std::max<std::int64_t>(1, tokens * std::min<std::int64_t>(o.batch, static_cast<std::int64_t>(d.train.size())) /
                                    static_cast<std::int64_t>(d.train.size()));
  examples::Progress progress(
      {.total_steps = o.steps, .first_step = 0, .tokens_per_step = tokens_per_step, .plain_every = o.log_every});
  const std::vector<Tensor> params = model.parameters();
  examples::EpochSampler sampler(d.train.size(), gen);
  double interval_loss = 0, smooth = NAN, first_interval = NAN, last_interval = NAN;
  // No ceiling here: only a non-finite loss counts as diverged.
  examples::DivergenceWatch divergence(
      {.program = kProgram,
       .ceiling = INFINITY,
       .patience = 1,
       .hint = fmt::format("try a smaller --lr (now {}) or a tighter --clip (now {})", o.lr, o.clip)});
  std::int64_t interval_steps = 0;
  Evaluation ev;
  for (std::int64_t step = 1; step <= o.steps; ++step) {
    const std::vector<std::size_t> which = sampler.next_batch(o.batch);
    const Batch b = make_batch(d.train, which);
    Tensor loss = weighted_cross_entropy(model.forward(b.x, b.lengths), b, class_weight);
    loss.backward();
    const double l = loss.item();
    // Before the update, while the parameters are still the ones that gave the loss: a non-finite loss stops
    // the run, naming the op where it went non-finite (the step run again under anomaly detection).
    divergence.check(step, l, [&] {
      return examples::locate_non_finite(
          model, [&] { return weighted_cross_entropy(model.forward(b.x, b.lengths), b, class_weight); });
    });
    optim::clip_grad_norm_(params, o.clip);
    opt.step();
    opt.zero_grad();
    schedule.step();
    smooth = std::isnan(smooth) ? l : 0.95 * smooth + 0.05 * l;
    interval_loss += l, ++interval_steps;
    progress.update(step, smooth, fmt::format("lr {:.2e}", opt.lr()));
    const bool eval_now = step % o.eval_every == 0 || step == o.steps;
    if (eval_now || step % o.log_every == 0) {
      std::optional<double> test_loss, acc, bacc;
      if (eval_now) {
        ev = evaluate(model, d.test, class_weight, C);
        test_loss = ev.loss, acc = ev.accuracy, bacc = ev.balanced_accuracy;
        progress.print_line(fmt::format("step {:>{}}  test accuracy {:.1f}%, balanced accuracy {:.1f}%, loss {:.4f}",
                                        step, fmt::formatted_size("{}", o.steps), 100 * ev.accuracy,
                                        100 * ev.balanced_accuracy, ev.loss));
      }
      last_interval = interval_loss / static_cast<double>(interval_steps);
      if (std::isnan(first_interval)) first_interval = last_interval;
      metrics.row({static_cast<double>(step), last_interval, test_loss, acc, bacc, opt.lr()});
      interval_loss = 0, interval_steps = 0;
      plot_loss();
    }
  }
  progress.finish();
  write_confusion((out_dir / "confusion.svg").string(), ev, d.classes,
                  fmt::format("test confusion matrix: accuracy {:.1f}%, balanced {:.1f}% (shade: fraction of the true "
                              "class)",
                              100 * ev.accuracy, 100 * ev.balanced_accuracy));

  std::string recalls;
  for (std::int64_t c = 0; c < C; ++c)
    recalls += fmt::format("{}{} {:.0f}%", c ? ", " : "", d.classes[static_cast<std::size_t>(c)],
                           100 * ev.recall[static_cast<std::size_t>(c)]);
  fmt::print("{}: {} steps in {}; train loss {:.4f} (first {} steps {:.4f})\n", kProgram, o.steps,
             examples::format_duration(progress.elapsed_seconds()), last_interval, o.log_every, first_interval);
  fmt::print("{}: per-class test recall: {}\n", kProgram, recalls);
  fmt::print("{}: test accuracy {:.1f}%, balanced accuracy {:.1f}% ({} names)\n", kProgram, 100 * ev.accuracy,
             100 * ev.balanced_accuracy, d.test.size());
  fmt::print("{}: wrote {}/metrics.csv, loss.svg, confusion.svg\n", kProgram, o.out);
  // Did the model learn something: --smoke (what CI runs) fails if not, a real run warns.
  const std::string first_what = fmt::format("the first {} steps'", o.log_every);
  return examples::check_loss_fell(kProgram, o.smoke,
                                   {.first = first_interval, .last = last_interval, .first_what = first_what});
}
}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main(kProgram, [&]() -> int {
    Options o;
    CLI::App app{
        "classify: variable-length sequence classification (surname -> language of origin, 17 classes) "
        "with a bidirectional GRU or LSTM, class weighting and a confusion matrix; or your own text,label CSV.",
        kProgram};
    app.get_formatter()->column_width(34);
    app.add_option("--data", o.data, "CSV file with a header row and a text and a label column")->capture_default_str();
    app.add_option("--text-column", o.text_column, "the column holding the text to classify")->capture_default_str();
    app.add_option("--label-column", o.label_column, "the column holding its class")->capture_default_str();
    app.add_option("--out", o.out, "directory for metrics.csv, loss.svg, confusion.svg")->capture_default_str();
    app.add_option("--cell", o.cell, "gru | lstm (bidirectional)")->capture_default_str();
    app.add_option("--embed", o.embed, "character embedding size")->capture_default_str();
    app.add_option("--hidden", o.hidden, "hidden size per direction")->capture_default_str();
    app.add_option("--layers", o.layers, "recurrent layers")->capture_default_str();
    app.add_option("--dropout", o.dropout, "dropout between layers and before the output layer")->capture_default_str();
    app.add_option("--class-weights", o.class_weights, "balanced (N / (C * N_c) per class) | none")
        ->capture_default_str();
    app.add_option("--test", o.test, "test on this CSV (same columns) instead of a --test-fraction of --data");
    app.add_option("--test-fraction", o.test_fraction, "the part of each class held out for testing")
        ->capture_default_str();
    app.add_option("--batch", o.batch, "names per step")->capture_default_str();
    app.add_option("--steps", o.steps, "training steps")->capture_default_str();
    app.add_option("--lr", o.lr, "Adam learning rate (cosine decay to lr/10)")->capture_default_str();
    app.add_option("--clip", o.clip, "gradient norm clipping")->capture_default_str();
    app.add_option("--eval-every", o.eval_every, "test accuracy every N steps")->capture_default_str();
    app.add_option("--log-every", o.log_every, "metrics.csv row (and a progress line when piped) every N steps")
        ->capture_default_str();
    app.add_option("--seed", o.seed, "random seed (initialisation, split, batches)")->capture_default_str();
    app.add_option("--threads", o.threads, "threads for BLAS and TBB (0: all cores)")->capture_default_str();
    app.add_flag("--smoke", o.smoke, "a tiny run of a few seconds (what CI runs); fails unless the loss falls");
    if (auto code = examples::parse_command_line(app, argc, argv)) return *code;
    if (o.smoke) {  // tiny defaults; flags given explicitly still win
      const examples::FlagDefaults def(app);
      def("--embed", o.embed, std::int64_t{16});
      def("--hidden", o.hidden, std::int64_t{32});
      def("--steps", o.steps, std::int64_t{150});
      def("--batch", o.batch, std::int64_t{32});
      def("--eval-every", o.eval_every, std::int64_t{75});
      def("--log-every", o.log_every, std::int64_t{25});
      def("--lr", o.lr, 1e-2);
      def("--out", o.out, std::string("runs/classify_smoke"));
    }
    check_options(o);
    return run(o);
  });
}
