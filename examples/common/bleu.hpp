#pragma once
// Translation metrics on a whole test set: BLEU (Papineni et al. 2002) and chrF (Popović 2015), as sacrebleu
// computes them with `--smooth-method none` (BLEU) and its defaults (chrF). The word tokeniser is simpler than
// sacrebleu's "13a": it also splits apostrophes, hyphens and the points of decimal numbers ("don't" -> don ' t),
// so BLEU compares with other numbers from this code, not with published scores.
//
//   examples::Bleu b = examples::corpus_bleu(hypotheses, references);   // b.score in [0, 100]
//   double c = examples::corpus_chrf(hypotheses, references);            // in [0, 100]
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace unroll::examples {

/// Bytes in the UTF-8 character that starts at text[i]: 1 to 4, or 1 for a byte that does not start a
/// well-formed sequence (a stray continuation byte, a truncated or Latin-1 character).
std::size_t utf8_length(std::string_view text, std::size_t i);

/// Words for BLEU: split at whitespace, with every punctuation character its own token ("Dios, el" -> "Dios" ","
/// "el"). Case is kept. Bytes >= 0x80 (UTF-8 letters) count as letters.
std::vector<std::string> bleu_tokens(const std::string& text);

struct Bleu {
  double score = 0;                    ///< 100 * BP * exp(mean log p_n), 0 if some p_n is 0
  std::array<double, 4> precisions{};  ///< modified n-gram precisions p_1..p_4, in [0, 1]
  double brevity_penalty = 0;          ///< min(1, exp(1 - ref_length / hyp_length))
  std::int64_t hyp_length = 0, ref_length = 0;
};

/// Corpus BLEU-4 with one reference per sentence: clipped n-gram counts summed over the corpus, uniform weights,
/// no smoothing. ValueError if the two lists differ in length or are empty.
Bleu corpus_bleu(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references);

/// Corpus chrF (beta = 2, character n-grams of order 1..6, whitespace removed, characters as UTF-8 code
/// points): n-gram matches summed over the corpus per order; precision and recall averaged over the orders
/// (those both sides reach), then F_beta of the two averages, times 100 — sacrebleu's CHRF().
double corpus_chrf(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references);

}  // namespace unroll::examples
