// sentiment: sentence classification (positive / negative, or any number of classes in your CSV) with a word-level
// bidirectional LSTM whose states are pooled by attention — and the attention weights show which words decided —
// against a bag-of-words logistic regression. On the UCI "Sentiment Labelled Sentences" (Amazon, IMDb and Yelp
// reviews, 1,000 each; data/sentiment/), with a cross-domain table (--cross-domain: train on two sources, test on
// the third).
//
//   sentiment                                   # random 80/20 split, both models, ~6 s on 2 cores
//   sentiment --cross-domain                    # the 3 x 2 table: train on two sources, test on the third
//   sentiment --data my.csv --text-column review --label-column stars --test held_out.csv
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <string>
#include <unordered_map>
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

#ifndef SENTIMENT_DEFAULT_DATA
#define SENTIMENT_DEFAULT_DATA "data/sentiment/sentences.csv"
#endif

namespace {
constexpr const char* kProgram = "sentiment";

struct Options {
  std::string data = SENTIMENT_DEFAULT_DATA;
  std::string test;  ///< test rows from this CSV (same columns) instead of a split of --data
  std::string text_column = "text", label_column = "label", source_column = "source";
  std::string out = "runs/sentiment";
  bool cross_domain = false;
  std::string model = "bilstm";  ///< bilstm | transformer: the encoder whose states attention pools
  std::int64_t embed = 64, hidden = 64;
  std::int64_t heads = 4, layers = 2, ff = 128;  ///< Transformer encoder (width --embed)
  double dropout = 0.3, test_fraction = 0.2;
  std::int64_t batch = 32, steps = 600, show = 6;
  double lr = 3e-3, clip = 5.0;
  std::int64_t log_every = 50;
  std::uint64_t seed = 1;
  int threads = 0;
  bool smoke = false;
};

void check_options(const Options& o) {
  using examples::check_flag_range;
  check_flag_range<std::int64_t>(kProgram, "--embed", o.embed, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--hidden", o.hidden, 1, 4096);
  UNROLL_CHECK(o.model == "bilstm" || o.model == "transformer", examples::UsageError,
               "{}: unknown --model; got '{}', expected bilstm or transformer", kProgram, o.model);
  check_flag_range<std::int64_t>(kProgram, "--heads", o.heads, 1, 64);
  check_flag_range<std::int64_t>(kProgram, "--layers", o.layers, 1, 64);
  check_flag_range<std::int64_t>(kProgram, "--ff", o.ff, 1, 65536);
  UNROLL_CHECK(o.model != "transformer" || o.embed % o.heads == 0, examples::UsageError,
               "{}: --embed must be a multiple of --heads for the Transformer; got {} and {}", kProgram, o.embed,
               o.heads);
  check_flag_range(kProgram, "--dropout", o.dropout, 0.0, 0.9);
  check_flag_range(kProgram, "--test-fraction", o.test_fraction, 0.01, 0.9);
  check_flag_range<std::int64_t>(kProgram, "--batch", o.batch, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--steps", o.steps, 1, 10000000);
  check_flag_range<std::int64_t>(kProgram, "--show", o.show, 0, 1000);
  check_flag_range(kProgram, "--lr", o.lr, 0.0, 1e30);  // absurd rates allowed: divergence is caught
  check_flag_range(kProgram, "--clip", o.clip, 0.0, 1e9);
  check_flag_range<std::int64_t>(kProgram, "--log-every", o.log_every, 1, 10000000);
  check_flag_range(kProgram, "--threads", o.threads, 0, 1024);
}

// ---------------------------------------------------------------------------------------------------------
// Data

/// Lower-cased words (letters, digits, apostrophes) and each other non-space character as its own token ("!").
std::vector<std::string> tokenize(const std::string& text) {
  std::vector<std::string> out;
  std::string word;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '\'' || c >= 0x80) {
      word += static_cast<char>(std::tolower(c));
      continue;
    }
    if (!word.empty()) out.push_back(word), word.clear();
    if (!std::isspace(c)) out.emplace_back(1, ch);
  }
  if (!word.empty()) out.push_back(word);
  return out;
}

struct Row {
  std::vector<std::string> words;
  std::string text, source;
  std::int64_t label = 0;
};

struct Corpus {
  std::vector<Row> rows;
  std::vector<std::string> classes;  ///< sorted labels
};

/// A CSV's rows with its text and label columns (and the source column, if it has one). `classes`: the labels
/// allowed (a --test file's must be among --data's); empty: taken from this file.
Corpus read_rows(const Options& o, const std::string& path, const char* flag, const std::vector<std::string>& classes) {
  const examples::TextTable table = examples::read_text_table(kProgram, flag, path);
  const int tc = table.column(o.text_column), lc = table.column(o.label_column), sc = table.column(o.source_column);
  UNROLL_CHECK(tc >= 0 && lc >= 0, examples::UsageError,
               "{}: no such column in the {} file; got '{}' in '{}', expected the text and label columns (--text-column, "
               "--label-column)",
               kProgram, flag, tc < 0 ? o.text_column : o.label_column, path);
  Corpus c;
  c.classes = classes;
  if (c.classes.empty()) {
    for (const auto& r : table.rows) c.classes.push_back(r[static_cast<std::size_t>(lc)]);
    std::sort(c.classes.begin(), c.classes.end());
    c.classes.erase(std::unique(c.classes.begin(), c.classes.end()), c.classes.end());
  }
  for (std::size_t i = 0; i < table.rows.size(); ++i) {
    const auto& r = table.rows[i];
    Row row{.words = tokenize(r[static_cast<std::size_t>(tc)]), .text = r[static_cast<std::size_t>(tc)],
            .source = sc >= 0 ? r[static_cast<std::size_t>(sc)] : std::string(), .label = 0};
    const auto it = std::find(c.classes.begin(), c.classes.end(), r[static_cast<std::size_t>(lc)]);
    UNROLL_CHECK(it != c.classes.end(), examples::UsageError,
                 "{}: {} file has a label the training data lacks; got '{}' at line {} of '{}', expected one of {}",
                 kProgram, flag, examples::printable(r[static_cast<std::size_t>(lc)]), table.lines[i], path,
                 fmt::join(c.classes, ", "));
    UNROLL_CHECK(!row.words.empty(), examples::UsageError, "{}: {} file has an empty text at line {} of '{}'", kProgram,
                 flag, table.lines[i], path);
    row.label = it - c.classes.begin();
    c.rows.push_back(std::move(row));
  }
  return c;
}

struct Vocab {
  std::unordered_map<std::string, std::int64_t> index;  ///< 0 <pad>, 1 <unk>
  std::vector<std::string> words{"<pad>", "<unk>"};
  /// Words seen twice or more in training; the rarer ones share <unk>, so that <unk> is trained too and a word
  /// never seen (a test sentence's, another domain's) reads as a trained "rare word", not an untrained row.
  explicit Vocab(const std::vector<Row>& train) {
    std::unordered_map<std::string, int> count;
    for (const Row& r : train)
      for (const std::string& w : r.words) ++count[w];
    for (const Row& r : train)
      for (const std::string& w : r.words)
        if (count[w] >= 2 && index.emplace(w, static_cast<std::int64_t>(words.size())).second) words.push_back(w);
  }
  std::int64_t id(const std::string& w) const {
    const auto it = index.find(w);
    return it == index.end() ? 1 : it->second;
  }
  std::int64_t size() const { return static_cast<std::int64_t>(words.size()); }
};

struct Batch {
  Tensor ids, labels;  ///< [T, B] (0 past each sentence's end), [B]
  std::vector<std::int64_t> lengths;
  std::int64_t tokens = 0;
};

Batch make_batch(const Vocab& v, const std::vector<const Row*>& rows) {
  Batch b;
  std::int64_t T = 0;
  for (const Row* r : rows) T = std::max<std::int64_t>(T, static_cast<std::int64_t>(r->words.size()));
  const auto B = static_cast<std::int64_t>(rows.size());
  std::vector<std::int64_t> ids(static_cast<std::size_t>(T * B), 0), y;
  for (std::int64_t j = 0; j < B; ++j) {
    const Row& r = *rows[static_cast<std::size_t>(j)];
    for (std::size_t t = 0; t < r.words.size(); ++t) ids[t * static_cast<std::size_t>(B) + static_cast<std::size_t>(j)] = v.id(r.words[t]);
    b.lengths.push_back(static_cast<std::int64_t>(r.words.size()));
    b.tokens += b.lengths.back();
    y.push_back(r.label);
  }
  b.ids = index_tensor(ids, {T, B});
  b.labels = index_tensor(y, {B});
  return b;
}

// ---------------------------------------------------------------------------------------------------------
// The models

/// An encoder whose states are pooled by additive attention (Bahdanau-style scores v^T tanh(W h_t + b), softmax
/// over each sentence's own steps) — a BiLSTM, or with --model transformer a Transformer encoder (sinusoidal
/// positions, padding masked) — or a bag-of-words logistic regression (one weight per word and class, summed
/// over the sentence, + a bias).
class Classifier : public nn::Module {
 public:
  Classifier(bool bow, const Options& o, std::int64_t vocab, std::int64_t classes)
      : bow_(bow), dropout_(o.dropout), width_(o.model == "transformer" ? o.embed : 2 * o.hidden),
        embed(vocab, bow ? classes : o.embed, /*padding_idx=*/0), attn(width_, width_), score(width_, 1, false),
        head(bow ? 1 : width_, classes) {
    register_module("embed", embed);
    if (bow) {  // logistic regression starts from zero weights (an embedding's N(0, 1) would be noise here)
      NoGradGuard no_grad;
      copy_(embed.weight, zeros(embed.weight.shape()));
      bias = zeros({classes}).requires_grad_();
      register_parameter("bias", bias);
      return;
    }
    if (o.model == "transformer") {
      pos = std::make_unique<nn::SinusoidalPositionalEncoding>(o.embed, 4096);
      transformer = std::make_unique<nn::TransformerEncoder>(
          nn::TransformerEncoderLayerOptions{.d_model = o.embed, .nhead = o.heads, .dim_feedforward = o.ff,
                                             .dropout = o.dropout, .activation = nn::Activation::relu,
                                             .layer_norm_eps = 1e-5, .batch_first = false, .norm_first = true},
          o.layers, /*final_norm=*/true);
      register_module("encoder", *transformer);
    } else {
      rnn = std::make_unique<nn::LSTM>(nn::RecurrentOptions{.input_size = o.embed, .hidden_size = o.hidden, .bidirectional = true});
      register_module("rnn", *rnn);
    }
    register_module("attn", attn);
    register_module("score", score);
    register_module("head", head);
  }

  /// logits [B, C]; with `weights`, the attention weights [T, B] (not the bag of words).
  Tensor forward(const Batch& b, Tensor* weights = nullptr) const {
    const Tensor x = embed(b.ids);  // [T, B, E] (BoW: [T, B, C], zero rows for padding)
    if (bow_) return sum(x, {0}) + bias;
    const std::int64_t T = b.ids.size(0), B = b.ids.size(1);
    std::vector<std::int64_t> pad(static_cast<std::size_t>(T * B), 0);  // [T, B]: 1 past each sentence's end
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t j = 0; j < B; ++j) pad[static_cast<std::size_t>(t * B + j)] = t >= b.lengths[static_cast<std::size_t>(j)];
    const Tensor padding = index_tensor(pad, {T, B});
    Tensor h;  // [T, B, width]
    if (transformer) {
      // N(0, 1) embeddings are not scaled by sqrt(d): that would drown the positions (examples/translate/README.md)
      const Tensor xs = (*pos)(x, /*batch_first=*/false);
      h = (*transformer)(dropout(xs, dropout_, is_training()), {}, transpose(padding, 0, 1));
    } else {
      h = (*rnn)(dropout(x, dropout_, is_training()), {}, {}, b.lengths).output;
    }
    const Tensor s = masked_fill(reshape(score(tanh(attn(h))), {T, B}), padding, -1e9);
    const Tensor a = softmax(s, 0);  // over each sentence's steps
    if (weights != nullptr) *weights = a.detach();
    const Tensor pooled = sum(h * unsqueeze(a, 2), {0});  // [B, width]
    return head(dropout(pooled, dropout_, is_training()));
  }

 private:
  bool bow_;
  double dropout_;
  std::int64_t width_;

 public:
  nn::Embedding embed;
  std::unique_ptr<nn::LSTM> rnn;
  std::unique_ptr<nn::SinusoidalPositionalEncoding> pos;
  std::unique_ptr<nn::TransformerEncoder> transformer;
  nn::Linear attn, score, head;
  Tensor bias;
};

std::string encoder_label(const Options& o) { return o.model == "transformer" ? "Transformer" : "BiLSTM"; }

struct Result {
  std::string model;
  double accuracy = 0, seconds = 0, tokens_per_s = 0, first_loss = NAN, last_loss = NAN;
  std::int64_t parameters = 0;
};

double accuracy(const Classifier& model, const Vocab& v, const std::vector<Row>& rows) {
  NoGradGuard no_grad;
  std::int64_t right = 0;
  for (std::size_t i = 0; i < rows.size(); i += 256) {
    std::vector<const Row*> part;
    for (std::size_t k = i; k < std::min(rows.size(), i + 256); ++k) part.push_back(&rows[k]);
    const Batch b = make_batch(v, part);
    const auto pred = argmax(model.forward(b), 1).to_vector<std::int64_t>();
    for (std::size_t k = 0; k < part.size(); ++k) right += pred[k] == part[k]->label;
  }
  return static_cast<double>(right) / static_cast<double>(rows.size());
}

/// Trains one model on `train` and measures it on `test`.
Result train_and_test(Classifier& model, const Vocab& v, const std::vector<Row>& train, const std::vector<Row>& test,
                      const Options& o, const std::string& name, examples::CsvWriter* metrics) {
  manual_seed(o.seed);
  optim::Adam opt(model.parameters(), {.lr = o.lr});
  optim::CosineAnnealingLR schedule(opt, o.steps, o.lr / 10);
  Generator gen(o.seed ^ 0x51u);
  const std::vector<Tensor> params = model.parameters();
  examples::DivergenceWatch divergence(
      {.program = kProgram, .ceiling = INFINITY, .patience = 1,
       .hint = fmt::format("try a smaller --lr (now {}) or a tighter --clip (now {})", o.lr, o.clip)});
  examples::EpochSampler sampler(train.size(), gen);
  Result r{.model = name};
  std::int64_t tokens = 0;
  double interval = 0;
  std::int64_t in_interval = 0;
  model.train();
  for (std::int64_t step = 1; step <= o.steps; ++step) {
    std::vector<const Row*> rows;
    for (const std::size_t i : sampler.next_batch(o.batch)) rows.push_back(&train[i]);
    const auto t0 = std::chrono::steady_clock::now();
    const Batch b = make_batch(v, rows);
    Tensor loss = cross_entropy(model.forward(b), b.labels);
    loss.backward();
    const double l = loss.item();
    divergence.check(step, l, [&] { return examples::locate_non_finite(model, [&] { return cross_entropy(model.forward(b), b.labels); }); });
    optim::clip_grad_norm_(params, o.clip > 0 ? o.clip : INFINITY);
    opt.step();
    opt.zero_grad();
    schedule.step();
    r.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    tokens += b.tokens;
    interval += l, ++in_interval;
    if (step % o.log_every == 0 || step == o.steps) {
      const double mean = interval / static_cast<double>(in_interval);
      if (std::isnan(r.first_loss)) r.first_loss = mean;
      r.last_loss = mean;
      if (metrics) metrics->row({static_cast<double>(step), name != "bow" ? mean : std::optional<double>(),
                                 name == "bow" ? mean : std::optional<double>()});
      interval = 0, in_interval = 0;
    }
  }
  model.eval();
  r.accuracy = accuracy(model, v, test);
  r.tokens_per_s = static_cast<double>(tokens) / r.seconds;
  r.parameters = model.num_parameters();
  return r;
}

// ---------------------------------------------------------------------------------------------------------

int run(const Options& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  const Corpus all = read_rows(o, o.data, "--data", {});
  UNROLL_CHECK(all.classes.size() >= 2 && all.rows.size() >= 10, examples::UsageError,
               "{}: --data file too small; got {} rows and {} labels in '{}', expected at least 10 rows and 2 labels",
               kProgram, all.rows.size(), all.classes.size(), o.data);
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  UNROLL_CHECK(!ec, examples::UsageError, "{}: cannot create --out directory; got '{}' ({}), expected a writable path",
               kProgram, o.out, ec.message());
  const std::filesystem::path out_dir(o.out);
  const auto C = static_cast<std::int64_t>(all.classes.size());

  if (o.cross_domain) {  // train on all sources but one, test on that one: both models, one row per source
    std::vector<std::string> sources;
    for (const Row& r : all.rows) sources.push_back(r.source);
    std::sort(sources.begin(), sources.end());
    sources.erase(std::unique(sources.begin(), sources.end()), sources.end());
    UNROLL_CHECK(sources.size() >= 2 && !sources.front().empty(), examples::UsageError,
                 "{}: --cross-domain needs a source column with at least two sources; got {} in column '{}' of '{}'",
                 kProgram, sources.size(), o.source_column, o.data);
    std::string table = fmt::format("test_source,train_rows,test_rows,{}_accuracy,bow_accuracy\n", o.model);
    fmt::print("{}: cross-domain, {} steps each\n{:<10} {:>10} {:>10} {:>21} {:>14}\n", kProgram, o.steps, "test on",
               "train", "test", encoder_label(o) + "+attention", "bag of words");
    std::string last;
    for (const std::string& held : sources) {
      std::vector<Row> train, test;
      for (const Row& r : all.rows) (r.source == held ? test : train).push_back(r);
      const Vocab v(train);
      manual_seed(o.seed);  // the same initialisation for every row of the table
      Classifier lstm(false, o, v.size(), C), bow(true, o, v.size(), C);
      const Result a = train_and_test(lstm, v, train, test, o, o.model, nullptr);
      const Result b = train_and_test(bow, v, train, test, o, "bow", nullptr);
      fmt::print("{:<10} {:>10} {:>10} {:>20.1f}% {:>13.1f}%\n", held, train.size(), test.size(), 100 * a.accuracy,
                 100 * b.accuracy);
      table += fmt::format("{},{},{},{},{}\n", held, train.size(), test.size(), a.accuracy, b.accuracy);
      last += fmt::format("{}{} {:.1f}% / {:.1f}%", last.empty() ? "" : ", ", held, 100 * a.accuracy, 100 * b.accuracy);
    }
    examples::write_file_atomic((out_dir / "cross_domain.csv").string(), table, kProgram);
    fmt::print("{}: test accuracy, {}+attention / bag of words, trained on the other sources: {}\n", kProgram,
               encoder_label(o), last);
    return 0;
  }

  // The split: a --test file, or a random --test-fraction of --data.
  std::vector<Row> train, test;
  if (!o.test.empty()) {
    train = all.rows;
    test = read_rows(o, o.test, "--test", all.classes).rows;
    UNROLL_CHECK(!test.empty(), examples::UsageError, "{}: --test file has no rows; got only a header in '{}'", kProgram,
                 o.test);
  } else {
    Generator gen(o.seed ^ 0x5e7u);
    const std::vector<std::size_t> order = examples::shuffled_indices(all.rows.size(), gen);
    const auto n_test = static_cast<std::size_t>(std::clamp<long long>(
        std::llround(static_cast<double>(order.size()) * o.test_fraction), 1, static_cast<long long>(order.size()) - 1));
    for (std::size_t i = 0; i < order.size(); ++i) (i < n_test ? test : train).push_back(all.rows[order[i]]);
  }
  const Vocab v(train);
  fmt::print("{}: {} rows for training, {} for testing{}; {} classes ({}), {} words\n", kProgram, train.size(),
             test.size(), o.test.empty() ? "" : fmt::format(" (from {})", o.test), C, fmt::join(all.classes, ", "),
             v.size());
  examples::CsvWriter metrics((out_dir / "metrics.csv").string(), {"step", o.model + "_train_loss", "bow_train_loss"});
  manual_seed(o.seed);
  Classifier lstm(false, o, v.size(), C), bow(true, o, v.size(), C);
  const Result a = train_and_test(lstm, v, train, test, o, o.model, &metrics);
  const Result b = train_and_test(bow, v, train, test, o, "bow", &metrics);
  {
    examples::PlotSeries la{.name = encoder_label(o) + " + attention"}, lb{.name = "bag of words"};
    for (const auto& r : metrics.table().rows) {
      if (r[1]) la.x.push_back(*r[0]), la.y.push_back(*r[1]);
      if (r[2]) lb.x.push_back(*r[0]), lb.y.push_back(*r[2]);
    }
    examples::write_line_plot((out_dir / "loss.svg").string(),
                              {.title = "sentiment: training loss", .x_label = "step", .y_label = "cross-entropy",
                               .series = {la, lb}, .log_y = true});
  }
  // Which words the attention picked, for the first --show test sentences.
  std::string shown;
  {
    NoGradGuard no_grad;
    for (std::size_t i = 0; i < std::min<std::size_t>(test.size(), static_cast<std::size_t>(o.show)); ++i) {
      Tensor w;
      const Batch bt = make_batch(v, {&test[i]});
      const auto pred = argmax(lstm.forward(bt, &w), 1).to_vector<std::int64_t>()[0];
      const auto weights = w.to_vector<double>();
      std::vector<std::size_t> by(weights.size());
      std::iota(by.begin(), by.end(), std::size_t{0});
      std::sort(by.begin(), by.end(), [&](std::size_t x, std::size_t y) { return weights[x] > weights[y]; });
      std::string top;
      for (std::size_t k = 0; k < std::min<std::size_t>(3, by.size()); ++k)
        top += fmt::format("{}{} {:.2f}", k ? ", " : "", test[i].words[by[k]], weights[by[k]]);
      shown += fmt::format("[{} -> {}] {}\n    attention: {}\n", all.classes[static_cast<std::size_t>(test[i].label)],
                           all.classes[static_cast<std::size_t>(pred)], test[i].text, top);
    }
  }
  examples::write_file_atomic((out_dir / "attention.txt").string(), shown, kProgram);
  fmt::print("{}", shown);
  for (const Result* r : {&a, &b})
    fmt::print("{}: {:<6} {} parameters, trained in {:.1f} s, {} tokens/s\n", kProgram, r->model, r->parameters,
               r->seconds, examples::format_count(r->tokens_per_s));
  fmt::print("{}: wrote {}/metrics.csv, loss.svg, attention.txt\n", kProgram, o.out);
  fmt::print("{}: test accuracy {:.1f}% ({} + attention), {:.1f}% (bag of words); {} sentences\n", kProgram,
             100 * a.accuracy, encoder_label(o), 100 * b.accuracy, test.size());
  return examples::check_loss_fell(kProgram, o.smoke,
                                   {.first = a.first_loss, .last = a.last_loss, .first_what = "the first steps'"});
}
}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main(kProgram, [&]() -> int {
    Options o;
    CLI::App app{"sentiment: sentence classification with a BiLSTM and attention pooling against a bag-of-words "
                 "logistic regression, on Amazon/IMDb/Yelp review sentences or your own CSV.",
                 kProgram};
    app.get_formatter()->column_width(34);
    app.add_option("--data", o.data, "CSV with a header, a text and a label column (any number of labels)")
        ->capture_default_str();
    app.add_option("--test", o.test, "test on this CSV (same columns) instead of a --test-fraction of --data");
    app.add_option("--text-column", o.text_column, "the column holding the text")->capture_default_str();
    app.add_option("--label-column", o.label_column, "the column holding its class")->capture_default_str();
    app.add_option("--source-column", o.source_column, "the column naming each row's source (--cross-domain)")
        ->capture_default_str();
    app.add_flag("--cross-domain", o.cross_domain, "train on all sources but one, test on that one, for each source");
    app.add_option("--out", o.out, "directory for metrics.csv, loss.svg, attention.txt, cross_domain.csv")
        ->capture_default_str();
    app.add_option("--model", o.model, "encoder pooled by attention: bilstm or transformer")->capture_default_str();
    app.add_option("--embed", o.embed, "word embedding size (the Transformer's width)")->capture_default_str();
    app.add_option("--heads", o.heads, "Transformer attention heads")->capture_default_str();
    app.add_option("--layers", o.layers, "Transformer encoder layers (pre-norm)")->capture_default_str();
    app.add_option("--ff", o.ff, "Transformer feed-forward size")->capture_default_str();
    app.add_option("--hidden", o.hidden, "BiLSTM hidden size per direction")->capture_default_str();
    app.add_option("--dropout", o.dropout, "dropout on the embeddings and the pooled state")->capture_default_str();
    app.add_option("--test-fraction", o.test_fraction, "the part of --data held out for testing")->capture_default_str();
    app.add_option("--batch", o.batch, "sentences per step")->capture_default_str();
    app.add_option("--steps", o.steps, "training steps (per model)")->capture_default_str();
    app.add_option("--lr", o.lr, "Adam learning rate (cosine decay to lr/10)")->capture_default_str();
    app.add_option("--clip", o.clip, "gradient norm clipping (0: off)")->capture_default_str();
    app.add_option("--show", o.show, "test sentences whose attention weights are printed")->capture_default_str();
    app.add_option("--log-every", o.log_every, "a metrics.csv row every N steps")->capture_default_str();
    app.add_option("--seed", o.seed, "random seed (initialisation, split, batches, dropout)")->capture_default_str();
    app.add_option("--threads", o.threads, "threads for BLAS and TBB (0: all cores)")->capture_default_str();
    app.add_flag("--smoke", o.smoke, "a tiny run of a few seconds (what CI runs); fails unless the loss falls");
    if (auto code = examples::parse_command_line(app, argc, argv)) return *code;
    if (o.smoke) {
      const examples::FlagDefaults def(app);
      def("--steps", o.steps, std::int64_t{150});
      def("--hidden", o.hidden, std::int64_t{32});
      def("--embed", o.embed, std::int64_t{32});
      def("--log-every", o.log_every, std::int64_t{25});
      def("--lr", o.lr, 1e-2);
      def("--out", o.out, std::string("runs/sentiment_smoke"));
    }
    check_options(o);
    return run(o);
  });
}
