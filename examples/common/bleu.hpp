#pragma once
// Translation metrics on a whole test set: BLEU (Papineni et al. 2002) and chrF (Popović 2015), with the
// definitions sacrebleu reports, so numbers compare with published ones of the same tokenisation.
//
//   examples::Bleu b = examples::corpus_bleu(hypotheses, references);   // b.score in [0, 100]
//   double c = examples::corpus_chrf(hypotheses, references);            // in [0, 100]
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace unroll::examples {

/// Words for BLEU: split at whitespace, with every punctuation character its own token (close to sacrebleu's
/// "13a": "Dios, el" -> "Dios" "," "el"). Case is kept. Bytes >= 0x80 (UTF-8 letters) count as letters.
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
/// points): n-gram matches summed over the corpus per order, F_beta of each order's precision and recall,
/// averaged over the orders, times 100.
double corpus_chrf(const std::vector<std::string>& hypotheses, const std::vector<std::string>& references);

}  // namespace unroll::examples
