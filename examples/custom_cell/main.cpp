// custom_cell: the researcher's workflow in one file. (1) Define a new gating mechanism as an ordinary
// nn::Module whose forward is a few ops: here the minimal gated unit (Zhou et al., 2016), one gate that both
// forgets and writes. (2) Gradcheck it in float64 over an unrolled sequence: if the cell has a bug the
// autodiff cannot see (it can't: the ops are differentiated for you) or an op is wrong, this says where.
// (3) Train it as a character-level language model beside the library's fused nn::LSTM and nn::GRU, sized
// to about the same number of parameters, on the same batches. (4) Plot the comparison.
//
//   custom_cell                               # gradcheck, then 3 models on Jane Austen (a few minutes)
//   custom_cell --data my.txt --out runs/cc   # your own text
//   custom_cell --smoke                       # what CI runs: seconds
#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numbers>
#include <string>
#include <vector>

#include <fmt/format.h>

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

#ifndef CUSTOM_CELL_DEFAULT_DATA
#define CUSTOM_CELL_DEFAULT_DATA "data/austen/austen5.txt"
#endif

namespace {
constexpr const char* kProgram = "custom_cell";

// ---------------------------------------------------------------------------------------------------------
// (1) The new cell. Minimal gated unit: f = σ(W_f [x, h] + b_f),  h' = (1 - f) ⊙ h + f ⊙ tanh(W_c [x, f ⊙ h] + b_c).
// That is all: the tape differentiates it, nn::run_cell unrolls it, the optimizers see its parameters.
struct MGUCell : nn::Module {
  nn::Linear f, c;
  MGUCell(std::int64_t in, std::int64_t hid, Dtype dt = Dtype::float32)
      : f(in + hid, hid, true, dt), c(in + hid, hid, true, dt) {
    register_module("f", f);
    register_module("c", c);
  }
  Tensor operator()(const Tensor& x, const Tensor& h) const {
    Tensor gate = sigmoid(f(cat({x, h}, 1)));
    Tensor cand = tanh(c(cat({x, gate * h}, 1)));
    return (1.0 - gate) * h + gate * cand;
  }
};

// ---------------------------------------------------------------------------------------------------------
// (3) The language model around any of the three cells: Embedding -> cell over time -> Linear over bytes.

struct Options {
  std::string data = CUSTOM_CELL_DEFAULT_DATA;
  std::string test;  ///< after training, every model's bits/char on this text (the last line)
  std::string out = "runs/custom_cell";
  std::int64_t embed = 32, hidden = 128, window = 64, batch = 32, steps = 1500, eval_every = 150, eval_chars = 20000;
  double lr = 4e-3, clip = 1.0;
  std::uint64_t seed = 1;
  int threads = 1;  ///< these matrices are small: more threads only add synchronisation
  bool smoke = false;
  bool no_fuse = false;  ///< run the MGU op by op instead of fused (nn/fuse.hpp)
};

/// Recurrent parameters of a cell with `gates` weight blocks on [x, h] (and 1 or 2 biases per block).
std::int64_t recurrent_params(std::int64_t gates, std::int64_t biases, std::int64_t in, std::int64_t hid) {
  return gates * (in + hid) * hid + gates * biases * hid;
}

/// The hidden size whose recurrent parameter count is closest to `target` (gates = 4 LSTM, 3 GRU).
std::int64_t matching_hidden(std::int64_t target, std::int64_t gates, std::int64_t in) {
  std::int64_t best = 1;
  for (std::int64_t h = 1; h <= 8192; ++h)
    if (std::abs(recurrent_params(gates, 2, in, h) - target) < std::abs(recurrent_params(gates, 2, in, best) - target))
      best = h;
  return best;
}

class CharModel : public nn::Module {
 public:
  CharModel(const std::string& kind, std::int64_t vocab, std::int64_t embed, std::int64_t hidden, bool fuse)
      : kind_(kind), hidden_(hidden), emb(vocab, embed), head(hidden, vocab) {
    register_module("embed", emb);
    const nn::RecurrentOptions ro{.input_size = embed, .hidden_size = hidden};
    if (kind == "mgu") {
      // nn::Fused<MGUCell> is an MGUCell (same parameters and state dict) whose steps run as one tape node each.
      register_module("rnn", *(mgu = std::make_unique<nn::Fused<MGUCell>>(embed, hidden)));
      mgu->set_fused(fuse);
    } else if (kind == "lstm") {
      register_module("rnn", *(lstm = std::make_unique<nn::LSTM>(ro)));
    } else {
      register_module("rnn", *(gru = std::make_unique<nn::GRU>(ro)));
    }
    register_module("head", head);
  }

  /// idx [T, B], carried (h, c) (undefined: zeros) -> logits [T*B, V] and the next (h, c), not detached.
  std::pair<Tensor, std::array<Tensor, 2>> forward(const Tensor& idx, const std::array<Tensor, 2>& carry) const {
    const std::int64_t T = idx.size(0), B = idx.size(1);
    const Tensor x = emb(idx);  // [T, B, E]
    Tensor out;
    std::array<Tensor, 2> next;
    if (mgu) {  // the custom cell: run_cell is the for-loop over time
      auto r = nn::run_cell(x, carry[0].defined() ? carry[0] : zeros({B, hidden_}), *mgu);
      out = r.output, next = {r.state, {}};
    } else if (lstm) {  // the library's layers take and return [layers, B, H] states
      auto r = (*lstm)(x, carry[0], carry[1]);
      out = r.output, next = {r.h_n, r.c_n};
    } else {
      auto r = (*gru)(x, carry[0]);
      out = r.output, next = {r.h_n, {}};
    }
    return {head(reshape(out, {T * B, hidden_})), next};
  }

  const std::string& kind() const { return kind_; }
  std::int64_t hidden() const { return hidden_; }
  std::int64_t recurrent_parameters() const { return num_parameters() - emb.num_parameters() - head.num_parameters(); }

 private:
  std::string kind_;
  std::int64_t hidden_;

 public:
  nn::Embedding emb;
  std::unique_ptr<nn::Fused<MGUCell>> mgu;
  std::unique_ptr<nn::LSTM> lstm;
  std::unique_ptr<nn::GRU> gru;
  nn::Linear head;
};

// ---------------------------------------------------------------------------------------------------------
// Data: the distinct bytes of the file are the vocabulary; B streams through the first 90% (carried state,
// truncated BPTT over windows of T), validation on the last 10%.

struct Corpus {
  std::vector<std::int64_t> train, val;
  std::int64_t vocab = 0, bytes = 0;
  std::array<int, 256> id{};  ///< byte -> symbol (-1: not in the training text)
};

Corpus load_corpus(const Options& o) {
  const std::string text = examples::read_data_file(kProgram, "--data", o.data);
  const auto nul = text.find('\0');
  UNROLL_CHECK(nul == std::string::npos, examples::UsageError,
               "{}: --data file is not text; got a NUL byte at offset {} of '{}', expected a text file", kProgram, nul,
               o.data);
  const auto n = static_cast<std::int64_t>(text.size());
  const std::int64_t n_train = n * 9 / 10, T = o.window, B = o.batch;
  if (n_train < B * (T + 1) || n - n_train < T + 1) {
    std::int64_t need = std::max(B * (T + 1) * 10 / 9, (T + 1) * 10);
    while (need * 9 / 10 < B * (T + 1) || need - need * 9 / 10 < T + 1) ++need;
    detail::throw_error<UsageError>(
        "{}: --data file too short for --window {} and --batch {}; got {} bytes in '{}', expected at least {} (90% for "
        "training >= batch x (window + 1), 10% for validation >= window + 1)",
        kProgram, T, B, n, o.data, need);
  }
  std::array<int, 256> id{};
  id.fill(-1);
  Corpus c;
  c.bytes = n;
  for (const char ch : text)
    if (id[static_cast<unsigned char>(ch)] < 0) id[static_cast<unsigned char>(ch)] = 0;
  for (int& v : id)
    if (v == 0) v = static_cast<int>(c.vocab++);
  for (std::int64_t i = 0; i < n; ++i)
    (i < n_train ? c.train : c.val).push_back(id[static_cast<unsigned char>(text[static_cast<std::size_t>(i)])]);
  c.id = id;
  if (static_cast<std::int64_t>(c.val.size()) > o.eval_chars) c.val.resize(static_cast<std::size_t>(o.eval_chars));
  return c;
}

/// Window k of B streams of `len` ids each: (inputs [T, B], targets [T*B], next position one further).
std::pair<Tensor, Tensor> window(const std::vector<std::int64_t>& ids, std::int64_t B, std::int64_t len,
                                 std::int64_t start, std::int64_t T) {
  std::vector<std::int64_t> in(static_cast<std::size_t>(T * B)), tgt(in.size());
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t b = 0; b < B; ++b) {
      const auto at = static_cast<std::size_t>(b * len + start + t);
      in[static_cast<std::size_t>(t * B + b)] = ids[at];
      tgt[static_cast<std::size_t>(t * B + b)] = ids[at + 1];
    }
  return {index_tensor(in, {T, B}), index_tensor(tgt, {T * B})};
}

/// Validation bits per character over the validation text read as up to 16 streams (state carried across
/// windows), so evaluating costs about as many steps as training on one window per stream.
double evaluate(CharModel& model, const std::vector<std::int64_t>& val, std::int64_t T) {
  NoGradGuard no_grad;
  const auto n = static_cast<std::int64_t>(val.size());
  const std::int64_t streams = std::max<std::int64_t>(1, std::min<std::int64_t>(16, n / (T + 1)));
  const std::int64_t len = n / streams;
  std::array<Tensor, 2> carry;
  double total = 0;
  std::int64_t count = 0;
  for (std::int64_t start = 0; start + 1 < len; start += T) {
    const std::int64_t w = std::min(T, len - 1 - start);
    auto [x, y] = window(val, streams, len, start, w);
    auto [logits, next] = model.forward(x, carry);
    total += cross_entropy(logits, y, Reduction::sum).item();
    count += w * streams;
    carry = next;
  }
  return total / static_cast<double>(count) / std::numbers::ln2;
}

// ---------------------------------------------------------------------------------------------------------

void check_options(const Options& o) {
  using examples::check_flag_range;
  check_flag_range<std::int64_t>(kProgram, "--embed", o.embed, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--hidden", o.hidden, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--window", o.window, 1, 100000);
  check_flag_range<std::int64_t>(kProgram, "--batch", o.batch, 1, 100000);
  check_flag_range<std::int64_t>(kProgram, "--steps", o.steps, 1, 100000000);
  check_flag_range<std::int64_t>(kProgram, "--eval-every", o.eval_every, 1, 100000000);
  check_flag_range<std::int64_t>(kProgram, "--eval-chars", o.eval_chars, 2, 1000000000);
  check_flag_range(kProgram, "--lr", o.lr, 0.0, 1e30);  // absurd rates allowed: divergence is caught
  check_flag_range(kProgram, "--clip", o.clip, 0.0, 1e9);
  check_flag_range(kProgram, "--threads", o.threads, 0, 1024);
}

int run(const Options& o) {
  if (o.threads > 0) set_num_threads(o.threads);

  // (2) Gradcheck the new cell in float64 over an unrolled sequence: inputs, initial state and every
  // parameter against central differences. A failure names the input and, for x, the time step.
  {
    manual_seed(o.seed);
    MGUCell cell(3, 4, Dtype::float64);
    std::vector<Tensor> inputs = {randn({6, 2, 3}, Dtype::float64), randn({2, 4}, Dtype::float64)};
    for (Tensor& t : inputs) t.requires_grad_();
    for (const Tensor& p : cell.parameters()) inputs.push_back(p);
    const auto report = autograd::gradcheck(
        "mgu", [&](const std::vector<Tensor>& p) { return nn::run_cell(p[0], p[1], cell).output; }, inputs);
    fmt::print("{}: {}\n", kProgram, report.message);
    if (!report.ok) return 1;
  }

  const Corpus corpus = load_corpus(o);
  // --test: read and checked now (a bad file stops the run before training), evaluated at the end.
  std::vector<std::int64_t> test_ids;
  if (!o.test.empty()) {
    const std::string text = examples::read_data_file(kProgram, "--test", o.test);
    for (std::size_t i = 0; i < text.size(); ++i) {
      const int k = corpus.id[static_cast<unsigned char>(text[i])];
      UNROLL_CHECK(k >= 0, examples::UsageError,
                   "{}: --test file has a character the models never saw; got '{}' at offset {} of '{}', expected "
                   "only characters of the --data text",
                   kProgram, examples::printable(text.substr(i, 1)), i, o.test);
      test_ids.push_back(k);
    }
    UNROLL_CHECK(static_cast<std::int64_t>(test_ids.size()) >= o.window + 1, examples::UsageError,
                 "{}: --test file too short for --window {}; got {} bytes in '{}', expected at least {}", kProgram,
                 o.window, test_ids.size(), o.test, o.window + 1);
  }
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  UNROLL_CHECK(!ec, examples::UsageError, "{}: cannot create --out directory; got '{}' ({}), expected a writable path",
               kProgram, o.out, ec.message());
  const std::filesystem::path out(o.out);

  // Three models of about the same recurrent size: the MGU has 2 weight blocks, the GRU 3, the LSTM 4.
  const std::int64_t target = recurrent_params(2, 1, o.embed, o.hidden);
  const std::vector<std::pair<std::string, std::int64_t>> kinds = {
      {"mgu", o.hidden}, {"lstm", matching_hidden(target, 4, o.embed)}, {"gru", matching_hidden(target, 3, o.embed)}};
  std::vector<std::unique_ptr<CharModel>> models;
  std::vector<std::unique_ptr<optim::Adam>> opts;
  std::vector<std::unique_ptr<optim::CosineAnnealingLR>> schedules;
  fmt::print("{}: {} ({:.2f} MB, {} symbols): {} chars for training, {} for validation\n", kProgram, o.data,
             static_cast<double>(corpus.bytes) / 1e6, corpus.vocab, corpus.train.size(), corpus.val.size());
  for (const auto& [kind, hidden] : kinds) {
    manual_seed(o.seed);
    models.push_back(std::make_unique<CharModel>(kind, corpus.vocab, o.embed, hidden, !o.no_fuse));
    opts.push_back(std::make_unique<optim::Adam>(models.back()->parameters(), optim::AdamOptions{.lr = o.lr}));
    schedules.push_back(std::make_unique<optim::CosineAnnealingLR>(*opts.back(), o.steps, o.lr / 10));
    fmt::print("{}: {:<4} hidden {:>4}: {:>7} recurrent parameters, {:>7} in all\n", kProgram, kind, hidden,
               models.back()->recurrent_parameters(), models.back()->num_parameters());
  }
  const std::size_t nm = models.size();

  std::vector<std::string> columns = {"step"};
  for (const auto& m : models)
    for (const char* what : {"train_bpc", "val_bpc", "tokens_per_s"}) columns.push_back(m->kind() + "_" + what);
  examples::CsvWriter metrics((out / "metrics.csv").string(), columns);

  const std::int64_t T = o.window, B = o.batch;
  const auto len = static_cast<std::int64_t>(corpus.train.size()) / B;
  const std::int64_t windows = (len - 1) / T;
  std::vector<std::array<Tensor, 2>> carry(nm);
  std::vector<double> first(nm, NAN), sum_loss(nm, 0), seconds(nm, 0), last_val(nm, NAN), last_train(nm, NAN);
  std::int64_t interval = 0;
  examples::Progress progress(
      {.total_steps = o.steps, .tokens_per_step = T * B * static_cast<std::int64_t>(nm), .plain_every = o.eval_every});
  // Only a non-finite loss counts as diverged here.
  std::vector<examples::DivergenceWatch> divergence;
  for (std::size_t i = 0; i < nm; ++i)
    divergence.emplace_back(examples::DivergenceWatch::Options{
        .program = fmt::format("{}: {}", kProgram, models[i]->kind()),
        .ceiling = INFINITY,
        .patience = 1,
        .hint = fmt::format("try a smaller --lr (now {}) or a tighter --clip (now {})", o.lr, o.clip)});
  using Clock = std::chrono::steady_clock;
  for (std::int64_t step = 1; step <= o.steps; ++step) {
    const std::int64_t k = (step - 1) % windows;
    auto [x, y] = window(corpus.train, B, len, k * T, T);
    double shown = 0;
    for (std::size_t i = 0; i < nm; ++i) {
      if (k == 0) carry[i] = {};  // each pass over the text starts from a zero state
      const auto t0 = Clock::now();
      auto [logits, next] = models[i]->forward(x, carry[i]);
      Tensor loss = cross_entropy(logits, y);
      opts[i]->zero_grad();
      loss.backward();  // BPTT through this window: the carried state came in detached
      const double l = loss.item() / std::numbers::ln2;
      // Before the update, while the parameters are still the ones that gave the loss: a non-finite loss stops
      // the run, naming the op where it went non-finite (the step run again under anomaly detection).
      divergence[i].check(step, l, [&] {
        return examples::locate_non_finite(*models[i],
                                           [&] { return cross_entropy(models[i]->forward(x, carry[i]).first, y); });
      });
      optim::clip_grad_norm_(opts[i]->params(), o.clip > 0 ? o.clip : INFINITY);
      opts[i]->step();
      schedules[i]->step();
      carry[i] = nn::detach_state(next);
      seconds[i] += std::chrono::duration<double>(Clock::now() - t0).count();
      if (std::isnan(first[i])) first[i] = l;
      sum_loss[i] += l;
      shown += l / static_cast<double>(nm);
    }
    ++interval;
    progress.update(step, shown, "bits/char, mean of the models");
    if (step % o.eval_every == 0 || step == o.steps) {
      std::vector<CsvCell> row = {static_cast<double>(step)};
      std::string line = fmt::format("step {:>5}  validation bits/char:", step);
      for (std::size_t i = 0; i < nm; ++i) {
        last_train[i] = sum_loss[i] / static_cast<double>(interval);
        last_val[i] = evaluate(*models[i], corpus.val, T);
        row.push_back(last_train[i]), row.push_back(last_val[i]);
        row.push_back(static_cast<double>(interval * T * B) / seconds[i]);
        line += fmt::format("  {} {:.3f}", models[i]->kind(), last_val[i]);
        sum_loss[i] = seconds[i] = 0;
      }
      metrics.row(row);
      interval = 0;
      progress.print_line(line);

      // (4) The comparison, redrawn at every evaluation so it can be watched while training runs.
      examples::LinePlot plot{
          .title = fmt::format("custom MGU cell vs LSTM vs GRU ({} recurrent parameters each, about)", target),
          .x_label = "step",
          .y_label = "bits per character"};
      const char* colors[] = {"#D55E00", "#0072B2", "#009E73"};
      for (std::size_t i = 0; i < nm; ++i) {
        examples::PlotSeries train{.name = models[i]->kind() + " train", .color = colors[i % 3]};
        examples::PlotSeries val{.name = models[i]->kind() + " validation", .color = colors[i % 3], .markers = true};
        const int tc = metrics.table().column(models[i]->kind() + "_train_bpc");
        for (const auto& r : metrics.table().rows) {
          train.x.push_back(*r[0]), train.y.push_back(*r[static_cast<std::size_t>(tc)]);
          val.x.push_back(*r[0]), val.y.push_back(*r[static_cast<std::size_t>(tc) + 1]);
        }
        plot.series.push_back(std::move(train));
        plot.series.push_back(std::move(val));
      }
      examples::write_line_plot((out / "compare.svg").string(), plot);
    }
  }
  progress.finish();

  fmt::print("\n{:<5} {:>7} {:>11} {:>13} {:>13} {:>12}\n", "cell", "hidden", "parameters", "train bits/ch",
             "valid bits/ch", "tokens/s");
  const auto& last_row = metrics.table().rows.back();
  bool fell = true;
  for (std::size_t i = 0; i < nm; ++i) {
    fmt::print("{:<5} {:>7} {:>11} {:>13.3f} {:>13.3f} {:>12}\n", models[i]->kind(), models[i]->hidden(),
               models[i]->num_parameters(), last_train[i], last_val[i],
               examples::format_count(last_row[3 * i + 3].value_or(0)));
    fell = fell && last_train[i] < 0.8 * first[i];
  }
  fmt::print("{}: {} steps in {}; wrote {}/metrics.csv and compare.svg\n", kProgram, o.steps,
             examples::format_duration(progress.elapsed_seconds()), o.out);
  if (!o.test.empty()) {  // --test: every model's bits/char on that text, as the last line
    const std::vector<std::int64_t>& ids = test_ids;
    std::string line;
    for (std::size_t i = 0; i < nm; ++i)
      line += fmt::format("{}{} {:.4f}", i ? ", " : "", models[i]->kind(), evaluate(*models[i], ids, T));
    fmt::print("{}: test bits/char on '{}' ({} characters): {}\n", kProgram, o.test, ids.size(), line);
  }
  // Did every model learn something: --smoke (what CI runs) fails if not, a real run warns.
  return examples::check_loss_fell(kProgram, o.smoke, fell,
                                   "got a final training loss above 0.8 x the first step's for some model, expected "
                                   "every model to learn");
}
}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main(kProgram, [&]() -> int {
    Options o;
    CLI::App app{
        "custom_cell: a new recurrent cell (a minimal gated unit) written in 15 lines, gradchecked, and "
        "trained as a character language model beside the library's LSTM and GRU of about the same size.",
        kProgram};
    app.get_formatter()->column_width(34);
    app.add_option("--test", o.test, "after training, every model's bits/char on this text (the last line)");
    app.add_option("--data", o.data, "training text (any bytes; first 90% train, last 10% validation)")
        ->capture_default_str();
    app.add_option("--out", o.out, "directory for metrics.csv and compare.svg")->capture_default_str();
    app.add_option("--embed", o.embed, "embedding size")->capture_default_str();
    app.add_option("--hidden", o.hidden, "the MGU's hidden size (LSTM and GRU get as many parameters)")
        ->capture_default_str();
    app.add_option("--window", o.window, "T: characters per truncated-BPTT window")->capture_default_str();
    app.add_option("--batch", o.batch, "B: parallel streams through the text")->capture_default_str();
    app.add_option("--steps", o.steps, "training steps (windows), the same for every model")->capture_default_str();
    app.add_option("--lr", o.lr, "Adam learning rate (cosine decay to lr/10)")->capture_default_str();
    app.add_option("--clip", o.clip, "gradient norm clipping (0: off)")->capture_default_str();
    app.add_option("--eval-every", o.eval_every, "validate, write a metrics row and redraw compare.svg every N steps")
        ->capture_default_str();
    app.add_option("--eval-chars", o.eval_chars, "validation characters used for bits/char")->capture_default_str();
    app.add_option("--seed", o.seed, "random seed")->capture_default_str();
    app.add_option("--threads", o.threads,
                   "threads for BLAS and TBB (0: all cores; 1 is fastest for these small matrices)")
        ->capture_default_str();
    app.add_flag("--no-fuse", o.no_fuse, "run the MGU op by op, not fused into one tape node per sequence (nn/fuse.hpp)");
    app.add_flag("--smoke", o.smoke, "a run of a few seconds (what CI runs); fails unless every model's loss falls");
    if (auto code = examples::parse_command_line(app, argc, argv)) return *code;
    if (o.smoke) {  // tiny defaults; flags given explicitly still win
      const examples::FlagDefaults def(app);
      def("--embed", o.embed, std::int64_t{16});
      def("--hidden", o.hidden, std::int64_t{32});
      def("--window", o.window, std::int64_t{32});
      def("--batch", o.batch, std::int64_t{16});
      def("--steps", o.steps, std::int64_t{50});
      def("--lr", o.lr, 1e-2);
      def("--eval-every", o.eval_every, std::int64_t{25});
      def("--eval-chars", o.eval_chars, std::int64_t{2000});
      def("--out", o.out, std::string("runs/custom_cell_smoke"));
    }
    check_options(o);
    return run(o);
  });
}
