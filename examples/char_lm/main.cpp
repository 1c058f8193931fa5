// char_lm: a character-level language model on five Jane Austen novels (or any text file), the README's
// quick start. Embedding -> LSTM, GRU, Elman RNN or a custom gated cell -> Linear over the byte vocabulary,
// trained with truncated backpropagation through time: B parallel streams through the training text, the
// recurrent state carried from one window of T characters to the next and detached between them. Reports
// validation bits per character, writes metrics.csv, loss.svg, samples.txt and an atomic checkpoint that
// --resume continues from bit-for-bit, and samples text from a prompt.
//
//   char_lm                                  # train with the defaults (about 2.5 minutes on 2 cores)
//   char_lm --cell gru --hidden 384          # another cell, another size
//   char_lm --data my.txt --out runs/mine    # your own text
//   char_lm --resume                         # continue the run in --out from its checkpoint
//   char_lm --sample-only --prompt "Emma " --temperature 0.7
//   char_lm --help
#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <numbers>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <unroll/unroll.hpp>

#include "../common/cli.hpp"
#include "../common/distributed.hpp"
#include "../common/csv.hpp"
#include "../common/data.hpp"
#include "../common/progress.hpp"
#include "../common/smoke.hpp"
#include "../common/svg_plot.hpp"

using namespace unroll;
using examples::UsageError;

#ifndef CHAR_LM_DEFAULT_DATA
#define CHAR_LM_DEFAULT_DATA "data/austen/austen5.txt"
#endif

namespace {
constexpr const char* kProgram = "char_lm";

// ---------------------------------------------------------------------------------------------------------
// Settings

/// What defines the model and the training stream: saved in the checkpoint, and must match on --resume.
struct ModelConfig {
  std::string cell = "lstm";
  std::int64_t embed = 48, hidden = 256, layers = 1;
  double dropout = 0.0;
  // AWD-LSTM's regularisers (Merity et al. 2017; nn/regularize.hpp): DropConnect on weight_hh, one dropout mask
  // per sequence on the embeddings and the recurrent output, whole words dropped from the embedding, zoneout on
  // the state, and activation (AR) and temporal activation (TAR) regularisation of the recurrent output.
  double weight_drop = 0.0, locked_dropout = 0.0, embed_dropout = 0.0, zoneout = 0.0, ar = 0.0, tar = 0.0;
  std::int64_t window = 64, batch = 64;
  double lr = 1e-2, clip = 1.0;
  std::int64_t schedule_steps = 0;  ///< the cosine schedule's length (the --steps of the first run)
  std::uint64_t seed = 1;
  /// Batch shards run at the same time (autograd::sharded_backward); 0: one per thread, fixed when training
  /// starts. Part of the stream because it sets the float summation order and the dropout streams.
  std::int64_t shards = 0;
};

struct Options {
  ModelConfig model;
  std::string data = CHAR_LM_DEFAULT_DATA;
  std::string out = "runs/char_lm";
  std::string checkpoint;  ///< empty: <out>/checkpoint.safetensors
  std::int64_t steps = 1500;
  std::int64_t eval_every = 250, eval_chars = 60000, checkpoint_every = 250, log_every = 50;
  std::int64_t stop_at = 0;  ///< 0: run to --steps
  bool resume = false, sample_only = false, smoke = false, count_params = false;
  std::string test;        ///< a text to report bits/char on (after training, or from the checkpoint with eval_only)
  bool eval_only = false;  ///< no training: the checkpoint's bits/char on --test
  bool no_fuse = false;  ///< --cell custom: run the cell op by op instead of fused
  bool diagnose = false;  ///< after training: per-step gradient norms and gate saturation (nn/diagnostics.hpp)
  std::string prompt;
  double temperature = 0.8;
  std::int64_t sample_chars = 600;
  int threads = 0;
  bool distributed = false;  ///< join an MPI job (automatic when started by mpirun with several processes)
};

// The fields a --resume takes from the checkpoint (flag name, accessor as text).
struct Setting {
  const char* flag;
  std::string (*get)(const ModelConfig&);
  void (*set)(ModelConfig&, const std::string&);
};

std::int64_t parse_int(const std::string& s) {
  std::int64_t v = 0;
  const auto [end, err] = std::from_chars(s.data(), s.data() + s.size(), v);
  UNROLL_CHECK(err == std::errc() && end == s.data() + s.size(), ValueError, "parse_int: not an integer; got '{}'", s);
  return v;
}
double parse_double(const std::string& s) {
  double v = 0;
  const auto [end, err] = std::from_chars(s.data(), s.data() + s.size(), v);
  UNROLL_CHECK(err == std::errc() && end == s.data() + s.size(), ValueError, "parse_double: not a number; got '{}'", s);
  return v;
}

// Doubles are written in fmt's shortest round-trip form, so a resumed run reads back the same bits.
const Setting kSettings[] = {
    {"--cell", [](const ModelConfig& c) { return c.cell; }, [](ModelConfig& c, const std::string& v) { c.cell = v; }},
    {"--embed", [](const ModelConfig& c) { return fmt::format("{}", c.embed); },
     [](ModelConfig& c, const std::string& v) { c.embed = parse_int(v); }},
    {"--hidden", [](const ModelConfig& c) { return fmt::format("{}", c.hidden); },
     [](ModelConfig& c, const std::string& v) { c.hidden = parse_int(v); }},
    {"--layers", [](const ModelConfig& c) { return fmt::format("{}", c.layers); },
     [](ModelConfig& c, const std::string& v) { c.layers = parse_int(v); }},
    {"--dropout", [](const ModelConfig& c) { return fmt::format("{}", c.dropout); },
     [](ModelConfig& c, const std::string& v) { c.dropout = parse_double(v); }},
    {"--weight-drop", [](const ModelConfig& c) { return fmt::format("{}", c.weight_drop); },
     [](ModelConfig& c, const std::string& v) { c.weight_drop = parse_double(v); }},
    {"--locked-dropout", [](const ModelConfig& c) { return fmt::format("{}", c.locked_dropout); },
     [](ModelConfig& c, const std::string& v) { c.locked_dropout = parse_double(v); }},
    {"--embed-dropout", [](const ModelConfig& c) { return fmt::format("{}", c.embed_dropout); },
     [](ModelConfig& c, const std::string& v) { c.embed_dropout = parse_double(v); }},
    {"--zoneout", [](const ModelConfig& c) { return fmt::format("{}", c.zoneout); },
     [](ModelConfig& c, const std::string& v) { c.zoneout = parse_double(v); }},
    {"--ar", [](const ModelConfig& c) { return fmt::format("{}", c.ar); },
     [](ModelConfig& c, const std::string& v) { c.ar = parse_double(v); }},
    {"--tar", [](const ModelConfig& c) { return fmt::format("{}", c.tar); },
     [](ModelConfig& c, const std::string& v) { c.tar = parse_double(v); }},
    {"--window", [](const ModelConfig& c) { return fmt::format("{}", c.window); },
     [](ModelConfig& c, const std::string& v) { c.window = parse_int(v); }},
    {"--batch", [](const ModelConfig& c) { return fmt::format("{}", c.batch); },
     [](ModelConfig& c, const std::string& v) { c.batch = parse_int(v); }},
    {"--lr", [](const ModelConfig& c) { return fmt::format("{}", c.lr); },
     [](ModelConfig& c, const std::string& v) { c.lr = parse_double(v); }},
    {"--clip", [](const ModelConfig& c) { return fmt::format("{}", c.clip); },
     [](ModelConfig& c, const std::string& v) { c.clip = parse_double(v); }},
    {"--seed", [](const ModelConfig& c) { return fmt::format("{}", c.seed); },
     [](ModelConfig& c, const std::string& v) { c.seed = static_cast<std::uint64_t>(parse_int(v)); }},
    {"--shards", [](const ModelConfig& c) { return fmt::format("{}", c.shards); },
     [](ModelConfig& c, const std::string& v) { c.shards = parse_int(v); }},
    {"schedule_steps", [](const ModelConfig& c) { return fmt::format("{}", c.schedule_steps); },
     [](ModelConfig& c, const std::string& v) { c.schedule_steps = parse_int(v); }},
};

std::string meta_key(const char* flag) {
  std::string k = flag;
  k.erase(0, k.find_first_not_of('-'));
  return "char_lm." + k;
}

// ---------------------------------------------------------------------------------------------------------
// Vocabulary: the distinct bytes of the data file. Bytes, not code points, so any file is valid input (a
// multi-byte UTF-8 character is a few steps of the model). Built from the whole file, not only the training
// part, so that every validation byte has an id.

struct Vocab {
  std::vector<unsigned char> symbols;  ///< id -> byte, ascending
  std::array<int, 256> id{};           ///< byte -> id, -1 if absent

  static Vocab of(std::string_view text) {
    std::array<bool, 256> seen{};
    for (const char c : text) seen[static_cast<unsigned char>(c)] = true;
    std::vector<unsigned char> s;
    for (int b = 0; b < 256; ++b)
      if (seen[static_cast<std::size_t>(b)]) s.push_back(static_cast<unsigned char>(b));
    return from(std::move(s));
  }
  static Vocab from(std::vector<unsigned char> symbols) {
    Vocab v;
    v.symbols = std::move(symbols);
    v.id.fill(-1);
    for (std::size_t i = 0; i < v.symbols.size(); ++i) v.id[v.symbols[i]] = static_cast<int>(i);
    return v;
  }
  std::int64_t size() const { return static_cast<std::int64_t>(symbols.size()); }
  std::string to_text() const {  // "10,32,33,...": metadata must be UTF-8, bytes need not be
    std::string s;
    for (std::size_t i = 0; i < symbols.size(); ++i) s += fmt::format("{}{}", i ? "," : "", symbols[i]);
    return s;
  }
  static Vocab from_text(const std::string& text) {
    std::vector<unsigned char> s;
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t end = text.find(',', pos);
      if (end == std::string::npos) end = text.size();
      const std::int64_t b = parse_int(text.substr(pos, end - pos));
      UNROLL_CHECK(b >= 0 && b < 256 && (s.empty() || b > s.back()), ValueError,
                   "Vocab: malformed vocabulary; got byte {}, expected ascending values in 0..255", b);
      s.push_back(static_cast<unsigned char>(b));
      pos = end + 1;
    }
    UNROLL_CHECK(!s.empty(), ValueError, "Vocab: empty vocabulary; got '{}', expected byte values", text);
    return from(std::move(s));
  }
  /// Text -> ids; UsageError naming the first byte the vocabulary lacks (`what` names the text).
  std::vector<std::uint8_t> encode(std::string_view text, std::string_view what) const {
    std::vector<std::uint8_t> out(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
      const int k = id[static_cast<unsigned char>(text[i])];
      UNROLL_CHECK(k >= 0, examples::UsageError,
                   "{}: {} has a character the model never saw; got '{}' at offset {}, expected only characters of "
                   "the training data",
                   kProgram, what, examples::printable(text.substr(i, 1)), i);
      out[i] = static_cast<std::uint8_t>(k);
    }
    return out;
  }
};

// ---------------------------------------------------------------------------------------------------------
// The model

// The custom cell (--cell custom): a minimal gated unit (Zhou et al., 2016), one gate that both forgets and
// writes. A cell is a Module whose forward is ordinary ops; run_cell loops it over time and the tape gives BPTT.
struct MGUCell : nn::Module {
  nn::Linear gate, cand;
  MGUCell(std::int64_t in, std::int64_t hidden) : gate(in + hidden, hidden), cand(in + hidden, hidden) {
    register_module("gate", gate);
    register_module("cand", cand);
  }
  // f = sigmoid([x, h] W_f^T + b_f);  h' = h + f * (tanh([x, f * h] W_c^T + b_c) - h)
  Tensor operator()(const Tensor& x, const Tensor& h) const {
    const Tensor f = sigmoid(gate(cat({x, h}, 1)));
    nn::record_gate("f", f);  // --diagnose (unfused): its saturation per step; nothing otherwise
    return h + f * (tanh(cand(cat({x, f * h}, 1))) - h);
  }
};

// A stack of custom cells, registered as "0", "1", ... like PyTorch's ModuleList. Each is an nn::Fused<MGUCell>:
// the same module (parameters, checkpoint) whose steps run as one tape node each (--no-fuse: op by op).
struct MGUStack : nn::Module {
  std::vector<std::unique_ptr<nn::Fused<MGUCell>>> cells;
  MGUStack(std::int64_t in, std::int64_t hidden, std::int64_t layers) {
    for (std::int64_t l = 0; l < layers; ++l) {
      cells.push_back(std::make_unique<nn::Fused<MGUCell>>(l == 0 ? in : hidden, hidden));
      register_module(fmt::format("{}", l), *cells.back());
    }
  }
};

// A stack of scan cells (--cell mingru | minlstm: nn::MinGRU / nn::MinLSTM, recurrences linear in the state run as
// one scan per layer and window), registered as "0", "1", ... like PyTorch's ModuleList.
template <class Cell>
struct ScanStack : nn::Module {
  std::vector<std::unique_ptr<Cell>> layers;
  ScanStack(std::int64_t in, std::int64_t hidden, std::int64_t n) {
    for (std::int64_t l = 0; l < n; ++l) {
      layers.push_back(std::make_unique<Cell>(l == 0 ? in : hidden, hidden));
      register_module(fmt::format("{}", l), *layers.back());
    }
  }
  // x [T, B, E], h [L, B, H] or undefined -> every output of the last layer [T, B, H], each layer's last state.
  std::pair<Tensor, Tensor> forward(Tensor x, const Tensor& h, double dropout_p, bool training) const {
    std::vector<Tensor> last;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      if (l > 0) x = dropout(x, dropout_p, training);  // between layers, as the library's layers
      x = (*layers[l])(x, h.defined() ? h[static_cast<std::int64_t>(l)] : Tensor());
      last.push_back(x[x.size(0) - 1]);
    }
    return {x, stack(last, 0)};
  }
};

// --cell rglru: Griffin's recurrent blocks (nn::RGLRUBlock: gated GELU branch, temporal conv, RG-LRU) in pre-norm
// residual layers after a projection of the embedding to --hidden: x = proj(e); x = x + block_l(norm_l(x)).
struct GriffinStack : nn::Module {
  static constexpr std::int64_t kConvWidth = 4;
  nn::Linear proj;
  std::vector<std::unique_ptr<nn::LayerNorm>> norms;
  std::vector<std::unique_ptr<nn::RGLRUBlock>> blocks;
  GriffinStack(std::int64_t in, std::int64_t hidden, std::int64_t n) : proj(in, hidden) {
    register_module("proj", proj);
    for (std::int64_t l = 0; l < n; ++l) {
      norms.push_back(std::make_unique<nn::LayerNorm>(std::vector<std::int64_t>{hidden}));
      blocks.push_back(std::make_unique<nn::RGLRUBlock>(hidden, hidden, 1, kConvWidth));
      register_module(fmt::format("norm{}", l), *norms.back());
      register_module(fmt::format("block{}", l), *blocks.back());
    }
  }
  // x [T, B, E]; h [L, B, H] and conv [L (K-1), B, H] (undefined: zeros) -> outputs [T, B, H], the next h and conv.
  std::tuple<Tensor, Tensor, Tensor> forward(const Tensor& x, const Tensor& h, const Tensor& conv) const {
    Tensor out = proj(x);
    std::vector<Tensor> hs, convs;
    for (std::size_t l = 0; l < blocks.size(); ++l) {
      const auto li = static_cast<std::int64_t>(l);
      const nn::RGLRUBlock::State in{
          h.defined() ? h[li] : Tensor(),
          conv.defined() ? narrow(conv, 0, li * (kConvWidth - 1), kConvWidth - 1) : Tensor()};
      auto [y, next] = (*blocks[l])((*norms[l])(out), in);
      out = out + y;
      hs.push_back(next.h);
      convs.push_back(next.conv);
    }
    return {out, stack(hs, 0), cat(convs, 0)};
  }
};

template <class Cell, class State>
struct XlstmStack;
using SLSTMStack = XlstmStack<nn::SLSTM, nn::SLSTMState>;
using MLSTMStack = XlstmStack<nn::MLSTM, nn::MLSTMState>;

/// The names of an xLSTM state's parts in the carry, in the order of its tensors(): (h, c, n, m) for sLSTM and
/// (h, C, n, m) for mLSTM, whose "c" is the matrix memory.
constexpr std::array<const char*, 4> kXlstmParts = {"h", "c", "n", "m"};

// --cell slstm | mlstm: xLSTM's cells (nn::SLSTM; nn::MLSTM in its parallel form), kHeads heads each, stacked as
// ScanStack with dropout between layers, registered as "0", "1", ...
template <class Cell, class State>
struct XlstmStack : nn::Module {
  static constexpr std::int64_t kHeads = 4;
  std::vector<std::unique_ptr<Cell>> layers;
  XlstmStack(std::int64_t in, std::int64_t hidden, std::int64_t n) {
    for (std::int64_t l = 0; l < n; ++l) {
      layers.push_back(std::make_unique<Cell>(l == 0 ? in : hidden, hidden, kHeads));
      register_module(fmt::format("{}", l), *layers.back());
    }
  }
  // x [T, B, E]; parts[i] = every layer's state part kXlstmParts[i] stacked [L, B, ...] (undefined: zeros) ->
  // the last layer's outputs [T, B, H] and the stacked next parts.
  std::pair<Tensor, std::array<Tensor, 4>> forward(Tensor x, const std::array<Tensor, 4>& parts, double dropout_p,
                                                   bool training) const {
    std::array<std::vector<Tensor>, 4> next;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      if (l > 0) x = dropout(x, dropout_p, training);  // between layers, as the library's layers
      State in;
      std::size_t i = 0;
      std::apply(
          [&](auto&... t) { ((t = parts[i].defined() ? parts[i][static_cast<std::int64_t>(l)] : Tensor(), ++i), ...); },
          in.tensors());
      auto r = (*layers[l])(x, in);
      x = r.output;
      i = 0;
      std::apply([&](const auto&... t) { (next[i++].push_back(t), ...); }, std::as_const(r.state).tensors());
    }
    std::array<Tensor, 4> out;
    for (std::size_t i = 0; i < 4; ++i) out[i] = stack(next[i], 0);
    return {x, out};
  }
};

/// The recurrent state carried between windows, by name: "h" [L, B, H] for every cell, "c" for the LSTM, "conv"
/// for rglru, kXlstmParts for slstm and mlstm. Every part has the streams (the batch) in dim 1; an absent part is
/// zeros.
using Carry = std::map<std::string, Tensor>;

/// A part of a carry, undefined (zeros) if absent.
Tensor part(const Carry& c, const std::string& name) {
  const auto it = c.find(name);
  return it == c.end() ? Tensor() : it->second;
}

/// The state for the next window, detached: truncated BPTT, the next backward stops here.
Carry carry_forward(const Carry& next) {
  Carry out;
  for (const auto& [name, t] : next) out[name] = t.detach();
  return out;
}

/// Streams [begin, begin + size) of a carry (dim 1 of every part).
Carry carry_rows(const Carry& c, std::int64_t begin, std::int64_t size) {
  Carry out;
  for (const auto& [name, t] : c) out[name] = narrow(t, 1, begin, size);
  return out;
}

/// The shards' carries, in batch order, joined back into one along the stream dimension (empty slots, between
/// one shard's first stream and the next's, are skipped).
Carry join_carries(const std::vector<Carry>& shards) {
  Carry out;
  for (const auto& [name, first] : shards.front()) {
    std::vector<Tensor> parts;
    for (const Carry& s : shards)
      if (!s.empty()) parts.push_back(s.at(name));
    out[name] = cat(parts, 1);
  }
  return out;
}

/// Across ranks: the carry of streams [row0, row0 + rows) on this rank -> every stream's, on every rank (each
/// rank's rows put into zeros of the whole batch's width, summed over the ranks: exact, x + 0 = x).
Carry whole_carry(const examples::Job& job, const Carry& mine, std::int64_t row0, std::int64_t batch) {
  std::vector<std::string> names;
  std::vector<Tensor> whole;
  for (const auto& [name, t] : mine) {
    Shape before = t.shape(), after = t.shape();
    before[1] = row0;
    after[1] = batch - row0 - t.size(1);
    names.push_back(name);
    whole.push_back(cat({zeros(before, t.dtype()), t, zeros(after, t.dtype())}, 1));
  }
  job.sum_over_ranks(whole);
  Carry out;
  for (std::size_t i = 0; i < names.size(); ++i) out[names[i]] = whole[i];
  return out;
}

/// idx [T, B] -> logits [T*B, V], the next carry.
class CharModel : public nn::Module {
 public:
  CharModel(const ModelConfig& cfg, std::int64_t vocab) : cfg_(cfg), embed(vocab, cfg.embed), head(cfg.hidden, vocab) {
    register_module("embed", embed);
    const nn::RecurrentOptions ro{.input_size = cfg.embed,
                                  .hidden_size = cfg.hidden,
                                  .num_layers = cfg.layers,
                                  .dropout = cfg.dropout,
                                  .weight_drop = cfg.weight_drop,
                                  .zoneout_h = cfg.zoneout,
                                  .zoneout_c = cfg.cell == "lstm" ? cfg.zoneout : 0.0};
    if (cfg.cell == "lstm")
      register_module("rnn", *(lstm = std::make_unique<nn::LSTM>(ro)));
    else if (cfg.cell == "gru")
      register_module("rnn", *(gru = std::make_unique<nn::GRU>(ro)));
    else if (cfg.cell == "rnn")
      register_module("rnn", *(rnn = std::make_unique<nn::RNN>(ro)));
    else if (cfg.cell == "mingru")
      register_module("rnn", *(mingru = std::make_unique<ScanStack<nn::MinGRU>>(cfg.embed, cfg.hidden, cfg.layers)));
    else if (cfg.cell == "minlstm")
      register_module("rnn", *(minlstm = std::make_unique<ScanStack<nn::MinLSTM>>(cfg.embed, cfg.hidden, cfg.layers)));
    else if (cfg.cell == "rglru")
      register_module("rnn", *(rglru = std::make_unique<GriffinStack>(cfg.embed, cfg.hidden, cfg.layers)));
    else if (cfg.cell == "slstm")
      register_module("rnn", *(slstm = std::make_unique<SLSTMStack>(cfg.embed, cfg.hidden, cfg.layers)));
    else if (cfg.cell == "mlstm")
      register_module("rnn", *(mlstm = std::make_unique<MLSTMStack>(cfg.embed, cfg.hidden, cfg.layers)));
    else
      register_module("rnn", *(custom = std::make_unique<MGUStack>(cfg.embed, cfg.hidden, cfg.layers)));
    register_module("head", head);
  }

  /// The shape of each part of the carry for B streams (what forward returns and a checkpoint must hold).
  std::map<std::string, Shape> carry_shapes(std::int64_t B) const {
    std::map<std::string, Shape> shapes{{"h", Shape({cfg_.layers, B, cfg_.hidden})}};
    if (lstm) shapes["c"] = Shape({cfg_.layers, B, cfg_.hidden});
    if (rglru) shapes["conv"] = Shape({cfg_.layers * (GriffinStack::kConvWidth - 1), B, cfg_.hidden});
    if (slstm)
      for (const char* name : {"c", "n", "m"}) shapes[name] = Shape({cfg_.layers, B, cfg_.hidden});
    if (mlstm) {
      const std::int64_t heads = MLSTMStack::kHeads, D = cfg_.hidden / heads;
      shapes["c"] = Shape({cfg_.layers, B, heads, D, D});
      shapes["n"] = Shape({cfg_.layers, B, heads, D});
      shapes["m"] = Shape({cfg_.layers, B, heads});
    }
    return shapes;
  }

  /// With `rnn_out`, also the last recurrent layer's output [T, B, H]: `raw`, and `dropped` after the output
  /// dropout (AWD-LSTM regularises the dropped one with AR, the raw one with TAR).
  struct RnnOut {
    Tensor raw, dropped;
  };
  std::pair<Tensor, Carry> forward(const Tensor& idx, const Carry& carry, RnnOut* rnn_out = nullptr) const {
    const std::int64_t T = idx.size(0), B = idx.size(1);
    Tensor x = cfg_.embed_dropout > 0 ? nn::embedding_dropout(embed, idx, cfg_.embed_dropout, is_training())
                                      : embed(idx);  // [T, B, E]
    if (cfg_.locked_dropout > 0) x = nn::locked_dropout(x, cfg_.locked_dropout, is_training());
    Tensor out;
    Carry next;
    const Tensor h = part(carry, "h");
    if (lstm) {
      auto r = (*lstm)(x, h, part(carry, "c"));
      out = r.output, next = {{"h", r.h_n}, {"c", r.c_n}};
    } else if (mingru || minlstm) {
      auto [o, h_n] = mingru ? mingru->forward(x, h, cfg_.dropout, is_training())
                             : minlstm->forward(x, h, cfg_.dropout, is_training());
      out = o, next = {{"h", h_n}};
    } else if (rglru) {
      auto [o, h_n, conv_n] = rglru->forward(x, h, part(carry, "conv"));
      out = o, next = {{"h", h_n}, {"conv", conv_n}};
    } else if (slstm || mlstm) {
      std::array<Tensor, 4> parts;
      for (std::size_t i = 0; i < parts.size(); ++i) parts[i] = part(carry, kXlstmParts[i]);
      auto [o, next_parts] = slstm ? slstm->forward(x, parts, cfg_.dropout, is_training())
                                   : mlstm->forward(x, parts, cfg_.dropout, is_training());
      out = o;
      for (std::size_t i = 0; i < parts.size(); ++i) next[kXlstmParts[i]] = next_parts[i];
    } else if (gru || rnn) {
      auto r = gru ? (*gru)(x, h) : (*rnn)(x, h);
      out = r.output, next = {{"h", r.h_n}};
    } else {
      out = x;
      std::vector<Tensor> hs;
      for (std::size_t l = 0; l < custom->cells.size(); ++l) {
        if (l > 0) out = dropout(out, cfg_.dropout, is_training());  // between layers, as the library's layers
        const Tensor h0 = h.defined() ? h[static_cast<std::int64_t>(l)] : zeros({B, cfg_.hidden});
        auto r = nn::run_cell(out, h0, *custom->cells[l]);
        out = r.output;
        hs.push_back(r.state);
      }
      next = {{"h", stack(hs, 0)}};
    }
    if (rnn_out) rnn_out->raw = out;
    out = dropout(out, cfg_.dropout, is_training());
    if (cfg_.locked_dropout > 0) out = nn::locked_dropout(out, cfg_.locked_dropout, is_training());
    if (rnn_out) rnn_out->dropped = out;
    return {head(reshape(out, {T * B, cfg_.hidden})), next};
  }

 private:
  ModelConfig cfg_;

 public:
  nn::Embedding embed;
  std::unique_ptr<nn::LSTM> lstm;
  std::unique_ptr<nn::GRU> gru;
  std::unique_ptr<nn::RNN> rnn;
  std::unique_ptr<MGUStack> custom;
  std::unique_ptr<ScanStack<nn::MinGRU>> mingru;
  std::unique_ptr<ScanStack<nn::MinLSTM>> minlstm;
  std::unique_ptr<GriffinStack> rglru;
  std::unique_ptr<SLSTMStack> slstm;
  std::unique_ptr<MLSTMStack> mlstm;
  nn::Linear head;
};

// ---------------------------------------------------------------------------------------------------------
// Data: B contiguous streams through the training ids; window k of an epoch is positions [kT, kT + T) of
// every stream (targets one further). The carry flows from window k to k + 1 of the same stream.

struct Streams {
  const std::vector<std::uint8_t>* ids;
  std::int64_t B, T, length;  ///< `length` ids per stream
  std::int64_t windows() const { return (length - 1) / T; }
  /// Window k -> (inputs [T, B], targets [T*B]).
  std::pair<Tensor, Tensor> window(std::int64_t k, std::int64_t len = 0) const {
    const std::int64_t n = len > 0 ? len : T;
    std::vector<std::int64_t> in(static_cast<std::size_t>(n * B)), tgt(in.size());
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t b = 0; b < B; ++b) {
        const auto at = static_cast<std::size_t>(b * length + k * T + t);
        in[static_cast<std::size_t>(t * B + b)] = (*ids)[at];
        tgt[static_cast<std::size_t>(t * B + b)] = (*ids)[at + 1];
      }
    return {index_tensor(in, {n, B}), index_tensor(tgt, {n * B})};
  }
};

/// Validation bits per character: mean cross-entropy / ln 2 over `ids`, read as up to B streams with the
/// state carried across windows of T (the last window of each stream may be shorter). Eval mode, no tape.
double evaluate(CharModel& model, const std::vector<std::uint8_t>& ids, std::int64_t T, std::int64_t B) {
  NoGradGuard no_grad;
  model.eval();
  const auto n = static_cast<std::int64_t>(ids.size());
  const std::int64_t streams = std::max<std::int64_t>(1, std::min(B, n / (T + 1)));
  const Streams s{&ids, streams, T, n / streams};
  Carry carry;
  double total = 0;
  std::int64_t count = 0;
  for (std::int64_t k = 0; k * T < s.length - 1; ++k) {
    const std::int64_t len = std::min(T, s.length - 1 - k * T);
    auto [x, y] = s.window(k, len);
    auto [logits, next] = model.forward(x, carry);
    total += cross_entropy(logits, y, Reduction::sum).item();
    count += len * streams;
    carry = carry_forward(next);
  }
  model.train();
  return total / static_cast<double>(count) / std::numbers::ln2;
}

/// A training step run again under anomaly detection (nn forward and backward of the whole batch, one shard):
/// the message of the first NonFiniteError (the op whose output or gradient went non-finite, with the time step
/// inside a layer), or "" if the step stays finite this time.
std::string first_non_finite(CharModel& model, const Tensor& x, const Tensor& y, const Carry& carry) {
  return examples::locate_non_finite(model, [&] { return cross_entropy(model.forward(x, carry).first, y); });
}

/// --diagnose: one window of `ids` (T steps, up to B streams, from a zero state) through the model and back,
/// recorded step by step (nn/diagnostics.hpp). Writes diagnose_grad_norm.csv and .svg (||dL/dh_t|| and
/// ||dL/dc_t|| per step, per layer) and diagnose_gates.csv (per gate: mean activation and fraction saturated,
/// averaged over the steps, and the worst step's), and prints the gate table. Dropout off; the parameters'
/// gradients are dropped after.
void diagnose(CharModel& model, const std::vector<std::uint8_t>& ids, std::int64_t T, std::int64_t B,
              const std::filesystem::path& out, const std::string& cell) {
  const auto n = static_cast<std::int64_t>(ids.size());
  const std::int64_t streams = std::max<std::int64_t>(1, std::min(B, n / (T + 1)));
  const Streams s{&ids, streams, T, n / streams};
  auto [x, y] = s.window(0, std::min(T, s.length - 1));
  nn::StepRecorder rec;
  model.eval();
  {
    nn::RecordSteps on(rec);
    auto [logits, next] = model.forward(x, Carry{});
    cross_entropy(logits, y).backward();
  }
  model.zero_grad();
  model.train();
  const std::vector<std::string> states = rec.state_keys(), gates = rec.gate_keys();
  if (states.empty()) {
    fmt::print("{}: --diagnose: the {} cell records no per-step state (its recurrence is one scan node)\n", kProgram,
               cell);
    return;
  }
  const std::int64_t steps = static_cast<std::int64_t>(rec.grad_norm(states[0]).size());
  examples::CsvWriter grads((out / "diagnose_grad_norm.csv").string(), [&] {
    std::vector<std::string> h{"t"};
    h.insert(h.end(), states.begin(), states.end());
    return h;
  }());
  examples::LinePlot plot{.title = fmt::format("char_lm ({}): gradient norm per step, one window of validation text",
                                               cell),
                          .x_label = "time step t",
                          .y_label = "||dL/d state_t||",
                          .log_y = true};
  for (const std::string& k : states) plot.series.push_back({.name = k});
  for (std::int64_t t = 0; t < steps; ++t) {
    std::vector<std::optional<double>> row{static_cast<double>(t)};
    for (std::size_t i = 0; i < states.size(); ++i) {
      const double g = rec.grad_norm(states[i])[static_cast<std::size_t>(t)];
      row.push_back(g);
      plot.series[i].x.push_back(static_cast<double>(t));
      plot.series[i].y.push_back(g);
    }
    grads.row(row);
  }
  examples::write_line_plot((out / "diagnose_grad_norm.svg").string(), plot);
  std::string table = "gate,mean_activation,saturated,saturated_worst_step,worst_step\n";  // names: not CsvWriter's
  fmt::print("{}: --diagnose, one window of {} steps: gradient norm at the first / last step", kProgram, steps);
  for (const std::string& k : states)
    fmt::print("; {} {:.3g} / {:.3g}", k, rec.grad_norm(k).front(), rec.grad_norm(k).back());
  fmt::print("\n{:<14} {:>16} {:>12} {:>22}\n", "gate", "mean activation", "saturated", "worst step (saturated)");
  for (const std::string& k : gates) {
    const nn::GateStats& g = rec.gate(k);
    double mean = 0, sat = 0;
    std::size_t worst = 0;
    for (std::size_t t = 0; t < g.mean.size(); ++t) {
      mean += g.mean[t] / static_cast<double>(g.mean.size());
      sat += g.saturated[t] / static_cast<double>(g.mean.size());
      if (g.saturated[t] > g.saturated[worst]) worst = t;
    }
    table += fmt::format("{},{},{},{},{}\n", k, mean, sat, g.saturated[worst], worst);
    fmt::print("{:<14} {:>16.3f} {:>11.1f}% {:>14} ({:.1f}%)\n", k, mean, 100 * sat, worst, 100 * g.saturated[worst]);
  }
  if (gates.empty()) fmt::print("(no gates reported: a fused custom cell reports none; add --no-fuse)\n");
  examples::write_file_atomic((out / "diagnose_gates.csv").string(), table, kProgram);
  fmt::print("{}: wrote {}/diagnose_grad_norm.csv, diagnose_grad_norm.svg, diagnose_gates.csv\n", kProgram,
             out.string());
}

/// `n` characters after `prompt`, each drawn from softmax(logits / temperature) (temperature 0: the most
/// likely one). Uses its own generator, so sampling never changes the training stream.
std::string sample(CharModel& model, const Vocab& vocab, const std::string& prompt, std::int64_t n, double temperature,
                   Generator& gen) {
  NoGradGuard no_grad;
  model.eval();
  std::vector<std::uint8_t> ids = vocab.encode(prompt, "--prompt");
  if (ids.empty()) ids.push_back(static_cast<std::uint8_t>(std::max(vocab.id['\n'], 0)));  // start of a line
  std::vector<std::int64_t> prompt_ids(ids.begin(), ids.end());
  auto [logits, next] = model.forward(index_tensor(prompt_ids, {static_cast<std::int64_t>(ids.size()), 1}), Carry{});
  Carry carry = carry_forward(next);
  std::string out;
  const std::int64_t V = vocab.size();
  for (std::int64_t i = 0; i < n; ++i) {
    const Tensor last = logits[logits.size(0) - 1];  // [V]
    std::int64_t pick = 0;
    if (temperature <= 0) {
      pick = static_cast<std::int64_t>(argmax(last, 0).item());
    } else {
      const std::vector<double> p = softmax(last / temperature, 0).to_vector();
      double u = gen.uniform(), acc = 0;
      pick = V - 1;  // if rounding leaves u above the total
      for (std::int64_t k = 0; k < V; ++k)
        if ((acc += p[static_cast<std::size_t>(k)]) > u) {
          pick = k;
          break;
        }
    }
    out += static_cast<char>(vocab.symbols[static_cast<std::size_t>(pick)]);
    const std::vector<std::int64_t> one = {pick};
    std::tie(logits, next) = model.forward(index_tensor(one, {1, 1}), carry);
    carry = carry_forward(next);
  }
  model.train();
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Checkpoints: the library's Checkpoint (model, optimizer, schedule, step, RNG), the carried state in its
// extra_tensors ("carry_h", "carry_c", "carry_conv": "carry_" + each part's name; absent = zeros), and this program's
// settings, vocabulary and data fingerprint as metadata strings.

// The carried state `name` from a checkpoint: undefined if absent (zeros), else it must be float32 `shape`.
Tensor carried_state(const Checkpoint& ck, const std::string& name, const Shape& shape, const std::string& path) {
  // Checkpoints of earlier versions kept it as hex text in the metadata: resuming from one with a zero state
  // would not be the exact resume it promises.
  UNROLL_CHECK(!ck.extra.contains("char_lm." + name), examples::UsageError,
               "{}: checkpoint '{}' is from an earlier char_lm; got its carried state as metadata 'char_lm.{}', "
               "expected the tensor 'extra.{}' (train again to resume exactly)",
               kProgram, path, name, name);
  const Tensor* t = ck.extra_tensors.find(name);
  if (t == nullptr) return {};
  UNROLL_CHECK(t->dtype() == Dtype::float32 && t->shape() == shape, examples::UsageError,
               "{}: checkpoint '{}' has a carried state '{}' of the wrong shape or dtype; got {} {}, expected "
               "float32 {}",
               kProgram, path, name, t->dtype(), t->shape(), shape);
  return copy_of(*t);
}

const std::string& extra_at(const Checkpoint& ck, const std::string& key, const std::string& path) {
  const auto it = ck.extra.find(key);
  UNROLL_CHECK(it != ck.extra.end(), examples::UsageError,
               "{}: not a char_lm checkpoint; got '{}' without '{}' metadata, expected a checkpoint written by char_lm",
               kProgram, path, key);
  return it->second;
}

// ---------------------------------------------------------------------------------------------------------
// Command line

std::string default_checkpoint(const Options& o) {
  return o.checkpoint.empty() ? (std::filesystem::path(o.out) / "checkpoint.safetensors").string() : o.checkpoint;
}

void check_options(const Options& o) {
  using examples::check_flag_range;
  const ModelConfig& m = o.model;
  static const std::vector<std::string> kCells = {"lstm",    "gru",   "rnn",   "custom", "mingru",
                                                  "minlstm", "rglru", "slstm", "mlstm"};
  UNROLL_CHECK(std::ranges::find(kCells, m.cell) != kCells.end(), examples::UsageError,
               "{}: unknown --cell; got '{}', expected one of {}", kProgram, m.cell, fmt::join(kCells, ", "));
  UNROLL_CHECK((m.cell != "slstm" && m.cell != "mlstm") || m.hidden % SLSTMStack::kHeads == 0, examples::UsageError,
               "{}: --hidden must be a multiple of {} for --cell {} ({} heads); got {}", kProgram, SLSTMStack::kHeads,
               m.cell, SLSTMStack::kHeads, m.hidden);
  check_flag_range<std::int64_t>(kProgram, "--embed", m.embed, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--hidden", m.hidden, 1, 8192);
  check_flag_range<std::int64_t>(kProgram, "--layers", m.layers, 1, 16);
  check_flag_range(kProgram, "--dropout", m.dropout, 0.0, 0.95);
  for (auto [flag, p] : {std::pair{"--weight-drop", m.weight_drop}, std::pair{"--locked-dropout", m.locked_dropout},
                         std::pair{"--embed-dropout", m.embed_dropout}, std::pair{"--zoneout", m.zoneout}})
    check_flag_range(kProgram, flag, p, 0.0, 0.95);
  check_flag_range(kProgram, "--ar", m.ar, 0.0, 100.0);
  check_flag_range(kProgram, "--tar", m.tar, 0.0, 100.0);
  UNROLL_CHECK((m.weight_drop == 0 && m.zoneout == 0) || m.cell == "lstm" || m.cell == "gru" || m.cell == "rnn",
               examples::UsageError,
               "{}: --weight-drop and --zoneout are for the built-in layers; got --cell {}, expected lstm, gru or rnn",
               kProgram, m.cell);
  check_flag_range<std::int64_t>(kProgram, "--window", m.window, 1, 100000);
  check_flag_range<std::int64_t>(kProgram, "--batch", m.batch, 1, 100000);
  check_flag_range(kProgram, "--lr", m.lr, 0.0, 1e30);  // absurd rates allowed: divergence is caught
  check_flag_range(kProgram, "--clip", m.clip, 0.0, 1e9);
  check_flag_range<std::int64_t>(kProgram, "--steps", o.steps, 1, 100000000);
  check_flag_range<std::int64_t>(kProgram, "--eval-every", o.eval_every, 1, 100000000);
  check_flag_range<std::int64_t>(kProgram, "--eval-chars", o.eval_chars, 2, 1000000000);
  check_flag_range<std::int64_t>(kProgram, "--checkpoint-every", o.checkpoint_every, 1, 100000000);
  check_flag_range<std::int64_t>(kProgram, "--log-every", o.log_every, 1, 100000000);
  check_flag_range<std::int64_t>(kProgram, "--stop-at", o.stop_at, 0, 100000000);
  check_flag_range(kProgram, "--temperature", o.temperature, 0.0, 100.0);
  check_flag_range<std::int64_t>(kProgram, "--sample-chars", o.sample_chars, 0, 10000000);
  check_flag_range(kProgram, "--threads", o.threads, 0, 1024);
  check_flag_range<std::int64_t>(kProgram, "--shards", m.shards, 0, m.batch);
  UNROLL_CHECK(!(o.resume && o.sample_only), examples::UsageError,
               "{}: conflicting flags; got --resume and --sample-only, expected at most one", kProgram);
  UNROLL_CHECK(!o.eval_only || (!o.resume && !o.sample_only), examples::UsageError,
               "{}: conflicting flags; got --eval-only with --{}, expected --eval-only alone", kProgram,
               o.resume ? "resume" : "sample-only");
  UNROLL_CHECK(!o.eval_only || !o.test.empty(), examples::UsageError,
               "{}: --eval-only needs a text to evaluate; got no --test FILE, expected --eval-only --test FILE",
               kProgram);
}

// ---------------------------------------------------------------------------------------------------------
// Training

/// --test FILE: the model's bits/char on that text (windows of T over up to B streams, as validation), printed
/// as the program's last line "char_lm: test <bits> bits/char on '<file>' (<n> characters)". UsageError for a
/// text too short for one window, or with a character the model never saw.
/// The --test text, encoded (read before training, so a bad file stops the run at once).
std::vector<std::uint8_t> load_test(const Vocab& vocab, const Options& o, std::int64_t T) {
  const std::string text = examples::read_data_file(kProgram, "--test", o.test);
  UNROLL_CHECK(static_cast<std::int64_t>(text.size()) >= T + 1, examples::UsageError,
               "{}: --test file too short for --window {}; got {} bytes in '{}', expected at least {}", kProgram, T,
               text.size(), o.test, T + 1);
  return vocab.encode(text, "--test file");
}

int report_test(CharModel& model, const std::vector<std::uint8_t>& ids, const Options& o, std::int64_t T,
                std::int64_t B) {
  const double bits = evaluate(model, ids, T, B);
  fmt::print("{}: test {:.4f} bits/char on '{}' ({} characters)\n", kProgram, bits, o.test, ids.size());
  return 0;
}

struct Run {
  Options o;
  const CLI::App* app;
  bool given(const char* flag) const { return app->count(flag) > 0; }
};

/// Loads the checkpoint's settings into o.model. A flag the user gave that differs is a UsageError: an
/// exact continuation needs the same model and stream.
Checkpoint load_for_resume(Run& run, const std::string& path) {
  // Under mpirun rank 0 reads it and sends it to the others (only its machine needs the file).
  Checkpoint ck = examples::join_job(kProgram, run.o.distributed).load_checkpoint(path, [&] {
    UNROLL_CHECK(std::filesystem::exists(path), examples::UsageError,
                 "{}: no checkpoint to {}; got no file '{}', expected one written by an earlier run (same --out, or "
                 "give --checkpoint)",
                 kProgram, run.o.sample_only ? "sample from" : run.o.eval_only ? "evaluate" : "resume", path);
  });
  for (const Setting& s : kSettings) {
    const std::string saved = extra_at(ck, meta_key(s.flag), path);
    if (s.flag[0] == '-' && run.given(s.flag) && !run.o.sample_only && !run.o.eval_only) {
      UNROLL_CHECK(s.get(run.o.model) == saved, examples::UsageError,
                   "{}: {} differs from the checkpoint; got {}, expected {} (the checkpoint's) or no {}", kProgram,
                   s.flag, s.get(run.o.model), saved, s.flag);
    }
    try {
      s.set(run.o.model, saved);
    } catch (const ValueError&) {
      detail::throw_error<UsageError>("{}: checkpoint '{}' has a malformed setting; got {}='{}', expected a number",
                                      kProgram, path, meta_key(s.flag), saved);
    }
  }
  check_options(run.o);  // a hand-edited checkpoint gets the flags' messages
  return ck;
}

int train_or_sample(Run& run) {
  Options& o = run.o;
  // Under mpirun: one rank of a data-parallel job (examples/common/distributed.hpp); only rank 0 prints and
  // writes files. Every rank reads the same data and checkpoint, so setup errors are the same on every rank.
  examples::Job& job = examples::join_job(kProgram, o.distributed);
  const std::string ck_path = default_checkpoint(o);
  std::optional<Checkpoint> ck;
  if (o.resume || o.sample_only || o.eval_only) ck = load_for_resume(run, ck_path);
  ModelConfig& m = o.model;
  if (!ck) m.schedule_steps = o.steps;
  if (o.threads > 0) set_num_threads(o.threads);
  else if (job.active()) set_num_threads(job.default_threads());  // the cores shared among this machine's ranks
  if (m.shards == 0) m.shards = std::min<std::int64_t>(num_threads(), m.batch);

  // Data and vocabulary (sampling needs only the vocabulary, which the checkpoint holds).
  std::string text;
  Vocab vocab;
  if (ck) vocab = Vocab::from_text(extra_at(*ck, "char_lm.vocab", ck_path));
  if (!o.sample_only && !o.eval_only) {
    job.agree([&] {  // under mpirun every rank reads its own copy: one that cannot stops all, with one message
      text = examples::read_data_file(kProgram, "--data", o.data);
      const auto nul = text.find('\0');
      UNROLL_CHECK(nul == std::string::npos, examples::UsageError,
                   "{}: --data file is not text; got a NUL byte at offset {} of '{}', expected a text file", kProgram,
                   nul, o.data);
    });
    if (!ck) vocab = Vocab::of(text);
  }
  manual_seed(m.seed);
  CharModel model(m, vocab.size());
  if (model.custom)
    for (auto& cell : model.custom->cells) cell->set_fused(!o.no_fuse);
  if (o.count_params) {  // for sizing models to a parameter budget (examples/compare_cells)
    fmt::print("{}\n", model.num_parameters());
    return 0;
  }
  // --test: read and checked now, evaluated after training (or at once with --eval-only).
  const std::vector<std::uint8_t> test_ids = o.test.empty() ? std::vector<std::uint8_t>() : load_test(vocab, o, m.window);
  if (o.eval_only) {  // the checkpoint's bits/char on another text, no training (its --window and --batch)
    model.load_state_dict(ck->model);
    return report_test(model, test_ids, o, m.window, m.batch);
  }
  if (o.sample_only) {
    model.load_state_dict(ck->model);
    Generator gen(m.seed ^ 0x5a3c9e17u);
    fmt::print("{}{}\n", o.prompt, sample(model, vocab, o.prompt, o.sample_chars, o.temperature, gen));
    return 0;
  }

  const auto n = static_cast<std::int64_t>(text.size());
  const std::int64_t T = m.window, B = m.batch;
  const std::int64_t n_train = n * 9 / 10, n_val = n - n_train;  // first 90% train, last 10% validation
  if (n_train < B * (T + 1) || n_val < T + 1) {
    std::int64_t need = std::max(B * (T + 1) * 10 / 9, (T + 1) * 10);
    while (need * 9 / 10 < B * (T + 1) || need - need * 9 / 10 < T + 1) ++need;
    detail::throw_error<UsageError>(
        "{}: --data file too short for --window {} and --batch {}; got {} bytes in '{}', expected at least {} (90% "
        "for training >= batch x (window + 1), 10% for validation >= window + 1)",
        kProgram, T, B, n, o.data, need);
  }
  const std::vector<std::uint8_t> ids = vocab.encode(text, "--data file");
  const std::vector<std::uint8_t> train_ids(ids.begin(), ids.begin() + n_train);
  const std::vector<std::uint8_t> val_ids(ids.begin() + n_train, ids.begin() + n_train + std::min(n_val, o.eval_chars));
  const Streams streams{&train_ids, B, T, n_train / B};
  const std::uint64_t data_print = examples::fingerprint(text);
  job.check_same(data_print, "--data");  // under mpirun: every rank trains on the same text

  optim::Adam opt(model.parameters(), {.lr = m.lr});
  // Cosine decay to a tenth of the learning rate over the first run's --steps, then constant.
  optim::CosineAnnealingLR schedule(opt, m.schedule_steps, m.lr / 10);
  Carry carry;
  std::int64_t step = 0;
  double first_loss = NAN;
  if (ck) {
    const std::string& saved_print = extra_at(*ck, "char_lm.data_fingerprint", ck_path);
    UNROLL_CHECK(saved_print == fmt::format("{:016x}", data_print), examples::UsageError,
                 "{}: --data differs from the data the checkpoint was trained on; got '{}' (fingerprint {:016x}), "
                 "expected the same file (fingerprint {})",
                 kProgram, o.data, data_print, saved_print);
    model.load_state_dict(ck->model);
    opt.load_state_dict(ck->optimizer);
    schedule.load_state_dict(ck->scheduler);
    default_generator().set_state(ck->rng);
    step = ck->step;
    first_loss = parse_double(extra_at(*ck, "char_lm.first_loss", ck_path));
    for (const auto& [name, shape] : model.carry_shapes(B))
      if (Tensor t = carried_state(*ck, "carry_" + name, shape, ck_path); t.defined()) carry[name] = t;
  }
  UNROLL_CHECK(step < o.steps, examples::UsageError,
               "{}: nothing to do; got --steps {} and a checkpoint at step {}, expected --steps above it", kProgram,
               o.steps, step);

  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  UNROLL_CHECK(!ec, examples::UsageError, "{}: cannot create --out directory; got '{}' ({}), expected a writable path",
               kProgram, o.out, ec.message());
  const std::filesystem::path out_dir(o.out);
  // Files are rank 0's (in a single process: this one's); the other ranks write nothing.
  std::optional<examples::CsvWriter> metrics;
  if (job.is_root())
    metrics.emplace((out_dir / "metrics.csv").string(),
                    std::vector<std::string>{"step", "train_loss", "val_bpc", "tokens_per_s", "lr"},
                    ck ? std::optional<double>(static_cast<double>(step)) : std::nullopt);
  std::FILE* samples = std::fopen(job.is_root() ? (out_dir / "samples.txt").string().c_str() : "/dev/null",
                                  ck ? "a" : "w");
  UNROLL_CHECK(samples != nullptr, examples::UsageError,
               "{}: cannot write '{}'; got an error, expected a writable --out", kProgram,
               (out_dir / "samples.txt").string());
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> samples_guard(samples, &std::fclose);

  const auto save = [&]() {
    Checkpoint c{
        model.state_dict(), opt.state_dict(), schedule.state_dict(), step, default_generator().state(), {}, {}};
    for (const Setting& s : kSettings) c.extra[meta_key(s.flag)] = s.get(m);
    c.extra["char_lm.vocab"] = vocab.to_text();
    c.extra["char_lm.data_fingerprint"] = fmt::format("{:016x}", data_print);
    c.extra["char_lm.first_loss"] = fmt::format("{}", first_loss);
    for (const auto& [name, t] : carry) c.extra_tensors.insert("carry_" + name, t);
    job.save_checkpoint(ck_path, c);  // rank 0 writes; every rank waits for the complete file
  };
  const auto plot = [&]() {
    if (!metrics) return;
    const examples::CsvTable& t = metrics->table();
    examples::PlotSeries train{.name = "train"}, val{.name = "validation", .markers = true};
    for (const auto& r : t.rows) {
      if (r[1]) train.x.push_back(*r[0]), train.y.push_back(*r[1] / std::numbers::ln2);
      if (r[2]) val.x.push_back(*r[0]), val.y.push_back(*r[2]);
    }
    examples::write_line_plot(
        (out_dir / "loss.svg").string(),
        {.title = fmt::format("char_lm: {} {}x{}, window {}, batch {}", m.cell, m.layers, m.hidden, T, B),
         .x_label = "step",
         .y_label = "bits per character",
         .series = {train, val}});
  };

  fmt::print("{}: {} ({:.2f} MB, {} symbols): {} chars for training, {} for validation (of {})\n", kProgram, o.data,
             static_cast<double>(n) / 1e6, vocab.size(), n_train, val_ids.size(), n_val);
  fmt::print("{}: {} model, {} layer(s) of {}, embedding {}, {} parameters; window {}, batch {}, lr {}{}\n", kProgram,
             m.cell, m.layers, m.hidden, m.embed, model.num_parameters(), T, B, m.lr,
             ck ? fmt::format("; resuming at step {}", step) : "");

  const std::int64_t last = o.stop_at > 0 ? std::min(o.stop_at, o.steps) : o.steps;
  examples::Progress progress(
      {.total_steps = o.steps, .first_step = step, .tokens_per_step = T * B, .plain_every = o.log_every});
  const std::vector<Tensor> params = model.parameters();
  // Across ranks: every rank starts from rank 0's parameters and computes streams [row0, row1) of each batch.
  job.attach(params, static_cast<int>(m.shards));
  const auto [row0, row1] = job.slice(B);
  // Each shard's next carry, by its first stream (shards run concurrently: one slot each, no locking).
  std::vector<Carry> shard_next(static_cast<std::size_t>(row1 - row0));
  double interval_loss = 0, smooth = NAN, train_seconds = 0;
  // Worse than a uniform guess over the vocabulary for three logged intervals in a row: diverged.
  examples::DivergenceWatch divergence(
      {.program = kProgram,
       .ceiling = std::log(static_cast<double>(vocab.size())),
       .patience = 3,
       .hint = fmt::format("try a smaller --lr (now {}) or a tighter --clip (now {})", m.lr, m.clip)});
  std::int64_t interval_steps = 0;
  double last_val = NAN, last_interval_loss = NAN;
  using Clock = std::chrono::steady_clock;
  while (step < last) {
    const auto t0 = Clock::now();
    const std::int64_t k = step % streams.windows();
    if (k == 0) carry = {};  // a new pass over the text starts every stream from a zero state
    auto [x, y] = streams.window(k);
    const Tensor y_tb = reshape(y, {T, B});
    // Forward and backward of each shard of streams on its own thread; the gradients are summed into the
    // parameters in shard order, so the step equals the unsharded one up to float summation order.
    // Across ranks, each computes its streams and the gradients are summed over the ranks (job.backward).
    const double l = job.backward(
        B,
        [&](const autograd::Shard& s) {
          CharModel::RnnOut rnn_out;
          auto [logits, next] =
              model.forward(narrow(x, 1, s.begin, s.size()), carry_rows(carry, s.begin, s.size()), &rnn_out);
          shard_next[static_cast<std::size_t>(s.begin - row0)] = carry_forward(next);
          // BPTT through this window only: the carry came in detached
          Tensor loss = cross_entropy(logits, reshape(narrow(y_tb, 1, s.begin, s.size()), {-1}));
          if (m.ar > 0) loss = loss + nn::activation_regularization(rnn_out.dropped, m.ar);
          if (m.tar > 0 && rnn_out.raw.size(0) >= 2)
            loss = loss + nn::temporal_activation_regularization(rnn_out.raw, m.tar);
          return loss;
        },
        {.shards = static_cast<int>(m.shards)});
    // At once, before the update: the parameters are still the ones that gave the loss, so the step run again
    // under anomaly detection names the op where it went non-finite.
    if (!std::isfinite(l)) divergence.check(step + 1, l, [&] { return first_non_finite(model, x, y, carry); });
    optim::clip_grad_norm_(params, m.clip);
    opt.step();
    opt.zero_grad();
    if (schedule.last_epoch() < m.schedule_steps) schedule.step();
    carry = join_carries(shard_next);
    if (job.active()) carry = whole_carry(job, carry, row0, B);  // every rank holds every stream's state
    ++step;
    train_seconds += std::chrono::duration<double>(Clock::now() - t0).count();

    if (std::isnan(first_loss)) first_loss = l;
    smooth = std::isnan(smooth) ? l : 0.95 * smooth + 0.05 * l;
    interval_loss += l, ++interval_steps;
    const bool eval_now = step % o.eval_every == 0 || step == last;
    const bool log_now = eval_now || step % o.log_every == 0;
    progress.update(step, smooth, fmt::format("lr {:.2e}", opt.lr()));
    if (log_now) {
      std::optional<double> val;
      if (eval_now) {
        last_val = *(val = evaluate(model, val_ids, T, B));
        Generator gen(m.seed ^ (static_cast<std::uint64_t>(step) * 0x9e3779b97f4a7c15ull));
        const std::string s = sample(model, vocab, o.prompt, 200, o.temperature, gen);
        fmt::print(samples, "--- step {}, validation {:.4f} bpc, temperature {} ---\n{}{}\n\n", step, *val,
                   o.temperature, o.prompt, s);
        std::fflush(samples);
        progress.print_line(fmt::format("step {:>{}}  validation {:.4f} bits/char  | {}", step,
                                        fmt::formatted_size("{}", o.steps), *val,
                                        examples::printable(s.substr(0, 60))));
      }
      // Before this interval's checkpoint: a diverged run stops with the last good checkpoint on disk.
      divergence.check(step, interval_loss / static_cast<double>(interval_steps));
      last_interval_loss = interval_loss / static_cast<double>(interval_steps);
      if (metrics)  // tokens/s: the whole job's (every rank's share of the global batch)
        metrics->row({static_cast<double>(step), last_interval_loss, val,
                      static_cast<double>(interval_steps * T * B) / train_seconds, opt.lr()});
      interval_loss = 0, interval_steps = 0, train_seconds = 0;
      plot();
    }
    if (step % o.checkpoint_every == 0 || step == last) save();
  }
  progress.finish();
  const double final_loss = last_interval_loss;
  fmt::print("{}: {} steps in {}, {} tokens/s; train loss {:.4f} ({:.4f} bits/char), validation {:.4f} bits/char\n",
             kProgram, step, examples::format_duration(progress.elapsed_seconds()),
             examples::format_count(progress.tokens_per_second()), final_loss, final_loss / std::numbers::ln2,
             last_val);
  fmt::print("{}: wrote {}/metrics.csv, loss.svg, samples.txt, {}\n", kProgram, o.out, ck_path);
  if (step < o.steps) {
    fmt::print("{}: stopped at step {} (--stop-at); continue with --resume\n", kProgram, step);
    return 0;
  }
  if (o.diagnose && job.is_root()) diagnose(model, val_ids, T, B, o.out, m.cell);
  if (o.sample_chars > 0) {
    Generator gen(m.seed ^ 0x5a3c9e17u);
    const std::string s = o.prompt + sample(model, vocab, o.prompt, o.sample_chars, o.temperature, gen);
    fmt::print("\n--- sample, temperature {} ---\n{}\n", o.temperature, s);
    fmt::print(samples, "--- final sample, step {}, temperature {} ---\n{}\n\n", step, o.temperature, s);
  }
  if (!o.test.empty() && job.is_root()) report_test(model, test_ids, o, T, B);  // the last line: the test result
  // Did the model learn something: --smoke (what CI runs) fails if not, a real run warns.
  return examples::check_loss_fell(kProgram, o.smoke,
                                   {.first = first_loss, .last = final_loss, .first_what = "the first step's"});
}
}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main(kProgram, [&]() -> int {
    Run run;
    Options& o = run.o;
    ModelConfig& m = o.model;
    CLI::App app{
        "char_lm: a character-level language model (LSTM, GRU, RNN or a custom cell) trained with truncated "
        "BPTT on Jane Austen, or on your own text.",
        kProgram};
    app.get_formatter()->column_width(34);
    app.add_option("--data", o.data, "training text (any bytes; first 90% train, last 10% validation)")
        ->capture_default_str();
    app.add_option("--out", o.out, "directory for metrics.csv, loss.svg, samples.txt, checkpoint.safetensors")
        ->capture_default_str();
    app.add_option("--checkpoint", o.checkpoint,
                   "checkpoint file to write and --resume from [OUT/checkpoint.safetensors]");
    app.add_option("--cell", m.cell,
                   "lstm | gru | rnn | custom (a minimal gated unit written in the example) | mingru | minlstm "
                   "(nn::MinGRU / nn::MinLSTM: one scan per layer) | rglru (Griffin's recurrent blocks, "
                   "nn::RGLRUBlock, in pre-norm residual layers) | slstm | mlstm (xLSTM's nn::SLSTM / nn::MLSTM, 4 "
                   "heads)")
        ->capture_default_str();
    app.add_option("--embed", m.embed, "embedding size")->capture_default_str();
    app.add_option("--hidden", m.hidden, "hidden size")->capture_default_str();
    app.add_option("--layers", m.layers, "recurrent layers")->capture_default_str();
    app.add_option("--dropout", m.dropout, "dropout between layers and before the output layer")->capture_default_str();
    app.add_option("--weight-drop", m.weight_drop, "AWD: DropConnect on weight_hh (lstm, gru, rnn)")
        ->capture_default_str();
    app.add_option("--locked-dropout", m.locked_dropout,
                   "AWD: one dropout mask per sequence on the embeddings and the recurrent output")
        ->capture_default_str();
    app.add_option("--embed-dropout", m.embed_dropout, "AWD: drop whole characters from the embedding")
        ->capture_default_str();
    app.add_option("--zoneout", m.zoneout, "zoneout on h (and c) between steps (lstm, gru, rnn)")->capture_default_str();
    app.add_option("--ar", m.ar, "AWD: activation regularisation, alpha * mean(h^2)")->capture_default_str();
    app.add_option("--tar", m.tar, "AWD: temporal activation regularisation, beta * mean((h_t - h_{t-1})^2)")
        ->capture_default_str();
    app.add_option("--window", m.window, "T: characters per truncated-BPTT window")->capture_default_str();
    app.add_option("--batch", m.batch, "B: parallel streams through the text")->capture_default_str();
    app.add_option("--lr", m.lr, "Adam learning rate (cosine decay to lr/10 over --steps)")->capture_default_str();
    app.add_option("--clip", m.clip, "gradient norm clipping")->capture_default_str();
    app.add_option("--seed", m.seed, "random seed")->capture_default_str();
    app.add_option("--steps", o.steps, "training steps (windows)")->capture_default_str();
    app.add_option("--eval-every", o.eval_every, "validate (and sample to samples.txt) every N steps")
        ->capture_default_str();
    app.add_option("--eval-chars", o.eval_chars, "validation characters used for bits/char")->capture_default_str();
    app.add_option("--checkpoint-every", o.checkpoint_every, "write the checkpoint every N steps (and at the end)")
        ->capture_default_str();
    app.add_option("--log-every", o.log_every, "metrics.csv row (and a progress line when piped) every N steps")
        ->capture_default_str();
    app.add_flag("--resume", o.resume, "continue from the checkpoint to --steps, exactly as if never stopped");
    app.add_option("--stop-at", o.stop_at, "stop at this step with a checkpoint, as if interrupted (0: don't)");
    app.add_flag("--sample-only", o.sample_only, "no training: sample from the checkpoint and exit");
    app.add_option("--test", o.test, "a text to report bits/char on, after training (the last line printed)");
    app.add_flag("--eval-only", o.eval_only, "no training: the checkpoint's bits/char on --test FILE, then exit");
    app.add_flag("--count-params", o.count_params, "print the model's number of parameters and exit");
    app.add_option("--prompt", o.prompt, "text the samples continue (default: start of a line)");
    app.add_option("--temperature", o.temperature, "sampling temperature (0: always the likeliest character)")
        ->capture_default_str();
    app.add_option("--sample-chars", o.sample_chars, "characters to sample at the end")->capture_default_str();
    app.add_option("--threads", o.threads, "threads for BLAS and TBB (0: all cores)")->capture_default_str();
    app.add_option("--shards", m.shards, "batch shards trained in parallel, <= --batch (0: one per thread)")
        ->capture_default_str();
    app.add_flag("--no-fuse", o.no_fuse,
                 "--cell custom: run the custom cell op by op, not fused into one tape node per sequence (nn/fuse.hpp)");
    app.add_flag("--diagnose", o.diagnose,
                 "after training: per-step gradient norms (diagnose_grad_norm.csv/.svg) and a gate-saturation table "
                 "(diagnose_gates.csv) on a window of validation text");
      app.add_flag("--distributed", o.distributed,
                 "join a data-parallel MPI job (automatic under mpirun with several processes): each rank trains on "
                 "its share of every batch, rank 0 prints and writes the files");
    app.add_flag("--smoke", o.smoke, "a tiny run of a few seconds (what CI runs); fails unless the loss falls");
    if (auto code = examples::parse_command_line(app, argc, argv)) return *code;
    // Before any check: under mpirun a bad flag is then reported once (by rank 0), not once per rank.
    examples::join_job(kProgram, o.distributed);
    run.app = &app;
    if (o.smoke) {  // tiny defaults; flags given explicitly still win
      const examples::FlagDefaults def(app);
      def("--embed", m.embed, std::int64_t{16});
      def("--hidden", m.hidden, std::int64_t{64});
      def("--window", m.window, std::int64_t{32});
      def("--batch", m.batch, std::int64_t{16});
      def("--lr", m.lr, 1e-2);
      def("--steps", o.steps, std::int64_t{120});
      def("--eval-every", o.eval_every, std::int64_t{60});
      def("--eval-chars", o.eval_chars, std::int64_t{4000});
      def("--checkpoint-every", o.checkpoint_every, std::int64_t{60});
      def("--log-every", o.log_every, std::int64_t{20});
      def("--sample-chars", o.sample_chars, std::int64_t{120});
      def("--out", o.out, std::string("runs/char_lm_smoke"));
    }
    check_options(o);
    return train_or_sample(run);
  });
}
