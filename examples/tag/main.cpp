// tag: token tagging — a part-of-speech tag for every word — on the Brown corpus, or your own data in CoNLL
// form (one "token tag" per line, blank lines between sentences: named entities in BIO tags run unchanged).
// Words -> Embedding (+ optionally a character-level BiLSTM per word, for words never seen in training) ->
// a bidirectional LSTM -> per-token tag scores -> softmax per token, or a linear-chain CRF over the whole
// sentence (nn::CRF, --crf). Against a most-frequent-tag baseline (each word's commonest training tag, the
// overall commonest for unseen words). Reports token accuracy, accuracy on words unseen in training, per-tag
// accuracy (per_tag.csv), a confusion heat map of the commonest tags, and entity precision/recall/F1 when the
// tags are BIO; writes metrics.csv, loss.svg, confusion.svg, per_tag.csv and a checkpoint.
//
// Brown tags are reduced to 104 (the program's rule, tag_of below): lower case, the "fw-" prefix and the
// "-tl", "-hl", "-nc" suffixes dropped, and of a contraction's "+" parts the first ("nn+bez" -> "nn").
// Splits: every 10th sentence (in file order) is test, the one before it validation, the rest training;
// --test FILE takes the test sentences from FILE instead (all of --data then trains, but the validation tenth).
//
//   tag                                        # Brown, BiLSTM + char encoder, a few minutes on 2 cores
//   tag --crf                                  # + CRF output layer
//   tag --data train.conll --test test.conll   # your own CoNLL data (BIO tags: entity F1 too)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include <unroll/unroll.hpp>

#include "../common/cli.hpp"
#include "../common/csv.hpp"
#include "../common/data.hpp"
#include "../common/heatmap.hpp"
#include "../common/progress.hpp"
#include "../common/smoke.hpp"
#include "../common/svg_plot.hpp"

using namespace unroll;
using examples::UsageError;

#ifndef TAG_DEFAULT_DATA
#define TAG_DEFAULT_DATA "data/brown_pos/files"
#endif

namespace {
constexpr const char* kProgram = "tag";

struct Options {
  std::string data = TAG_DEFAULT_DATA;
  std::string test;             ///< test sentences from this file instead of a tenth of --data
  std::string format = "auto";  ///< auto | brown | conll
  std::string out = "runs/tag";
  std::string model = "bilstm";  ///< bilstm | transformer: the sentence encoder
  std::int64_t embed = 64, hidden = 128, char_embed = 16, char_hidden = 32;
  std::int64_t d_model = 128, heads = 4, layers = 2, ff = 256;  ///< Transformer encoder
  bool chars = true, crf = false;
  double dropout = 0.3;
  std::int64_t batch = 32, steps = 2000, max_sentences = 0;
  double lr = 3e-3, clip = 5.0;
  std::int64_t eval_every = 500, log_every = 50;
  std::uint64_t seed = 1;
  int threads = 0;
  bool smoke = false;
};

void check_options(const Options& o) {
  using examples::check_flag_range;
  UNROLL_CHECK(o.format == "auto" || o.format == "brown" || o.format == "conll", examples::UsageError,
               "{}: unknown --format; got '{}', expected auto, brown or conll", kProgram, o.format);
  check_flag_range<std::int64_t>(kProgram, "--embed", o.embed, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--hidden", o.hidden, 1, 4096);
  UNROLL_CHECK(o.model == "bilstm" || o.model == "transformer", examples::UsageError,
               "{}: unknown --model; got '{}', expected bilstm or transformer", kProgram, o.model);
  check_flag_range<std::int64_t>(kProgram, "--d-model", o.d_model, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--heads", o.heads, 1, 64);
  check_flag_range<std::int64_t>(kProgram, "--layers", o.layers, 1, 64);
  check_flag_range<std::int64_t>(kProgram, "--ff", o.ff, 1, 65536);
  UNROLL_CHECK(o.d_model % o.heads == 0, examples::UsageError,
               "{}: --d-model must be a multiple of --heads; got {} and {}", kProgram, o.d_model, o.heads);
  check_flag_range<std::int64_t>(kProgram, "--char-embed", o.char_embed, 1, 1024);
  check_flag_range<std::int64_t>(kProgram, "--char-hidden", o.char_hidden, 1, 1024);
  check_flag_range(kProgram, "--dropout", o.dropout, 0.0, 0.9);
  check_flag_range<std::int64_t>(kProgram, "--batch", o.batch, 1, 4096);
  check_flag_range<std::int64_t>(kProgram, "--steps", o.steps, 1, 10000000);
  check_flag_range<std::int64_t>(kProgram, "--max-sentences", o.max_sentences, 0, 100000000);
  check_flag_range(kProgram, "--lr", o.lr, 0.0, 1e30);  // absurd rates allowed: divergence is caught
  check_flag_range(kProgram, "--clip", o.clip, 0.0, 1e9);
  check_flag_range<std::int64_t>(kProgram, "--eval-every", o.eval_every, 1, 10000000);
  check_flag_range<std::int64_t>(kProgram, "--log-every", o.log_every, 1, 10000000);
  check_flag_range(kProgram, "--threads", o.threads, 0, 1024);
}

// ---------------------------------------------------------------------------------------------------------
// Data

struct Sentence {
  std::vector<std::string> words, tags;
};

/// A Brown tag reduced to the program's 104 (see the header comment).
std::string tag_of(std::string tag) {
  std::transform(tag.begin(), tag.end(), tag.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (tag.rfind("fw-", 0) == 0 && tag.size() > 3) tag = tag.substr(3);
  for (bool changed = true; changed;) {
    changed = false;
    for (const char* suffix : {"-tl", "-hl", "-nc"}) {
      const std::size_t n = std::char_traits<char>::length(suffix);
      if (tag.size() > n && tag.compare(tag.size() - n, n, suffix) == 0) tag.resize(tag.size() - n), changed = true;
    }
  }
  if (const std::size_t plus = tag.find('+'); plus != std::string::npos && plus > 0) tag.resize(plus);
  return tag;
}

/// Brown lines ("word/tag word/tag ...", one sentence per line) or CoNLL ("token ... tag" per line, blank lines
/// between sentences) -> sentences. `where` names the file for errors.
std::vector<Sentence> parse(const std::string& text, bool brown, const std::string& where) {
  std::vector<Sentence> out;
  std::istringstream lines(text);
  std::string line;
  std::int64_t line_no = 0;
  Sentence current;
  auto flush = [&] {
    if (!current.words.empty()) out.push_back(std::move(current));
    current = {};
  };
  while (std::getline(lines, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) f.push_back(w);
    if (brown) {
      Sentence s;
      for (const std::string& token : f) {
        const std::size_t slash = token.rfind('/');
        UNROLL_CHECK(slash != std::string::npos && slash > 0 && slash + 1 < token.size(), examples::UsageError,
                     "{}: malformed token in '{}' line {}; got '{}', expected word/tag", kProgram, where, line_no,
                     examples::printable(token));
        s.words.push_back(token.substr(0, slash));
        s.tags.push_back(tag_of(token.substr(slash + 1)));
      }
      if (!s.words.empty()) out.push_back(std::move(s));
    } else {
      if (f.empty() || f[0].rfind("-DOCSTART-", 0) == 0) {
        flush();
        continue;
      }
      UNROLL_CHECK(f.size() >= 2, examples::UsageError,
                   "{}: malformed CoNLL line in '{}' line {}; got '{}', expected a token and its tag", kProgram, where,
                   line_no, examples::printable(line));
      current.words.push_back(f.front());
      current.tags.push_back(f.back());
    }
  }
  flush();
  UNROLL_CHECK(!out.empty(), examples::UsageError, "{}: no sentences in '{}'; got none, expected {} lines", kProgram, where,
               brown ? "word/tag" : "'token tag'");
  return out;
}

/// Brown when most tokens of the first lines look like word/tag, else CoNLL.
bool looks_like_brown(const std::string& text) {
  std::istringstream in(text.substr(0, 20000));
  std::int64_t slashed = 0, tokens = 0;
  for (std::string w; in >> w;) ++tokens, slashed += w.find('/') != std::string::npos && w.back() != '/';
  return tokens > 0 && slashed * 10 >= tokens * 9;
}

std::vector<Sentence> read_sentences(const Options& o, const std::string& path, const char* flag) {
  std::vector<std::string> files;
  if (std::filesystem::is_directory(path)) {  // the Brown layout: every file in it, in name order
    for (const auto& e : std::filesystem::directory_iterator(path))
      if (e.is_regular_file() && e.path().filename().string().front() != '.') files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
    UNROLL_CHECK(!files.empty(), examples::UsageError, "{}: {} directory is empty; got '{}', expected data files", kProgram, flag,
                 path);
  } else {
    files.push_back(path);
  }
  std::vector<Sentence> all;
  for (const std::string& f : files) {
    const std::string text = examples::read_data_file(kProgram, flag, f, "tagged text file");
    const bool brown = o.format == "brown" || (o.format == "auto" && looks_like_brown(text));
    for (Sentence& s : parse(text, brown, f)) all.push_back(std::move(s));
  }
  return all;
}

struct Vocab {
  std::vector<std::string> items;
  std::unordered_map<std::string, std::int64_t> index;
  std::int64_t add(const std::string& s) {
    auto [it, fresh] = index.emplace(s, static_cast<std::int64_t>(items.size()));
    if (fresh) items.push_back(s);
    return it->second;
  }
  std::int64_t find(const std::string& s, std::int64_t fallback) const {
    const auto it = index.find(s);
    return it == index.end() ? fallback : it->second;
  }
  std::int64_t size() const { return static_cast<std::int64_t>(items.size()); }
};

struct Data {
  std::vector<Sentence> train, val, test;
  Vocab words, chars, tags;  ///< words: 0 <pad>, 1 <unk>; chars: 0 <pad>, 1 <unk>
  std::unordered_map<std::string, std::int64_t> train_counts;
};

Data load(const Options& o) {
  Data d;
  std::vector<Sentence> all = read_sentences(o, o.data, "--data");
  if (o.max_sentences > 0 && static_cast<std::int64_t>(all.size()) > o.max_sentences)
    all.resize(static_cast<std::size_t>(o.max_sentences));
  for (std::size_t i = 0; i < all.size(); ++i) {
    std::vector<Sentence>& to = i % 10 == 8 ? d.val : (i % 10 == 9 && o.test.empty()) ? d.test : d.train;
    to.push_back(std::move(all[i]));
  }
  if (!o.test.empty()) d.test = read_sentences(o, o.test, "--test");
  UNROLL_CHECK(d.train.size() >= 2 && !d.val.empty() && !d.test.empty(), examples::UsageError,
               "{}: too few sentences; got {} for training, {} for validation and {} for testing, expected at least "
               "2, 1 and 1 (give more data)",
               kProgram, d.train.size(), d.val.size(), d.test.size());
  d.words.add("<pad>"), d.words.add("<unk>"), d.chars.add("<pad>"), d.chars.add("<unk>");
  for (const Sentence& s : d.train)
    for (std::size_t i = 0; i < s.words.size(); ++i) {
      ++d.train_counts[s.words[i]];
      d.tags.add(s.tags[i]);
      for (const char c : s.words[i]) d.chars.add(std::string(1, c));
    }
  // Words seen twice or more get their own embedding; rarer ones share <unk> (the char encoder tells them apart).
  for (const Sentence& s : d.train)
    for (const std::string& w : s.words)
      if (d.train_counts[w] >= 2) d.words.add(w);
  return d;
}

struct Batch {
  Tensor words, tags;                           ///< [T, B] int64 (tags: 0 past a sentence's end)
  Tensor chars;                                 ///< [L, W] int64: the characters of the batch's W distinct words
  std::vector<std::int64_t> char_lengths;       ///< per distinct word
  Tensor word_of_token;                         ///< [T * B] int64: each token's distinct word (0 past the end)
  std::vector<std::int64_t> lengths;            ///< per sentence
  std::int64_t tokens = 0;
};

Batch make_batch(const Data& d, const std::vector<Sentence>& data, const std::vector<std::size_t>& which) {
  Batch b;
  std::int64_t T = 0;
  for (const std::size_t i : which) T = std::max<std::int64_t>(T, static_cast<std::int64_t>(data[i].words.size()));
  const auto B = static_cast<std::int64_t>(which.size());
  std::vector<std::int64_t> w(static_cast<std::size_t>(T * B), 0), y(static_cast<std::size_t>(T * B), 0),
      token_word(static_cast<std::size_t>(T * B), 0);
  std::unordered_map<std::string, std::int64_t> distinct;
  std::vector<const std::string*> forms;
  for (std::int64_t j = 0; j < B; ++j) {
    const Sentence& s = data[which[static_cast<std::size_t>(j)]];
    for (std::size_t t = 0; t < s.words.size(); ++t) {
      const std::size_t at = t * static_cast<std::size_t>(B) + static_cast<std::size_t>(j);
      w[at] = d.words.find(s.words[t], 1);
      y[at] = d.tags.find(s.tags[t], 0);  // a tag never seen in training: counted wrong whatever is predicted
      auto [it, fresh] = distinct.emplace(s.words[t], static_cast<std::int64_t>(forms.size()));
      if (fresh) forms.push_back(&it->first);
      token_word[at] = it->second;
    }
    b.lengths.push_back(static_cast<std::int64_t>(s.words.size()));
    b.tokens += static_cast<std::int64_t>(s.words.size());
  }
  std::int64_t L = 1;
  for (const std::string* f : forms) L = std::max<std::int64_t>(L, static_cast<std::int64_t>(f->size()));
  const auto W = static_cast<std::int64_t>(forms.size());
  std::vector<std::int64_t> c(static_cast<std::size_t>(L * W), 0);
  for (std::int64_t k = 0; k < W; ++k) {
    const std::string& f = *forms[static_cast<std::size_t>(k)];
    for (std::size_t i = 0; i < f.size(); ++i)
      c[i * static_cast<std::size_t>(W) + static_cast<std::size_t>(k)] = d.chars.find(std::string(1, f[i]), 1);
    b.char_lengths.push_back(std::max<std::int64_t>(1, static_cast<std::int64_t>(f.size())));
  }
  b.words = index_tensor(w, {T, B});
  b.tags = index_tensor(y, {T, B});
  b.chars = index_tensor(c, {L, W});
  b.word_of_token = index_tensor(token_word, {T * B});
  return b;
}

// ---------------------------------------------------------------------------------------------------------
// The model

/// Batch -> per-token tag scores [T, B, K]; the loss (token cross-entropy or CRF nll) and the prediction.
class Tagger : public nn::Module {
 public:
  Tagger(const Options& o, const Data& d)
      : dropout_(o.dropout),
        embed(d.words.size(), o.embed, /*padding_idx=*/0),
        head(o.model == "transformer" ? o.d_model : 2 * o.hidden, d.tags.size()) {
    register_module("embed", embed);
    std::int64_t in = o.embed;
    if (o.chars) {
      char_embed = std::make_unique<nn::Embedding>(d.chars.size(), o.char_embed, 0);
      char_rnn = std::make_unique<nn::LSTM>(
          nn::RecurrentOptions{.input_size = o.char_embed, .hidden_size = o.char_hidden, .bidirectional = true});
      register_module("char_embed", *char_embed);
      register_module("char_rnn", *char_rnn);
      in += 2 * o.char_hidden;
    }
    if (o.model == "transformer") {  // the word vectors projected to d_model, sinusoidal positions, pre-norm layers
      proj = std::make_unique<nn::Linear>(in, o.d_model);
      pos = std::make_unique<nn::SinusoidalPositionalEncoding>(o.d_model, 4096);
      transformer = std::make_unique<nn::TransformerEncoder>(
          nn::TransformerEncoderLayerOptions{.d_model = o.d_model, .nhead = o.heads, .dim_feedforward = o.ff,
                                             .dropout = o.dropout, .activation = nn::Activation::relu,
                                             .layer_norm_eps = 1e-5, .batch_first = false, .norm_first = true},
          o.layers, /*final_norm=*/true);
      register_module("proj", *proj);
      register_module("encoder", *transformer);
    } else {
      rnn = std::make_unique<nn::LSTM>(nn::RecurrentOptions{.input_size = in, .hidden_size = o.hidden, .bidirectional = true});
      register_module("rnn", *rnn);
    }
    register_module("head", head);
    if (o.crf) register_module("crf", *(crf = std::make_unique<nn::CRF>(d.tags.size())));
  }

  Tensor emissions(const Batch& b) const {
    const std::int64_t T = b.words.size(0), B = b.words.size(1);
    Tensor x = embed(b.words);  // [T, B, E]
    if (char_rnn) {
      // Each distinct word's characters read both ways; the two final states are its spelling's vector.
      const Tensor h_n = (*char_rnn)((*char_embed)(b.chars), {}, {}, b.char_lengths).h_n;  // [2, W, C]
      const Tensor spelled = cat({h_n[0], h_n[1]}, 1);                                      // [W, 2C]
      x = cat({x, reshape(index_select(spelled, 0, b.word_of_token), {T, B, spelled.size(1)})}, 2);
    }
    x = dropout(x, dropout_, is_training());
    Tensor h;  // [T, B, width]
    if (transformer) {
      std::vector<std::int64_t> pad(static_cast<std::size_t>(B * T), 0);  // [B, T]: 1 past each sentence's end
      for (std::int64_t j = 0; j < B; ++j)
        for (std::int64_t t = b.lengths[static_cast<std::size_t>(j)]; t < T; ++t) pad[static_cast<std::size_t>(j * T + t)] = 1;
      h = (*transformer)((*pos)((*proj)(x), /*batch_first=*/false), {}, index_tensor(pad, {B, T}));
    } else {
      h = (*rnn)(x, {}, {}, b.lengths).output;  // [T, B, 2H], zero past each sentence's end
    }
    return head(dropout(h, dropout_, is_training()));
  }

  /// The loss's SUM over the batch's tokens (cross-entropy) or sentences (CRF nll).
  Tensor loss_sum(const Batch& b) const {
    const Tensor e = emissions(b);
    if (crf) return crf->nll(e, b.tags, b.lengths, Reduction::sum);
    const std::int64_t K = e.size(2);
    std::vector<std::int64_t> target = b.tags.to_vector<std::int64_t>();
    const std::int64_t B = b.words.size(1);
    for (std::size_t i = 0; i < target.size(); ++i)  // padding: ignored
      if (static_cast<std::int64_t>(i) / B >= b.lengths[i % static_cast<std::size_t>(B)]) target[i] = -100;
    return cross_entropy(reshape(e, {-1, K}), index_tensor(target, {static_cast<std::int64_t>(target.size())}),
                         Reduction::sum);
  }

  /// Predicted tags per sentence.
  std::vector<std::vector<std::int64_t>> predict(const Batch& b) const {
    const Tensor e = emissions(b);
    if (crf) return crf->decode(e, b.lengths);
    const std::vector<std::int64_t> best = argmax(e, 2).to_vector<std::int64_t>();
    const std::int64_t B = b.words.size(1);
    std::vector<std::vector<std::int64_t>> out(static_cast<std::size_t>(B));
    for (std::int64_t j = 0; j < B; ++j)
      for (std::int64_t t = 0; t < b.lengths[static_cast<std::size_t>(j)]; ++t)
        out[static_cast<std::size_t>(j)].push_back(best[static_cast<std::size_t>(t * B + j)]);
    return out;
  }

 private:
  double dropout_;

 public:
  nn::Embedding embed;
  std::unique_ptr<nn::Embedding> char_embed;
  std::unique_ptr<nn::LSTM> char_rnn, rnn;
  std::unique_ptr<nn::Linear> proj;
  std::unique_ptr<nn::SinusoidalPositionalEncoding> pos;
  std::unique_ptr<nn::TransformerEncoder> transformer;
  nn::Linear head;
  std::unique_ptr<nn::CRF> crf;
};

// ---------------------------------------------------------------------------------------------------------
// Evaluation

struct Scores {
  std::int64_t tokens = 0, right = 0, unseen = 0, unseen_right = 0;
  std::vector<std::int64_t> per_tag_total, per_tag_right, confusion;  ///< confusion: K x K, row = true tag
  // Entities (BIO tags): true, predicted, and exactly matched spans.
  std::int64_t gold_entities = 0, predicted_entities = 0, matched_entities = 0;
  double accuracy() const { return tokens > 0 ? static_cast<double>(right) / static_cast<double>(tokens) : NAN; }
  double unseen_accuracy() const {
    return unseen > 0 ? static_cast<double>(unseen_right) / static_cast<double>(unseen) : NAN;
  }
};

/// Spans (begin, end, type) of BIO tags; an I- without its B- starts a span (as conlleval does).
std::vector<std::tuple<std::size_t, std::size_t, std::string>> spans(const std::vector<std::string>& tags) {
  std::vector<std::tuple<std::size_t, std::size_t, std::string>> out;
  std::size_t begin = 0;
  std::string type;
  for (std::size_t i = 0; i <= tags.size(); ++i) {
    const std::string& t = i < tags.size() ? tags[i] : std::string("O");
    const bool inside = t.size() > 2 && t[0] == 'I' && t[1] == '-' && t.substr(2) == type && !type.empty();
    if (!type.empty() && !inside) out.emplace_back(begin, i, type), type.clear();
    if (t.size() > 2 && (t[0] == 'B' || t[0] == 'I') && t[1] == '-' && type.empty()) begin = i, type = t.substr(2);
  }
  return out;
}

bool is_bio(const Vocab& tags) {
  bool any = false;
  for (const std::string& t : tags.items) {
    if (t == "O") continue;
    if (t.size() < 3 || (t[0] != 'B' && t[0] != 'I') || t[1] != '-') return false;
    any = true;
  }
  return any;
}

void add_sentence(Scores& s, const Data& d, const Sentence& sent, const std::vector<std::int64_t>& pred, bool bio) {
  const std::int64_t K = d.tags.size();
  std::vector<std::string> gold_tags, pred_tags;
  for (std::size_t t = 0; t < sent.words.size(); ++t) {
    const std::int64_t y = d.tags.find(sent.tags[t], -1), p = pred[t];
    const bool ok = y == p;
    ++s.tokens, s.right += ok;
    if (!d.train_counts.count(sent.words[t])) ++s.unseen, s.unseen_right += ok;
    if (y >= 0) {
      ++s.per_tag_total[static_cast<std::size_t>(y)], s.per_tag_right[static_cast<std::size_t>(y)] += ok;
      ++s.confusion[static_cast<std::size_t>(y * K + p)];
    }
    gold_tags.push_back(sent.tags[t]);
    pred_tags.push_back(d.tags.items[static_cast<std::size_t>(p)]);
  }
  if (bio) {
    const auto g = spans(gold_tags), q = spans(pred_tags);
    s.gold_entities += static_cast<std::int64_t>(g.size()), s.predicted_entities += static_cast<std::int64_t>(q.size());
    for (const auto& span : q) s.matched_entities += std::find(g.begin(), g.end(), span) != g.end();
  }
}

Scores new_scores(const Data& d) {
  Scores s;
  const auto K = static_cast<std::size_t>(d.tags.size());
  s.per_tag_total.assign(K, 0), s.per_tag_right.assign(K, 0), s.confusion.assign(K * K, 0);
  return s;
}

Scores evaluate(Tagger& model, const Data& d, const std::vector<Sentence>& data, bool bio) {
  NoGradGuard no_grad;
  model.eval();
  Scores s = new_scores(d);
  for (std::size_t i = 0; i < data.size(); i += 256) {
    std::vector<std::size_t> which(std::min<std::size_t>(256, data.size() - i));
    std::iota(which.begin(), which.end(), i);
    const auto pred = model.predict(make_batch(d, data, which));
    for (std::size_t j = 0; j < which.size(); ++j) add_sentence(s, d, data[which[j]], pred[j], bio);
  }
  model.train();
  return s;
}

/// The baseline: each word's commonest training tag; the overall commonest for words never seen.
Scores baseline(const Data& d, bool bio) {
  std::unordered_map<std::string, std::map<std::int64_t, std::int64_t>> counts;
  std::vector<std::int64_t> overall(static_cast<std::size_t>(d.tags.size()), 0);
  for (const Sentence& s : d.train)
    for (std::size_t t = 0; t < s.words.size(); ++t) {
      const std::int64_t y = d.tags.find(s.tags[t], 0);
      ++counts[s.words[t]][y], ++overall[static_cast<std::size_t>(y)];
    }
  const auto commonest = static_cast<std::int64_t>(std::max_element(overall.begin(), overall.end()) - overall.begin());
  Scores sc = new_scores(d);
  for (const Sentence& s : d.test) {
    std::vector<std::int64_t> pred;
    for (const std::string& w : s.words) {
      const auto it = counts.find(w);
      std::int64_t best = commonest, n = -1;
      if (it != counts.end())
        for (const auto& [tag, c] : it->second)
          if (c > n) best = tag, n = c;
      pred.push_back(best);
    }
    add_sentence(sc, d, s, pred, bio);
  }
  return sc;
}

std::string entity_line(const Scores& s) {
  const double p = s.predicted_entities > 0 ? static_cast<double>(s.matched_entities) / s.predicted_entities : 0;
  const double r = s.gold_entities > 0 ? static_cast<double>(s.matched_entities) / s.gold_entities : 0;
  const double f = p + r > 0 ? 2 * p * r / (p + r) : 0;
  return fmt::format("entity precision {:.1f}%, recall {:.1f}%, F1 {:.1f}", 100 * p, 100 * r, 100 * f);
}

// ---------------------------------------------------------------------------------------------------------

int run(const Options& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  const auto t_load = std::chrono::steady_clock::now();
  Data d = load(o);
  const bool bio = is_bio(d.tags);
  std::int64_t train_tokens = 0;
  for (const Sentence& s : d.train) train_tokens += static_cast<std::int64_t>(s.words.size());
  fmt::print("{}: {} sentences ({} tokens) for training, {} validation, {} test{}; {} tags{}, {} words, {} characters "
             "(read in {:.1f} s)\n",
             kProgram, d.train.size(), train_tokens, d.val.size(), d.test.size(),
             o.test.empty() ? "" : fmt::format(" (from {})", o.test), d.tags.size(), bio ? " (BIO)" : "",
             d.words.size(), d.chars.size(),
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count());

  manual_seed(o.seed);
  Tagger model(o, d);
  optim::Adam opt(model.parameters(), {.lr = o.lr});
  optim::CosineAnnealingLR schedule(opt, o.steps, o.lr / 10);
  Generator gen(o.seed ^ 0x9e3779b97f4a7c15ull);
  const std::string encoder = o.model == "transformer"
                                  ? fmt::format("Transformer {} x {} layers, {} heads", o.d_model, o.layers, o.heads)
                                  : fmt::format("BiLSTM {} x 2", o.hidden);
  fmt::print("{}: {}{}{}, {} parameters; batch {} sentences, lr {}\n", kProgram, encoder,
             o.chars ? fmt::format(", char BiLSTM {} x 2", o.char_hidden) : "", o.crf ? ", CRF" : "",
             model.num_parameters(), o.batch, o.lr);

  std::error_code ec;
  std::filesystem::create_directories(o.out, ec);
  UNROLL_CHECK(!ec, examples::UsageError, "{}: cannot create --out directory; got '{}' ({}), expected a writable path",
               kProgram, o.out, ec.message());
  const std::filesystem::path out_dir(o.out);
  examples::CsvWriter metrics((out_dir / "metrics.csv").string(),
                              {"step", "train_loss", "val_accuracy", "tokens_per_s", "lr"});
  const auto plot = [&] {
    examples::PlotSeries train{.name = "train loss"}, val{.name = "validation error", .markers = true};
    for (const auto& r : metrics.table().rows) {
      if (r[1]) train.x.push_back(*r[0]), train.y.push_back(*r[1]);
      if (r[2]) val.x.push_back(*r[0]), val.y.push_back(1 - *r[2]);
    }
    examples::write_line_plot((out_dir / "loss.svg").string(),
                              {.title = fmt::format("tag: {}{}{}", o.model == "transformer" ? "Transformer" : "BiLSTM",
                                                     o.chars ? " + chars" : "", o.crf ? " + CRF" : ""),
                               .x_label = "step",
                               .y_label = "loss per token / validation error",
                               .series = {train, val},
                               .log_y = true});
  };

  // tokens per step: the batch's sentences times the mean training sentence length (batches vary)
  const std::int64_t tokens_per_step = std::max<std::int64_t>(
      1, o.batch * train_tokens / static_cast<std::int64_t>(d.train.size()));
  examples::Progress progress(
      {.total_steps = o.steps, .first_step = 0, .tokens_per_step = tokens_per_step, .plain_every = o.log_every});
  const std::vector<Tensor> params = model.parameters();
  examples::EpochSampler sampler(d.train.size(), gen);
  examples::DivergenceWatch divergence(
      {.program = kProgram,
       .ceiling = INFINITY,
       .patience = 1,
       .hint = fmt::format("try a smaller --lr (now {}) or a tighter --clip (now {})", o.lr, o.clip)});
  double interval_loss = 0, smooth = NAN, first_interval = NAN, last_interval = NAN, seconds = 0, total_seconds = 0;
  std::int64_t interval_steps = 0, interval_tokens = 0, total_tokens = 0;
  for (std::int64_t step = 1; step <= o.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<std::size_t> which = sampler.next_batch(o.batch);
    const Batch b = make_batch(d, d.train, which);
    // Per token (cross-entropy) or per sentence (CRF), the batch's mean: each shard of sentences (on its own
    // thread, autograd::sharded_backward) returns its part of the sum over the whole batch.
    const double per = static_cast<double>(o.crf ? static_cast<std::int64_t>(which.size()) : b.tokens);
    const double l = autograd::sharded_backward(
        static_cast<std::int64_t>(which.size()),
        [&](const autograd::Shard& s) {
          const std::vector<std::size_t> part(which.begin() + s.begin, which.begin() + s.end);
          return model.loss_sum(make_batch(d, d.train, part)) / per;
        },
        {.sum_loss = true});
    divergence.check(step, l, [&] { return examples::locate_non_finite(model, [&] { return model.loss_sum(b) / per; }); });
    optim::clip_grad_norm_(params, o.clip > 0 ? o.clip : INFINITY);
    opt.step();
    opt.zero_grad();
    schedule.step();
    const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    seconds += took, total_seconds += took, total_tokens += b.tokens;
    smooth = std::isnan(smooth) ? l : 0.95 * smooth + 0.05 * l;
    interval_loss += l, ++interval_steps, interval_tokens += b.tokens;
    progress.update(step, smooth, fmt::format("lr {:.2e}", opt.lr()));
    const bool eval_now = step % o.eval_every == 0 || step == o.steps;
    if (eval_now || step % o.log_every == 0) {
      std::optional<double> val;
      if (eval_now) {
        val = evaluate(model, d, d.val, bio).accuracy();
        progress.print_line(fmt::format("step {:>{}}  validation accuracy {:.2f}%", step,
                                        fmt::formatted_size("{}", o.steps), 100 * *val));
        Checkpoint c{model.state_dict(), opt.state_dict(), schedule.state_dict(), step, default_generator().state(), {}, {}};
        c.extra["tag.tags"] = fmt::format("{}", fmt::join(d.tags.items, " "));
        save_checkpoint((out_dir / "checkpoint.safetensors").string(), c);
      }
      last_interval = interval_loss / static_cast<double>(interval_steps);
      if (std::isnan(first_interval)) first_interval = last_interval;
      metrics.row({static_cast<double>(step), last_interval, val, static_cast<double>(interval_tokens) / seconds, opt.lr()});
      interval_loss = 0, interval_steps = 0, interval_tokens = 0, seconds = 0;
      plot();
    }
  }
  progress.finish();

  const Scores test = evaluate(model, d, d.test, bio), base = baseline(d, bio);
  // Per-tag accuracy, and the confusion among the 20 commonest test tags.
  {
    std::string per_tag = "tag,test_tokens,accuracy,baseline_accuracy\n";
    std::vector<std::size_t> by_count(static_cast<std::size_t>(d.tags.size()));
    std::iota(by_count.begin(), by_count.end(), std::size_t{0});
    std::stable_sort(by_count.begin(), by_count.end(),
                     [&](std::size_t a, std::size_t b) { return test.per_tag_total[a] > test.per_tag_total[b]; });
    for (const std::size_t k : by_count) {
      if (test.per_tag_total[k] == 0) continue;
      const auto n = static_cast<double>(test.per_tag_total[k]);
      per_tag += fmt::format("\"{}\",{},{},{}\n", d.tags.items[k], test.per_tag_total[k],
                             static_cast<double>(test.per_tag_right[k]) / n, static_cast<double>(base.per_tag_right[k]) / n);
    }
    examples::write_file_atomic((out_dir / "per_tag.csv").string(), per_tag, kProgram);
    const std::size_t shown = std::min<std::size_t>(20, by_count.size());
    examples::Heatmap map{.title = "tag: test confusion, commonest tags (row: true; share of the row)",
                          .x_label = "predicted",
                          .y_label = "true"};
    for (std::size_t r = 0; r < shown; ++r) map.row_labels.push_back(d.tags.items[by_count[r]]);
    map.col_labels = map.row_labels;
    const auto K = static_cast<std::size_t>(d.tags.size());
    for (std::size_t r = 0; r < shown; ++r)
      for (std::size_t c = 0; c < shown; ++c) {
        const double row = static_cast<double>(std::max<std::int64_t>(1, test.per_tag_total[by_count[r]]));
        map.values.push_back(static_cast<double>(test.confusion[by_count[r] * K + by_count[c]]) / row);
      }
    examples::write_heatmap((out_dir / "confusion.svg").string(), map);
  }
  fmt::print("{}: {} steps in {} ({} training), {} tokens/s\n", kProgram, o.steps,
             examples::format_duration(progress.elapsed_seconds()), examples::format_duration(total_seconds),
             examples::format_count(static_cast<double>(total_tokens) / total_seconds));
  fmt::print("{}: baseline (most frequent tag) test accuracy {:.2f}%, unseen words {:.2f}%{}\n", kProgram,
             100 * base.accuracy(), 100 * base.unseen_accuracy(), bio ? "; " + entity_line(base) : "");
  fmt::print("{}: wrote {}/metrics.csv, loss.svg, confusion.svg, per_tag.csv, checkpoint.safetensors\n", kProgram, o.out);
  // The last line: the test metrics.
  fmt::print("{}: test accuracy {:.2f}% ({} tokens), unseen words {:.2f}% ({}){}; baseline {:.2f}%\n", kProgram,
             100 * test.accuracy(), test.tokens, 100 * test.unseen_accuracy(), test.unseen,
             bio ? "; " + entity_line(test) : "", 100 * base.accuracy());
  const std::string first_what = fmt::format("the first {} steps'", o.log_every);
  return examples::check_loss_fell(kProgram, o.smoke,
                                   {.first = first_interval, .last = last_interval, .first_what = first_what});
}
}  // namespace

int main(int argc, char** argv) {
  return examples::guarded_main(kProgram, [&]() -> int {
    Options o;
    CLI::App app{"tag: part-of-speech tagging on the Brown corpus (or named entities in your CoNLL file) with a "
                 "BiLSTM, an optional character-level word encoder and an optional CRF output layer.",
                 kProgram};
    app.get_formatter()->column_width(34);
    app.add_option("--data", o.data, "a directory of Brown files (word/tag), or one Brown or CoNLL file")
        ->capture_default_str();
    app.add_option("--test", o.test, "test sentences from this file (else every 10th sentence of --data)");
    app.add_option("--format", o.format, "auto (from the content) | brown | conll")->capture_default_str();
    app.add_option("--out", o.out, "directory for metrics.csv, loss.svg, confusion.svg, per_tag.csv")->capture_default_str();
    app.add_option("--embed", o.embed, "word embedding size")->capture_default_str();
    app.add_option("--model", o.model, "sentence encoder: bilstm or transformer")->capture_default_str();
    app.add_option("--hidden", o.hidden, "BiLSTM hidden size per direction")->capture_default_str();
    app.add_option("--d-model", o.d_model, "Transformer width")->capture_default_str();
    app.add_option("--heads", o.heads, "Transformer attention heads")->capture_default_str();
    app.add_option("--layers", o.layers, "Transformer encoder layers (pre-norm)")->capture_default_str();
    app.add_option("--ff", o.ff, "Transformer feed-forward size")->capture_default_str();
    app.add_option("--chars", o.chars, "character-level word encoder (a BiLSTM over each word's characters)")
        ->capture_default_str();
    app.add_option("--char-embed", o.char_embed, "character embedding size")->capture_default_str();
    app.add_option("--char-hidden", o.char_hidden, "character BiLSTM hidden size per direction")->capture_default_str();
    app.add_flag("--crf", o.crf, "a linear-chain CRF output layer (nn::CRF) instead of a softmax per token");
    app.add_option("--dropout", o.dropout, "dropout on the BiLSTM's input and output")->capture_default_str();
    app.add_option("--batch", o.batch, "sentences per step")->capture_default_str();
    app.add_option("--steps", o.steps, "training steps")->capture_default_str();
    app.add_option("--max-sentences", o.max_sentences, "use only the first N sentences of --data (0: all)")
        ->capture_default_str();
    app.add_option("--lr", o.lr, "Adam learning rate (cosine decay to lr/10)")->capture_default_str();
    app.add_option("--clip", o.clip, "gradient norm clipping (0: off)")->capture_default_str();
    app.add_option("--eval-every", o.eval_every, "validation accuracy (and a checkpoint) every N steps")
        ->capture_default_str();
    app.add_option("--log-every", o.log_every, "metrics.csv row (and a progress line when piped) every N steps")
        ->capture_default_str();
    app.add_option("--seed", o.seed, "random seed (initialisation, batches, dropout)")->capture_default_str();
    app.add_option("--threads", o.threads, "threads for BLAS and TBB (0: all cores)")->capture_default_str();
    app.add_flag("--smoke", o.smoke, "a tiny run of a few seconds (what CI runs); fails unless the loss falls");
    if (auto code = examples::parse_command_line(app, argc, argv)) return *code;
    if (o.smoke) {  // tiny defaults; flags given explicitly still win
      const examples::FlagDefaults def(app);
      def("--max-sentences", o.max_sentences, std::int64_t{3000});
      def("--embed", o.embed, std::int64_t{32});
      def("--hidden", o.hidden, std::int64_t{32});
      def("--char-hidden", o.char_hidden, std::int64_t{16});
      def("--steps", o.steps, std::int64_t{120});
      def("--eval-every", o.eval_every, std::int64_t{60});
      def("--log-every", o.log_every, std::int64_t{20});
      def("--lr", o.lr, 1e-2);
      def("--out", o.out, std::string("runs/tag_smoke"));
    }
    check_options(o);
    return run(o);
  });
}
