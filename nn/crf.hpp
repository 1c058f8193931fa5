#pragma once
// A linear-chain conditional random field (Lafferty et al. 2001): the output layer of a tagger that scores
// whole tag sequences instead of one tag at a time, so it can learn that I-PER does not follow B-LOC.
//
//   nn::CRF crf(num_tags);
//   Tensor emissions = head(bilstm(x).output);                 // [T, B, K] per-token tag scores
//   Tensor loss = crf.nll(emissions, tags, lengths);           // -log p(tags | x), mean over sequences
//   auto best = crf.decode(emissions, lengths);                // Viterbi: one tag sequence per row
//
// The score of tags y_0..y_{n-1} (n = the row's length) is
//   start[y_0] + sum_t emissions[t, y_t] + sum_{t>0} transitions[y_{t-1}, y_t] + end[y_{n-1}],
// p(y | x) = exp(score(y)) / Z with Z summed over all K^n sequences by the forward algorithm (log-space,
// O(n K^2)). Time-major like the recurrent layers; each row's steps past its length are ignored. Parameters as
// the pytorch-crf package's torchcrf.CRF (start_transitions [K], end_transitions [K], transitions [K, K],
// from -> to; all U(-0.1, 0.1)), so a state dict moves between the two.
#include <cstdint>
#include <span>
#include <vector>

#include "../ops/loss.hpp"
#include "module.hpp"

namespace unroll::nn {

class CRF : public Module {
 public:
  explicit CRF(std::int64_t num_tags, Dtype dtype = Dtype::float32);
  void reset_parameters();

  /// -log p(tags | emissions) per row: emissions [T, B, K], tags [T, B] int64 in [0, K), each row's first
  /// lengths[b] steps (1 <= lengths[b] <= T; empty: all T). Reduction over the rows: mean (default), sum, or
  /// none ([B]). Differentiable in the emissions and the parameters.
  Tensor nll(const Tensor& emissions, const Tensor& tags, std::span<const std::int64_t> lengths = {},
             Reduction reduction = Reduction::mean) const;
  /// log Z per row [B] (the forward algorithm).
  Tensor log_partition(const Tensor& emissions, std::span<const std::int64_t> lengths = {}) const;
  /// score(tags) per row [B].
  Tensor score(const Tensor& emissions, const Tensor& tags, std::span<const std::int64_t> lengths = {}) const;
  /// The most likely tag sequence of each row (Viterbi; lengths[b] tags each; ties go to the lower tag).
  std::vector<std::vector<std::int64_t>> decode(const Tensor& emissions,
                                                std::span<const std::int64_t> lengths = {}) const;

  std::int64_t num_tags;
  Tensor start_transitions, end_transitions, transitions;
};

}  // namespace unroll::nn
