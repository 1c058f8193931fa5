#pragma once
// Decoding an autoregressive decoder — greedy and beam search, batched — and scheduled sampling for
// training one. The decoder is any function from the previous tokens and a state to log-probabilities:
// an RNN cell with attention, a Transformer, anything. The search owns the batch bookkeeping; the state is a
// list of tensors with the batch on dim 0, which the search repeats per beam and reorders (index_select on
// dim 0) as beams are kept or dropped, so the decoder never sees beams.
#include <cstdint>
#include <functional>
#include <vector>

#include "../core/random.hpp"
#include "../core/tensor.hpp"

namespace unroll::nn {

/// What a decoder carries between steps: every tensor has the batch (times the beam) on dim 0 — recurrent
/// states, the encoder's outputs and padding mask, the step number as a [M] tensor if it needs one.
using DecodeState = std::vector<Tensor>;
/// One step: tokens [M] (int64, each row's previous output) and the state -> log-probabilities [M, V]
/// (log_softmax of the logits), with `state` updated in place for the next step. Called without grad.
using DecodeStep = std::function<Tensor(const Tensor& tokens, DecodeState& state)>;

struct DecodeOptions {
  std::int64_t bos = 0;           ///< every row's first input
  std::int64_t eos = 1;           ///< ends a row (kept as its last token)
  std::int64_t max_length = 100;  ///< tokens generated per row at most, eos included
};

/// Argmax at every step for `batch` rows until each has produced eos or max_length tokens. Returns each
/// row's tokens (bos excluded, eos included when produced).
std::vector<std::vector<std::int64_t>> greedy_decode(const DecodeStep& step, DecodeState state, std::int64_t batch,
                                                     const DecodeOptions& options = {});

struct BeamSearchOptions {
  std::int64_t bos = 0;
  std::int64_t eos = 1;
  std::int64_t max_length = 100;
  std::int64_t beam_size = 4;
  /// Hypotheses are ranked by log_prob / length^length_penalty (0: raw log-probability, which favours short
  /// outputs; 1: per-token average). length counts generated tokens, eos included.
  double length_penalty = 1.0;
  std::int64_t num_return = 1;  ///< best hypotheses returned per row, 1 <= num_return <= beam_size
};

struct Hypothesis {
  std::vector<std::int64_t> tokens;  ///< bos excluded; ends with eos unless max_length cut it
  double log_prob = 0;               ///< sum of the chosen tokens' log-probabilities
  double score = 0;                  ///< log_prob / length^length_penalty
};

/// Beam search over `batch` rows at once (the decoder sees batch * beam_size rows). A row's search ends when it
/// holds beam_size finished hypotheses and no live beam can still beat the worst of them (the bound uses
/// max_length, so it is exact for length_penalty >= 0), or at max_length, where live beams count as finished.
/// Returns, per row, the num_return best hypotheses, best first. With beam_size 1 and length_penalty 0 it is greedy
/// decoding. NonFiniteError if the step gives a live row no finite log-probability.
std::vector<std::vector<Hypothesis>> beam_search(const DecodeStep& step, DecodeState state, std::int64_t batch,
                                                 const BeamSearchOptions& options = {});

/// Scheduled sampling's teacher-forcing probability at training step `step` (Bengio et al. 2015, inverse
/// sigmoid decay): k / (k + exp(step / k)), k >= 1; starts near 1 and falls towards 0 around step k ln k.
double inverse_sigmoid_decay(std::int64_t step, double k);

/// The next decoder inputs in training with scheduled sampling: for each row, the gold token with probability
/// teacher_prob (teacher forcing), else the model's own choice from `logits` [N, V] — its argmax, or with
/// `sample` a draw from softmax(logits). gold: int64 [N]. No gradient flows through the choice.
Tensor scheduled_sampling_inputs(const Tensor& gold, const Tensor& logits, double teacher_prob, Generator& gen,
                                 bool sample = false);

}  // namespace unroll::nn
