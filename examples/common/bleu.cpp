#include "bleu.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>

#include <unroll/core/error.hpp>

namespace unroll::examples {
namespace {

void check_pairs(const char* where, const std::vector<std::string>& hyps, const std::vector<std::string>& refs) {
  UNROLL_CHECK(!hyps.empty() && hyps.size() == refs.size(), ValueError,
               "{}: need one reference per hypothesis; got {} hypotheses and {} references", where, hyps.size(),
               refs.size());
}

// Counts of every n-gram (joined with '\x1f', a byte that no token holds) of order n.
template <class Item>
std::map<std::string, std::int64_t> ngrams(const std::vector<Item>& items, std::size_t n) {
  std::map<std::string, std::int64_t> out;
  for (std::size_t i = 0; i + n <= items.size(); ++i) {
    std::string key;
    for (std::size_t k = 0; k < n; ++k) {
      if (k) key += '\x1f';
      key += items[i + k];
    }
    ++out[key];
  }
  return out;
}

// Matches (clipped by the reference's counts) and the hypothesis's and reference's totals of one order.
struct Counts {
  std::int64_t match = 0, hyp = 0, ref = 0;
};
template <class Item>
Counts count_order(const std::vector<Item>& hyp, const std::vector<Item>& ref, std::size_t n) {
  const auto h = ngrams(hyp, n), r = ngrams(ref, n);
  Counts c;
  for (const auto& [g, k] : h) {
    c.hyp += k;
    const auto it = r.find(g);
    if (it != r.end()) c.match += std::min(k, it->second);
  }
  for (const auto& [g, k] : r) c.ref += k;
  return c;
}

// UTF-8 code points without whitespace, each as its own string (a byte that does not start a well-formed
// sequence counts as one character).
std::vector<std::string> characters(const std::string& text) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t len = utf8_length(text, i);
    if (!(len == 1 && std::isspace(static_cast<unsigned char>(text[i])))) out.push_back(text.substr(i, len));
    i += len;
  }
  return out;
}

}  // namespace

std::size_t utf8_length(std::string_view text, std::size_t i) {
  const auto c = static_cast<unsigned char>(text[i]);
  const std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (len == 0 || i + len > text.size()) return 1;
  for (std::size_t k = 1; k < len; ++k)
    if ((static_cast<unsigned char>(text[i + k]) & 0xc0) != 0x80) return 1;
  return len;
}

std::vector<std::string> bleu_tokens(const std::string& text) {
  std::vector<std::string> out;
  std::string word;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c >= 0x80) {
      word += ch;
      continue;
    }
    if (!word.empty()) out.push_back(word), word.clear();
    if (!std::isspace(c)) out.emplace_back(1, ch);
  }
  if (!word.empty()) out.push_back(word);
  return out;
}

Bleu corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::string>& refs) {
  check_pairs("corpus_bleu", hyps, refs);
  std::array<std::int64_t, 4> match{}, total{};
  Bleu b;
  for (std::size_t i = 0; i < hyps.size(); ++i) {
    const auto h = bleu_tokens(hyps[i]), r = bleu_tokens(refs[i]);
    b.hyp_length += static_cast<std::int64_t>(h.size());
    b.ref_length += static_cast<std::int64_t>(r.size());
    for (std::size_t n = 1; n <= 4; ++n) {
      const Counts c = count_order(h, r, n);
      match[n - 1] += c.match;
      total[n - 1] += c.hyp;
    }
  }
  double log_sum = 0;
  bool zero = false;
  for (std::size_t n = 0; n < 4; ++n) {
    b.precisions[n] = total[n] > 0 ? static_cast<double>(match[n]) / static_cast<double>(total[n]) : 0.0;
    if (b.precisions[n] == 0)
      zero = true;
    else
      log_sum += std::log(b.precisions[n]);
  }
  b.brevity_penalty = b.hyp_length == 0 ? 0.0
                      : b.hyp_length >= b.ref_length
                          ? 1.0
                          : std::exp(1.0 - static_cast<double>(b.ref_length) / static_cast<double>(b.hyp_length));
  b.score = zero ? 0.0 : 100.0 * b.brevity_penalty * std::exp(log_sum / 4.0);
  return b;
}

double corpus_chrf(const std::vector<std::string>& hyps, const std::vector<std::string>& refs) {
  check_pairs("corpus_chrf", hyps, refs);
  constexpr std::size_t kOrders = 6;
  constexpr double kBeta2 = 4.0;  // beta = 2: recall weighs twice as much as precision
  std::array<Counts, kOrders> sum{};
  for (std::size_t i = 0; i < hyps.size(); ++i) {
    const auto h = characters(hyps[i]), r = characters(refs[i]);
    for (std::size_t n = 1; n <= kOrders; ++n) {
      const Counts c = count_order(h, r, n);
      sum[n - 1].match += c.match, sum[n - 1].hyp += c.hyp, sum[n - 1].ref += c.ref;
    }
  }
  // sacrebleu's definition: precision and recall averaged over the orders both sides have n-grams of, then one
  // F-score of the averages.
  double precision = 0, recall = 0;
  int orders = 0;
  for (const Counts& c : sum) {
    if (c.hyp == 0 || c.ref == 0) continue;  // an order neither side is long enough for does not count
    ++orders;
    precision += static_cast<double>(c.match) / static_cast<double>(c.hyp);
    recall += static_cast<double>(c.match) / static_cast<double>(c.ref);
  }
  if (orders == 0) return 0.0;
  precision /= orders, recall /= orders;
  return precision + recall > 0 ? 100.0 * (1 + kBeta2) * precision * recall / (kBeta2 * precision + recall) : 0.0;
}

}  // namespace unroll::examples
