// translate: character-level sequence-to-sequence translation with attention — English to Spanish on
// verse-aligned Bible translations (King James 1611/1769, Reina-Valera 1909; data/bible_en_es/), or number
// words to digits in French, German and Spanish (--task numbers; data/numbers/). The encoder is a
// bidirectional GRU (or, with --model transformer, a Transformer encoder); the decoder is a GRU with Luong
// (or Bahdanau) attention and input feeding, decoded by beam search. A second model without attention is
// trained alongside as the baseline; BLEU and chrF on held-out sentences compare them, and attention heat maps
// show what each output character looked at.
//
//   translate                                  # English -> Spanish, RNN with attention vs without
//   translate --task numbers                   # "quatre cent deux" -> "402"
//   translate --model transformer --no-baseline
//   translate --data my.tsv --src-column de --tgt-column en --test held_out.tsv
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include <unroll/unroll.hpp>

#include "../common/bleu.hpp"
#include "../common/cli.hpp"
#include "../common/csv.hpp"
#include "../common/data.hpp"
#include "../common/heatmap.hpp"
#include "../common/progress.hpp"
#include "../common/smoke.hpp"
#include "../common/svg_plot.hpp"

using namespace unroll;

#ifndef TRANSLATE_DATA_DIR
#define TRANSLATE_DATA_DIR "data"
#endif

namespace {
constexpr const char* kProgram = "translate";

struct Options {
  std::string task = "bible";  ///< bible | numbers: the defaults for --data, --test and the columns
  std::string data, test, src_column, tgt_column;
  std::string out = "runs/translate";
  std::string model = "rnn";              ///< rnn | transformer (the encoder)
  std::string attention = "luong";        ///< luong | bahdanau
  bool baseline = true;                   ///< also train the same model without attention
  std::int64_t max_chars = 100;           ///< pairs longer than this on either side are left out
  std::int64_t max_pairs = 0;             ///< 0: all
  std::int64_t embed = 64, hidden = 128;  ///< RNN encoder: per direction; the decoder GRU has 2 * hidden
  std::int64_t d_model = 96, heads = 4, layers = 2, ff = 192;  ///< Transformer encoder
  double dropout = 0.2, test_fraction = 0.05;
  std::int64_t val_sentences = 200;
  std::int64_t batch = 32, steps = 3000;
  double lr = 2e-3, clip = 1.0;
  double sampling_k = 0;  ///< scheduled sampling's inverse-sigmoid k (0: always teacher forcing)
  std::int64_t beam = 5;
  double length_penalty = 1.0;
  std::int64_t eval_every = 500, log_every = 50, show = 4, max_test = 0;
  std::uint64_t seed = 1;
  int threads = 0;
  bool smoke = false;
};

void check_options(const Options& o) {
  using examples::check_flag_range;
  UNROLL_CHECK(o.task == "bible" || o.task == "numbers", examples::UsageError,
               "{}: unknown --task; got '{}', expected bible or numbers", kProgram, o.task);
  UNROLL_CHECK(o.model == "rnn" || o.model == "transformer", examples::UsageError,
               "{}: unknown --model; got '{}', expected rnn or transformer", kProgram, o.model);
  UNROLL_CHECK(o.attention == "luong" || o.attention == "bahdanau", examples::UsageError,
               "{}: unknown --attention; got '{}', expected luong or bahdanau", kProgram, o.attention);
  check_flag_range<std::int64_t>(kProgram, "--max-chars", o.max_chars, 2, 10000);
  check_flag_range<std::int64_t>(kProgram, "--max-pairs", o.max_pairs, 0, 100000000);
  check_flag_range<std::int64_t>(kProgram, "--embed", o.embed, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--hidden", o.hidden, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--d-model", o.d_model, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--heads", o.heads, 1, 64);
  UNROLL_CHECK(o.d_model % o.heads == 0, examples::UsageError,
               "{}: --d-model must be a multiple of --heads; got {} and {}", kProgram, o.d_model, o.heads);
  check_flag_range<std::int64_t>(kProgram, "--layers", o.layers, 1, 64);
  check_flag_range<std::int64_t>(kProgram, "--ff", o.ff, 1, 65536);
  check_flag_range(kProgram, "--dropout", o.dropout, 0.0, 0.9);
  check_flag_range(kProgram, "--test-fraction", o.test_fraction, 0.001, 0.5);
  check_flag_range<std::int64_t>(kProgram, "--val-sentences", o.val_sentences, 1, 100000);
  check_flag_range<std::int64_t>(kProgram, "--batch", o.batch, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--steps", o.steps, 1, 10000000);
  check_flag_range(kProgram, "--lr", o.lr, 0.0, 1e30);  // absurd rates allowed: divergence is caught
  check_flag_range(kProgram, "--clip", o.clip, 0.0, 1e9);
  check_flag_range(kProgram, "--sampling-k", o.sampling_k, 0.0, 1e9);
  UNROLL_CHECK(o.sampling_k == 0 || o.sampling_k >= 1, examples::UsageError,
               "{}: --sampling-k out of range; got {}, expected 0 (off) or >= 1", kProgram, o.sampling_k);
  check_flag_range<std::int64_t>(kProgram, "--beam", o.beam, 1, 100);
  check_flag_range(kProgram, "--length-penalty", o.length_penalty, 0.0, 10.0);
  check_flag_range<std::int64_t>(kProgram, "--eval-every", o.eval_every, 1, 10000000);
  check_flag_range<std::int64_t>(kProgram, "--log-every", o.log_every, 1, 10000000);
  check_flag_range<std::int64_t>(kProgram, "--show", o.show, 0, 100);
  check_flag_range<std::int64_t>(kProgram, "--max-test", o.max_test, 0, 100000000);
  check_flag_range(kProgram, "--threads", o.threads, 0, 1024);
}

// ---------------------------------------------------------------------------------------------------------
// Data: sentence pairs from a TSV with a header, as UTF-8 characters

/// UTF-8 text -> its characters (code points, each as a string); read_pairs has checked the encoding.
std::vector<std::string> characters(const std::string& text) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t len = examples::utf8_length(text, i);
    out.push_back(text.substr(i, len));
    i += len;
  }
  return out;
}

/// The first `n` characters of UTF-8 text (never half a character).
std::string first_characters(const std::string& text, std::size_t n) {
  std::string out;
  for (const std::string& c : characters(text)) {
    if (n-- == 0) break;
    out += c;
  }
  return out;
}

struct Pair {
  std::string src, tgt;
  std::vector<std::string> src_chars, tgt_chars;
};

struct ReadResult {
  std::vector<Pair> pairs;
  std::int64_t too_long = 0;
};

/// The --src-column and --tgt-column of a TSV with a header; pairs longer than max_chars on either side are
/// counted and left out. UsageError for a missing column, a short row or an empty side.
ReadResult read_pairs(const Options& o, const std::string& path, const char* flag) {
  const std::string bytes = examples::read_data_file(kProgram, flag, path, "TSV file with a header");
  ReadResult r;
  std::size_t pos = bytes.starts_with("\xef\xbb\xbf") ? 3 : 0;  // a UTF-8 byte-order mark is not the header
  std::int64_t line_no = 0;
  int sc = -1, tc = -1;
  std::size_t columns = 0;
  while (pos < bytes.size()) {
    std::size_t end = bytes.find('\n', pos);
    if (end == std::string::npos) end = bytes.size();
    std::string line = bytes.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    for (std::size_t i = 0; i < line.size();) {
      const std::size_t len = examples::utf8_length(line, i);
      UNROLL_CHECK(len > 1 || static_cast<unsigned char>(line[i]) < 0x80, examples::UsageError,
                   "{}: {} file is not UTF-8; got byte 0x{:02x} at line {} of '{}', expected UTF-8 text (convert it, "
                   "e.g. iconv -f latin1 -t utf-8)",
                   kProgram, flag, static_cast<unsigned char>(line[i]), line_no, path);
      i += len;
    }
    std::vector<std::string> cells;
    for (std::size_t a = 0;;) {
      const std::size_t b = line.find('\t', a);
      cells.push_back(line.substr(a, b == std::string::npos ? std::string::npos : b - a));
      if (b == std::string::npos) break;
      a = b + 1;
    }
    if (line_no == 1) {
      columns = cells.size();
      for (std::size_t i = 0; i < cells.size(); ++i) {
        if (cells[i] == o.src_column) sc = static_cast<int>(i);
        if (cells[i] == o.tgt_column) tc = static_cast<int>(i);
      }
      UNROLL_CHECK(sc >= 0 && tc >= 0, examples::UsageError,
                   "{}: no such column in the {} file; got '{}' in '{}' (header: {}), expected the source and target "
                   "columns (--src-column, --tgt-column)",
                   kProgram, flag, sc < 0 ? o.src_column : o.tgt_column, path,
                   examples::printable(line.substr(0, 200)));
      continue;
    }
    if (line.empty()) continue;
    UNROLL_CHECK(cells.size() == columns, examples::UsageError,
                 "{}: {} file has a row with {} tab-separated cells; got line {} of '{}', expected {} like the header",
                 kProgram, flag, cells.size(), line_no, path, columns);
    Pair p{.src = cells[static_cast<std::size_t>(sc)],
           .tgt = cells[static_cast<std::size_t>(tc)],
           .src_chars = {},
           .tgt_chars = {}};
    UNROLL_CHECK(!p.src.empty() && !p.tgt.empty(), examples::UsageError,
                 "{}: {} file has an empty {} at line {} of '{}'", kProgram, flag, p.src.empty() ? "source" : "target",
                 line_no, path);
    p.src_chars = characters(p.src);
    p.tgt_chars = characters(p.tgt);
    if (static_cast<std::int64_t>(p.src_chars.size()) > o.max_chars ||
        static_cast<std::int64_t>(p.tgt_chars.size()) > o.max_chars) {
      ++r.too_long;
      continue;
    }
    r.pairs.push_back(std::move(p));
  }
  UNROLL_CHECK(line_no >= 1, examples::UsageError, "{}: {} file has no header; got '{}'", kProgram, flag, path);
  return r;
}

/// Characters -> ids: 0 <pad>, 1 <bos>, 2 <eos>, 3 <unk> (a character training never saw), then the training
/// characters in order of first appearance.
struct Vocab {
  static constexpr std::int64_t kPad = 0, kBos = 1, kEos = 2, kUnk = 3;
  std::vector<std::string> items{"<pad>", "<bos>", "<eos>", "<unk>"};
  std::unordered_map<std::string, std::int64_t> index;
  void add(const std::vector<std::string>& chars) {
    for (const auto& c : chars)
      if (index.emplace(c, static_cast<std::int64_t>(items.size())).second) items.push_back(c);
  }
  std::int64_t id(const std::string& c) const {
    const auto it = index.find(c);
    return it == index.end() ? kUnk : it->second;
  }
  std::int64_t size() const { return static_cast<std::int64_t>(items.size()); }
  std::string text(const std::vector<std::int64_t>& ids) const {
    std::string s;
    for (const std::int64_t i : ids)
      if (i > kUnk)
        s += items[static_cast<std::size_t>(i)];
      else if (i == kUnk)
        s += "?";
    return s;
  }
};

struct Batch {
  Tensor src;                             ///< [B, S] ids, kPad past each sentence's end
  Tensor src_padding;                     ///< int64 [B, S]: 1 past each sentence's end
  std::vector<std::int64_t> src_lengths;  ///< characters per sentence
  Tensor tgt_in, tgt_out;                 ///< [T, B]: <bos> y_1 .. y_n, and y_1 .. y_n <eos> (kPad after)
  std::int64_t tokens = 0;                ///< target tokens, <eos> included
};

Batch make_batch(const Vocab& sv, const Vocab& tv, const std::vector<const Pair*>& rows) {
  Batch b;
  const auto B = static_cast<std::int64_t>(rows.size());
  std::int64_t S = 1, T = 1;
  for (const Pair* p : rows) {
    S = std::max<std::int64_t>(S, static_cast<std::int64_t>(p->src_chars.size()));
    T = std::max<std::int64_t>(T, static_cast<std::int64_t>(p->tgt_chars.size()) + 1);
  }
  std::vector<std::int64_t> src(static_cast<std::size_t>(B * S), Vocab::kPad), pad(static_cast<std::size_t>(B * S), 1);
  std::vector<std::int64_t> in(static_cast<std::size_t>(T * B), Vocab::kPad),
      out(static_cast<std::size_t>(T * B), Vocab::kPad);
  for (std::int64_t j = 0; j < B; ++j) {
    const Pair& p = *rows[static_cast<std::size_t>(j)];
    const auto n = static_cast<std::int64_t>(p.src_chars.size());
    for (std::int64_t s = 0; s < n; ++s) {
      src[static_cast<std::size_t>(j * S + s)] = sv.id(p.src_chars[static_cast<std::size_t>(s)]);
      pad[static_cast<std::size_t>(j * S + s)] = 0;
    }
    b.src_lengths.push_back(n);
    const auto m = static_cast<std::int64_t>(p.tgt_chars.size());
    for (std::int64_t t = 0; t <= m; ++t) {
      const std::int64_t y = t < m ? tv.id(p.tgt_chars[static_cast<std::size_t>(t)]) : Vocab::kEos;
      in[static_cast<std::size_t>(t * B + j)] = t == 0 ? Vocab::kBos : out[static_cast<std::size_t>((t - 1) * B + j)];
      out[static_cast<std::size_t>(t * B + j)] = y;
    }
    b.tokens += m + 1;
  }
  b.src = index_tensor(src, {B, S});
  b.src_padding = index_tensor(pad, {B, S});
  b.tgt_in = index_tensor(in, {T, B});
  b.tgt_out = index_tensor(out, {T, B});
  return b;
}

// ---------------------------------------------------------------------------------------------------------
// The model: an encoder (BiGRU or Transformer) and a GRU decoder with attention and input feeding (Luong et
// al. 2015): h_t = GRU([embed(y_{t-1}); h~_{t-1}], h_{t-1}), c_t = attention(h_t, encoder states),
// h~_t = tanh(W_c [c_t; h_t]), p(y_t) = softmax(W_o h~_t). Without attention (the baseline) the decoder is
// h_t = GRU(embed(y_{t-1}), h_{t-1}), p(y_t) = softmax(W_o h_t): everything it knows of the source is h_0.

struct Memory {
  Tensor values;   ///< [B, S, Dm] encoder states
  Tensor keys;     ///< [B, S, *] the attention's projected keys (computed once per sentence)
  Tensor padding;  ///< int64 [B, S]
  Tensor h0;       ///< [B, Hd] the decoder's first state
};

class Translator : public nn::Module {
 public:
  Translator(const Options& o, std::int64_t src_vocab, std::int64_t tgt_vocab, bool attention)
      : transformer_(o.model == "transformer"),
        attention_(attention),
        dropout_(o.dropout),
        dm_(transformer_ ? o.d_model : 2 * o.hidden),
        hd_(2 * o.hidden),
        src_embed(src_vocab, transformer_ ? o.d_model : o.embed, Vocab::kPad),
        bridge(dm_, hd_),
        tgt_embed(tgt_vocab, o.embed, Vocab::kPad),
        cell(o.embed + (attention ? hd_ : 0), hd_),
        out(hd_, tgt_vocab) {
    register_module("src_embed", src_embed);
    if (transformer_) {
      pos = std::make_unique<nn::SinusoidalPositionalEncoding>(o.d_model, o.max_chars + 8);
      encoder_tf = std::make_unique<nn::TransformerEncoder>(
          nn::TransformerEncoderLayerOptions{.d_model = o.d_model,
                                             .nhead = o.heads,
                                             .dim_feedforward = o.ff,
                                             .dropout = o.dropout,
                                             .activation = nn::Activation::relu,
                                             .layer_norm_eps = 1e-5,
                                             .batch_first = true,
                                             .norm_first = true},
          o.layers, /*final_norm=*/true);
      register_module("encoder", *encoder_tf);
    } else {
      encoder_rnn = std::make_unique<nn::GRU>(
          nn::RecurrentOptions{.input_size = o.embed, .hidden_size = o.hidden, .bidirectional = true});
      register_module("encoder", *encoder_rnn);
    }
    register_module("bridge", bridge);
    register_module("tgt_embed", tgt_embed);
    register_module("cell", cell);
    if (attention_) {
      if (o.attention == "luong") {
        luong = std::make_unique<nn::MultiplicativeAttention>(hd_, dm_, nn::LuongScore::general);
        register_module("attention", *luong);
      } else {
        bahdanau = std::make_unique<nn::AdditiveAttention>(hd_, dm_, hd_);
        register_module("attention", *bahdanau);
      }
      combine = std::make_unique<nn::Linear>(dm_ + hd_, hd_);
      register_module("combine", *combine);
    }
    register_module("out", out);
  }

  bool has_attention() const { return attention_; }

  Memory encode(const Batch& b) const {
    Memory m;
    m.padding = b.src_padding;
    Tensor summary;  // [B, Dm]: what h0 is made from
    if (transformer_) {
      // Not scaled by sqrt(d_model) as in Vaswani et al.: their embeddings start near 1/sqrt(d), nn::Embedding's
      // (PyTorch's) at N(0, 1), and scaling those drowns the positions (measured: README, "RNN or Transformer").
      Tensor x = (*pos)(src_embed(b.src), /*batch_first=*/true);
      m.values = (*encoder_tf)(dropout(x, dropout_, is_training()), {}, b.src_padding);
      // mean of each sentence's own states
      std::vector<double> keep(static_cast<std::size_t>(b.src.numel()));
      const auto pad = b.src_padding.to_vector<std::int64_t>();
      for (std::size_t i = 0; i < keep.size(); ++i)
        keep[i] = pad[i] ? 0.0 : 1.0 / static_cast<double>(b.src_lengths[i / static_cast<std::size_t>(b.src.size(1))]);
      summary = sum(m.values * unsqueeze(tensor(keep, b.src.shape()), 2), {1});
    } else {
      const Tensor x = dropout(src_embed(transpose(b.src, 0, 1)), dropout_, is_training());  // [S, B, E]
      const nn::RecurrentOutput r = (*encoder_rnn)(x, {}, b.src_lengths);
      m.values = transpose(r.output, 0, 1);                          // [B, S, 2H]
      summary = cat({select(r.h_n, 0, 0), select(r.h_n, 0, 1)}, 1);  // last fwd, first bwd
    }
    m.h0 = tanh(bridge(summary));
    if (attention_) m.keys = luong ? luong->project_keys(m.values) : bahdanau->project_keys(m.values);
    return m;
  }

  struct Step {
    Tensor logits, h, feed, weights;  ///< weights [B, S] (attention only)
  };
  /// One decoder step from the previous tokens [B], state h and the previous attentional vector `feed`.
  Step step(const Tensor& prev, const Tensor& h, const Tensor& feed, const Memory& m) const {
    Tensor x = tgt_embed(prev);
    if (attention_) x = cat({x, feed}, 1);
    Step s;
    s.h = cell(dropout(x, dropout_, is_training()), h);
    if (attention_) {
      const nn::AttentionResult a =
          luong ? luong->attend(s.h, m.keys, m.values, m.padding) : bahdanau->attend(s.h, m.keys, m.values, m.padding);
      s.feed = tanh((*combine)(cat({a.context, s.h}, 1)));
      s.weights = a.weights;
    } else {
      s.feed = s.h;
    }
    s.logits = out(dropout(s.feed, dropout_, is_training()));
    return s;
  }

  Tensor initial_feed(std::int64_t B) const { return zeros({B, attention_ ? hd_ : 1}); }

  /// Sum of the target tokens' cross-entropy over the batch, teacher forcing — or, with teacher_prob < 1,
  /// scheduled sampling: each row's next input is the gold token with that probability, else the model's argmax.
  Tensor loss_sum(const Batch& b, double teacher_prob = 1.0) const {
    const Memory m = encode(b);
    const std::int64_t T = b.tgt_in.size(0), B = b.tgt_in.size(1);
    Tensor h = m.h0, feed = initial_feed(B), prev = b.tgt_in[0];
    Tensor total;
    for (std::int64_t t = 0; t < T; ++t) {
      const Step s = step(prev, h, feed, m);
      const Tensor l = cross_entropy(s.logits, b.tgt_out[t], Reduction::sum, Vocab::kPad);
      total = t == 0 ? l : total + l;
      h = s.h, feed = s.feed;
      if (t + 1 < T)
        prev = teacher_prob < 1.0 ? nn::scheduled_sampling_inputs(b.tgt_in[t + 1], s.logits.detach(), teacher_prob,
                                                                  default_generator())
                                  : b.tgt_in[t + 1];
    }
    return total;
  }

 private:
  bool transformer_, attention_;
  double dropout_;
  std::int64_t dm_, hd_;

 public:
  nn::Embedding src_embed;
  std::unique_ptr<nn::GRU> encoder_rnn;
  std::unique_ptr<nn::SinusoidalPositionalEncoding> pos;
  std::unique_ptr<nn::TransformerEncoder> encoder_tf;
  nn::Linear bridge;
  nn::Embedding tgt_embed;
  nn::GRUCell cell;
  std::unique_ptr<nn::MultiplicativeAttention> luong;
  std::unique_ptr<nn::AdditiveAttention> bahdanau;
  std::unique_ptr<nn::Linear> combine;
  nn::Linear out;
};

/// The decoder as a DecodeStep for greedy and beam search. State: h, feed, keys, values, padding.
nn::DecodeStep decode_step(const Translator& model) {
  return [&model](const Tensor& tokens, nn::DecodeState& st) {
    Memory m{.values = st[3], .keys = st[2], .padding = st[4], .h0 = {}};
    const Translator::Step s = model.step(tokens, st[0], st[1], m);
    st[0] = s.h, st[1] = s.feed;
    return log_softmax(s.logits, 1);
  };
}

nn::DecodeState decode_state(const Translator& model, const Memory& m) {
  const std::int64_t B = m.h0.size(0);
  // Without attention the keys and values are not read; small placeholders keep the state's layout.
  return {m.h0, model.initial_feed(B), model.has_attention() ? m.keys : zeros({B, 1}),
          model.has_attention() ? m.values : zeros({B, 1}), m.padding};
}

/// Translations of `pairs` (beam 1: greedy), in chunks of 64 sentences.
std::vector<std::string> translate_all(const Translator& model, const Vocab& sv, const Vocab& tv,
                                       const std::vector<const Pair*>& pairs, std::int64_t beam, double length_penalty,
                                       std::int64_t max_length) {
  NoGradGuard no_grad;
  std::vector<std::string> out;
  for (std::size_t i = 0; i < pairs.size(); i += 64) {
    const std::vector<const Pair*> part(pairs.begin() + static_cast<std::ptrdiff_t>(i),
                                        pairs.begin() + static_cast<std::ptrdiff_t>(std::min(pairs.size(), i + 64)));
    const Batch b = make_batch(sv, tv, part);
    const Memory m = model.encode(b);
    const auto B = static_cast<std::int64_t>(part.size());
    std::vector<std::vector<std::int64_t>> ids;
    if (beam == 1) {
      ids = nn::greedy_decode(decode_step(model), decode_state(model, m), B,
                              {.bos = Vocab::kBos, .eos = Vocab::kEos, .max_length = max_length});
    } else {
      const auto hyps = nn::beam_search(decode_step(model), decode_state(model, m), B,
                                        {.bos = Vocab::kBos,
                                         .eos = Vocab::kEos,
                                         .max_length = max_length,
                                         .beam_size = beam,
                                         .length_penalty = length_penalty,
                                         .num_return = 1});
      for (const auto& h : hyps) ids.push_back(h.front().tokens);
    }
    for (auto& v : ids) {
      if (!v.empty() && v.back() == Vocab::kEos) v.pop_back();
      out.push_back(tv.text(v));
    }
  }
  return out;
}

struct Score {
  double bleu = 0, chrf = 0;
  double exact = 0;  ///< the fraction translated exactly (what counts for --task numbers, whose targets are one
                     ///< word: BLEU has no 2-grams to count there and is 0)
};
Score score(const std::vector<std::string>& hyps, const std::vector<const Pair*>& pairs) {
  std::vector<std::string> refs;
  std::size_t exact = 0;
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    refs.push_back(pairs[i]->tgt);
    exact += hyps[i] == pairs[i]->tgt;
  }
  return {examples::corpus_bleu(hyps, refs).score, examples::corpus_chrf(hyps, refs),
          static_cast<double>(exact) / static_cast<double>(pairs.size())};
}

/// The attention weights while the model reads its own translation of `p` back in (teacher-forced on it):
/// rows = output characters (and <eos>), columns = source characters.
void write_attention_map(const Translator& model, const Vocab& sv, const Vocab& tv, const Pair& p,
                         const std::string& translation, const std::string& path) {
  NoGradGuard no_grad;
  Pair own = p;
  own.tgt = translation;
  own.tgt_chars = characters(translation);
  const Batch b = make_batch(sv, tv, {&own});
  const Memory m = model.encode(b);
  Tensor h = m.h0, feed = model.initial_feed(1);
  examples::Heatmap map{.title = fmt::format("attention: {}", first_characters(p.src, 60)),
                        .x_label = "source",
                        .y_label = "translation",
                        .row_labels = {},
                        .col_labels = p.src_chars,
                        .values = {},
                        .text = {},
                        .cell = 14};
  for (std::int64_t t = 0; t < b.tgt_in.size(0); ++t) {
    const Translator::Step s = model.step(b.tgt_in[t], h, feed, m);
    h = s.h, feed = s.feed;
    for (double w : s.weights.to_vector()) map.values.push_back(w);
    map.row_labels.push_back(t < static_cast<std::int64_t>(own.tgt_chars.size())
                                 ? own.tgt_chars[static_cast<std::size_t>(t)]
                                 : std::string("<eos>"));
  }
  examples::write_heatmap(path, map);
}

// ---------------------------------------------------------------------------------------------------------

struct Trained {
  std::string name;
  std::int64_t parameters = 0;
  double seconds = 0, tokens_per_s = 0, first_loss = NAN, last_loss = NAN;
};

struct Data {
  std::vector<Pair> train, test;
  std::vector<const Pair*> val, test_ptrs;
  Vocab src, tgt;
  std::int64_t max_length = 0;  ///< decoding stops here: the longest training target + 10
};

Trained train(Translator& model, const Data& d, const Options& o, const std::string& name, examples::CsvWriter& metrics,
              const std::filesystem::path& out_dir) {
  manual_seed(o.seed);
  optim::Adam opt(model.parameters(), {.lr = o.lr});
  optim::CosineAnnealingLR schedule(opt, o.steps, o.lr / 10);
  Generator gen(o.seed ^ 0x7a3u);
  const std::vector<Tensor> params = model.parameters();
  examples::DivergenceWatch divergence(
      {.program = kProgram,
       .ceiling = INFINITY,
       .patience = 1,
       .hint = fmt::format("try a smaller --lr (now {}) or a tighter --clip (now {})", o.lr, o.clip)});
  examples::EpochSampler sampler(d.train.size(), gen);
  Trained r{.name = name, .parameters = model.num_parameters()};
  std::int64_t tokens = 0, interval_tokens = 0, interval_steps = 0;
  double interval_loss = 0, interval_seconds = 0;
  double mean_target = 0;  // characters + <eos> per training pair, for the progress line's tokens/s
  for (const Pair& p : d.train) mean_target += static_cast<double>(p.tgt_chars.size() + 1);
  mean_target /= static_cast<double>(d.train.size());
  examples::Progress progress({.total_steps = o.steps,
                               .first_step = 0,
                               .tokens_per_step = std::llround(static_cast<double>(o.batch) * mean_target)});
  double smooth = NAN;
  model.train();
  for (std::int64_t step = 1; step <= o.steps; ++step) {
    std::vector<const Pair*> rows;
    for (const std::size_t i : sampler.next_batch(o.batch)) rows.push_back(&d.train[i]);
    const double teacher = o.sampling_k > 0 ? nn::inverse_sigmoid_decay(step, o.sampling_k) : 1.0;
    const auto t0 = std::chrono::steady_clock::now();
    std::int64_t batch_tokens = 0;
    for (const Pair* p : rows) batch_tokens += static_cast<std::int64_t>(p->tgt_chars.size()) + 1;
    const double per = static_cast<double>(batch_tokens);
    // Per target token, the batch's mean: each shard of sentences (on its own thread) returns its part of the
    // sum over the whole batch.
    const double l =
        autograd::sharded_backward(static_cast<std::int64_t>(rows.size()),
                                   [&](const autograd::Shard& s) {
                                     const std::vector<const Pair*> part(rows.begin() + s.begin, rows.begin() + s.end);
                                     return model.loss_sum(make_batch(d.src, d.tgt, part), teacher) / per;
                                   },
                                   {.sum_loss = true});
    divergence.check(step, l, [&] {
      return examples::locate_non_finite(model, [&] { return model.loss_sum(make_batch(d.src, d.tgt, rows)) / per; });
    });
    optim::clip_grad_norm_(params, o.clip > 0 ? o.clip : INFINITY);
    opt.step();
    opt.zero_grad();
    schedule.step();
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.seconds += took, interval_seconds += took;
    tokens += batch_tokens, interval_tokens += batch_tokens;
    smooth = std::isnan(smooth) ? l : 0.95 * smooth + 0.05 * l;
    interval_loss += l, ++interval_steps;
    progress.update(step, smooth, name);
    const bool eval_now = step % o.eval_every == 0 || step == o.steps;
    if (eval_now || step % o.log_every == 0) {
      std::optional<double> val_bleu, val_chrf, val_exact;
      if (eval_now) {
        model.eval();
        const Score s = score(translate_all(model, d.src, d.tgt, d.val, 1, o.length_penalty, d.max_length), d.val);
        model.train();
        val_bleu = s.bleu, val_chrf = s.chrf, val_exact = s.exact;
        progress.print_line(
            fmt::format("{} step {:>{}}  validation BLEU {:.2f}  chrF {:.2f}  exact {:.1f}% (greedy, {} sentences)",
                        name, step, fmt::formatted_size("{}", o.steps), s.bleu, s.chrf, 100 * s.exact, d.val.size()));
        Checkpoint c{
            model.state_dict(), opt.state_dict(), schedule.state_dict(), step, default_generator().state(), {}, {}};
        c.extra["translate.src_vocab"] = fmt::format("{}", fmt::join(d.src.items, "\x1f"));
        c.extra["translate.tgt_vocab"] = fmt::format("{}", fmt::join(d.tgt.items, "\x1f"));
        c.extra["translate.model"] = name;
        save_checkpoint((out_dir / fmt::format("{}.safetensors", name)).string(), c);
      }
      const double mean = interval_loss / static_cast<double>(interval_steps);
      if (std::isnan(r.first_loss)) r.first_loss = mean;
      r.last_loss = mean;
      metrics.row({static_cast<double>(step), name == "attention" ? mean : std::optional<double>(),
                   name == "baseline" ? mean : std::optional<double>(), val_bleu, val_chrf, val_exact,
                   static_cast<double>(interval_tokens) / interval_seconds, opt.lr()});
      interval_loss = 0, interval_steps = 0, interval_tokens = 0, interval_seconds = 0;
    }
  }
  progress.finish();
  model.eval();
  r.tokens_per_s = static_cast<double>(tokens) / r.seconds;
  return r;
}

Data load_data(const Options& o) {
  Data d;
  ReadResult all = read_pairs(o, o.data, "--data");
  if (o.max_pairs > 0 && static_cast<std::int64_t>(all.pairs.size()) > o.max_pairs)
    all.pairs.resize(static_cast<std::size_t>(o.max_pairs));
  UNROLL_CHECK(all.pairs.size() >= 20, examples::UsageError,
               "{}: --data file too small; got {} pairs of at most {} characters in '{}' ({} longer left out), "
               "expected at least 20",
               kProgram, all.pairs.size(), o.max_chars, o.data, all.too_long);
  Generator gen(o.seed ^ 0x5e7u);
  const std::vector<std::size_t> order = examples::shuffled_indices(all.pairs.size(), gen);
  std::int64_t test_too_long = 0;
  if (!o.test.empty()) {
    ReadResult t = read_pairs(o, o.test, "--test");
    UNROLL_CHECK(!t.pairs.empty(), examples::UsageError,
                 "{}: --test file has no pairs of at most {} characters; got '{}' ({} longer left out)", kProgram,
                 o.max_chars, o.test, t.too_long);
    d.test = std::move(t.pairs);
    test_too_long = t.too_long;
    for (std::size_t i : order) d.train.push_back(all.pairs[i]);
  } else {
    const auto n_test = static_cast<std::size_t>(
        std::clamp<long long>(std::llround(static_cast<double>(order.size()) * o.test_fraction), 1,
                              static_cast<long long>(order.size()) / 2));
    for (std::size_t i = 0; i < order.size(); ++i) (i < n_test ? d.test : d.train).push_back(all.pairs[order[i]]);
  }
  if (o.max_test > 0 && static_cast<std::int64_t>(d.test.size()) > o.max_test)
    d.test.resize(static_cast<std::size_t>(o.max_test));
  for (const Pair& p : d.train) {
    d.src.add(p.src_chars);
    d.tgt.add(p.tgt_chars);
    d.max_length = std::max<std::int64_t>(d.max_length, static_cast<std::int64_t>(p.tgt_chars.size()) + 10);
  }
  // Validation (BLEU while training): the last --val-sentences training pairs' sources are NOT held out — the
  // test set is — so this number tracks fitting, and the test set stays unseen until the end.
  for (std::size_t i = 0; i < std::min<std::size_t>(d.train.size(), static_cast<std::size_t>(o.val_sentences)); ++i)
    d.val.push_back(&d.train[d.train.size() - 1 - i]);
  for (const Pair& p : d.test) d.test_ptrs.push_back(&p);
  fmt::print(
      "{}: {} training pairs, {} test pairs{} (at most {} characters; {} longer left out{}); {} source and {} "
      "target characters\n",
      kProgram, d.train.size(), d.test.size(), o.test.empty() ? "" : fmt::format(" from {}", o.test), o.max_chars,
      all.too_long, o.test.empty() ? "" : fmt::format(", {} in --test", test_too_long), d.src.size() - 4,
      d.tgt.size() - 4);
  return d;
}

int run(const Options& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  UNROLL_CHECK(!ec, examples::UsageError, "{}: cannot create --out directory; got '{}' ({}), expected a writable path",
               kProgram, o.out, ec.message());
  const std::filesystem::path out_dir(o.out);
  const Data d = load_data(o);

  examples::CsvWriter metrics((out_dir / "metrics.csv").string(),
                              {"step", "attention_train_loss", "baseline_train_loss", "val_bleu", "val_chrf",
                               "val_exact", "tokens_per_s", "lr"});
  manual_seed(o.seed);
  Translator model(o, d.src.size(), d.tgt.size(), /*attention=*/true);
  fmt::print("{}: {} encoder, {} attention: {} parameters\n", kProgram, o.model == "rnn" ? "BiGRU" : "Transformer",
             o.attention, model.num_parameters());
  const Trained a = train(model, d, o, "attention", metrics, out_dir);
  std::unique_ptr<Translator> base;
  std::optional<Trained> b;
  if (o.baseline) {
    manual_seed(o.seed);
    base = std::make_unique<Translator>(o, d.src.size(), d.tgt.size(), /*attention=*/false);
    fmt::print("{}: baseline without attention: {} parameters\n", kProgram, base->num_parameters());
    b = train(*base, d, o, "baseline", metrics, out_dir);
  }
  {
    examples::PlotSeries la{.name = "with attention"}, lb{.name = "without attention"};
    for (const auto& r : metrics.table().rows) {
      if (r[1]) la.x.push_back(*r[0]), la.y.push_back(*r[1]);
      if (r[2]) lb.x.push_back(*r[0]), lb.y.push_back(*r[2]);
    }
    std::vector<examples::PlotSeries> series{la};
    if (b) series.push_back(lb);
    examples::write_line_plot((out_dir / "loss.svg").string(), {.title = "translate: training loss",
                                                                .x_label = "step",
                                                                .y_label = "cross-entropy per character",
                                                                .series = series,
                                                                .log_y = true});
  }

  // The test set: beam search and greedy with attention, beam search without.
  const auto t0 = std::chrono::steady_clock::now();
  const auto hyps = translate_all(model, d.src, d.tgt, d.test_ptrs, o.beam, o.length_penalty, d.max_length);
  const double decode_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const Score beam = score(hyps, d.test_ptrs);
  const Score greedy =
      o.beam > 1
          ? score(translate_all(model, d.src, d.tgt, d.test_ptrs, 1, o.length_penalty, d.max_length), d.test_ptrs)
          : beam;
  std::optional<Score> base_score;
  std::vector<std::string> base_hyps;
  if (base) {
    base_hyps = translate_all(*base, d.src, d.tgt, d.test_ptrs, o.beam, o.length_penalty, d.max_length);
    base_score = score(base_hyps, d.test_ptrs);
  }
  std::string samples = "source\treference\tattention\tbaseline\n";
  for (std::size_t i = 0; i < d.test.size(); ++i)
    samples += fmt::format("{}\t{}\t{}\t{}\n", d.test[i].src, d.test[i].tgt, hyps[i], base ? base_hyps[i] : "");
  examples::write_file_atomic((out_dir / "translations.tsv").string(), samples, kProgram);
  for (std::size_t i = 0; i < std::min<std::size_t>(d.test.size(), static_cast<std::size_t>(o.show)); ++i) {
    write_attention_map(model, d.src, d.tgt, d.test[i], hyps[i],
                        (out_dir / fmt::format("attention_{}.svg", i)).string());
    fmt::print("  source:    {}\n  reference: {}\n  attention: {}\n{}", d.test[i].src, d.test[i].tgt, hyps[i],
               base ? fmt::format("  baseline:  {}\n", base_hyps[i]) : std::string());
  }
  for (const Trained* t : std::vector<const Trained*>{&a, b ? &*b : nullptr}) {
    if (!t) continue;
    fmt::print("{}: {:<9} {} parameters, trained in {:.1f} s, {} target characters/s\n", kProgram, t->name,
               t->parameters, t->seconds, examples::format_count(t->tokens_per_s));
  }
  fmt::print(
      "{}: test decoding with beam {}: {:.1f} s for {} sentences; greedy BLEU {:.2f}, chrF {:.2f}, exact {:.1f}%\n",
      kProgram, o.beam, decode_s, d.test.size(), greedy.bleu, greedy.chrf, 100 * greedy.exact);
  fmt::print("{}: wrote {}/metrics.csv, loss.svg, translations.tsv, attention_*.svg, attention.safetensors{}\n",
             kProgram, o.out, base ? ", baseline.safetensors" : "");
  fmt::print("{}: test BLEU {:.2f}, chrF {:.2f}, exact {:.1f}% ({} encoder, {} attention, beam {}){}; {} sentences\n",
             kProgram, beam.bleu, beam.chrf, 100 * beam.exact, o.model == "rnn" ? "BiGRU" : "Transformer", o.attention,
             o.beam,
             base_score ? fmt::format("; without attention BLEU {:.2f}, chrF {:.2f}, exact {:.1f}%", base_score->bleu,
                                      base_score->chrf, 100 * base_score->exact)
                        : std::string(),
             d.test.size());
  return examples::check_loss_fell(kProgram, o.smoke,
                                   {.first = a.first_loss, .last = a.last_loss, .first_what = "the first steps'"});
}

}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main(kProgram, [&]() -> int {
    Options o;
    CLI::App app{
        "translate: character-level translation with an attention encoder-decoder (BiGRU or Transformer "
        "encoder, GRU decoder, beam search) against one without attention; English -> Spanish Bible verses, "
        "number words -> digits, or your own TSV.",
        kProgram};
    app.get_formatter()->column_width(36);
    app.add_option("--task", o.task, "bible (English -> Spanish verses) or numbers (fr/de/es number words -> digits)")
        ->capture_default_str();
    app.add_option("--data", o.data, "TSV with a header holding the source and target columns (default: the task's)");
    app.add_option("--test", o.test, "test on this TSV (same columns) instead of a --test-fraction of --data");
    app.add_option("--src-column", o.src_column, "source column (default: en, or words for --task numbers)");
    app.add_option("--tgt-column", o.tgt_column, "target column (default: es, or digits for --task numbers)");
    app.add_option("--out", o.out, "directory for metrics.csv, loss.svg, translations.tsv, heat maps, checkpoints")
        ->capture_default_str();
    app.add_option("--model", o.model, "encoder: rnn (bidirectional GRU) or transformer")->capture_default_str();
    app.add_option("--attention", o.attention, "luong (general score) or bahdanau (additive)")->capture_default_str();
    app.add_flag("--baseline,!--no-baseline", o.baseline, "also train the model without attention (default: yes)");
    app.add_option("--max-chars", o.max_chars, "leave out pairs longer than this on either side")
        ->capture_default_str();
    app.add_option("--max-pairs", o.max_pairs, "use only the first N pairs of --data (0: all)")->capture_default_str();
    app.add_option("--embed", o.embed, "character embedding size (RNN encoder and decoder)")->capture_default_str();
    app.add_option("--hidden", o.hidden, "BiGRU size per direction; the decoder GRU has twice this")
        ->capture_default_str();
    app.add_option("--d-model", o.d_model, "Transformer encoder width")->capture_default_str();
    app.add_option("--heads", o.heads, "Transformer attention heads")->capture_default_str();
    app.add_option("--layers", o.layers, "Transformer encoder layers")->capture_default_str();
    app.add_option("--ff", o.ff, "Transformer feed-forward size")->capture_default_str();
    app.add_option("--dropout", o.dropout, "dropout")->capture_default_str();
    app.add_option("--test-fraction", o.test_fraction, "the part of --data held out for testing")
        ->capture_default_str();
    app.add_option("--val-sentences", o.val_sentences, "training sentences translated (greedy) at each evaluation")
        ->capture_default_str();
    app.add_option("--batch", o.batch, "sentence pairs per step")->capture_default_str();
    app.add_option("--steps", o.steps, "training steps (per model)")->capture_default_str();
    app.add_option("--lr", o.lr, "Adam learning rate (cosine decay to lr/10)")->capture_default_str();
    app.add_option("--clip", o.clip, "gradient norm clipping (0: off)")->capture_default_str();
    app.add_option("--sampling-k", o.sampling_k,
                   "scheduled sampling: teacher forcing with probability k/(k+exp(step/k)) (0: always)")
        ->capture_default_str();
    app.add_option("--beam", o.beam, "beam size for the test set (1: greedy)")->capture_default_str();
    app.add_option("--length-penalty", o.length_penalty, "beam scores are log p / length^this")->capture_default_str();
    app.add_option("--eval-every", o.eval_every, "validation BLEU and a checkpoint every N steps")
        ->capture_default_str();
    app.add_option("--log-every", o.log_every, "a metrics.csv row every N steps")->capture_default_str();
    app.add_option("--show", o.show, "test sentences printed with an attention heat map")->capture_default_str();
    app.add_option("--max-test", o.max_test, "test on at most N sentences (0: all)")->capture_default_str();
    app.add_option("--seed", o.seed, "random seed (initialisation, split, batches, dropout)")->capture_default_str();
    app.add_option("--threads", o.threads, "threads for BLAS and TBB (0: all cores)")->capture_default_str();
    app.add_flag("--smoke", o.smoke, "a tiny run of a few seconds (what CI runs); fails unless the loss falls");
    if (auto code = examples::parse_command_line(app, argc, argv)) return *code;
    const bool numbers = o.task == "numbers";
    const std::string dir = TRANSLATE_DATA_DIR;
    if (o.data.empty()) {
      o.data = numbers ? dir + "/numbers/numbers.tsv" : dir + "/bible_en_es/kjv_rv1909.tsv";
      if (numbers && o.test.empty()) o.test = dir + "/numbers/numbers_test.tsv";
    }
    if (o.src_column.empty()) o.src_column = numbers ? "words" : "en";
    if (o.tgt_column.empty()) o.tgt_column = numbers ? "digits" : "es";
    if (o.smoke) {
      const examples::FlagDefaults def(app);
      def("--steps", o.steps, std::int64_t{150});
      def("--max-pairs", o.max_pairs, std::int64_t{1500});
      def("--max-chars", o.max_chars, std::int64_t{numbers ? 100 : 60});
      def("--hidden", o.hidden, std::int64_t{32});
      def("--embed", o.embed, std::int64_t{16});
      def("--d-model", o.d_model, std::int64_t{32});
      def("--ff", o.ff, std::int64_t{64});
      def("--layers", o.layers, std::int64_t{1});
      def("--batch", o.batch, std::int64_t{16});
      def("--eval-every", o.eval_every, std::int64_t{40});
      def("--log-every", o.log_every, std::int64_t{10});
      def("--val-sentences", o.val_sentences, std::int64_t{16});
      def("--max-test", o.max_test, std::int64_t{24});
      def("--beam", o.beam, std::int64_t{3});
      def("--show", o.show, std::int64_t{2});
      def("--lr", o.lr, 1e-2);
      def("--out", o.out, std::string("runs/translate_smoke"));
    }
    check_options(o);
    return run(o);
  });
}
