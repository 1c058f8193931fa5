#include "decode.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

#include "../autograd/tape.hpp"
#include "../core/error.hpp"
#include "../ops/index.hpp"

namespace unroll::nn {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Calls the step and checks what it returned: [M, V] log-probabilities as doubles.
std::vector<double> run_step(const char* where, const DecodeStep& step, const Tensor& tokens, DecodeState& state,
                             std::int64_t M, std::int64_t& V) {
  const Tensor logp = step(tokens, state);
  UNROLL_CHECK(logp.defined() && logp.dim() == 2 && logp.size(0) == M && logp.size(1) >= 1 && is_floating(logp.dtype()),
               ShapeError, "{}: the step must return floating log-probabilities [{}, V]; got {}", where, M,
               logp.defined() ? fmt::format("{} {}", logp.dtype(), logp.shape()) : std::string("an undefined tensor"));
  V = logp.size(1);
  return logp.to_vector<double>();
}

void check_token(const char* where, const char* name, std::int64_t token) {
  UNROLL_CHECK(token >= 0, ValueError, "{}: {} must be a token id (>= 0); got {}", where, name, token);
}

// Every state tensor with its rows picked (and repeated) by `rows`.
void select_rows(const char* where, DecodeState& state, const std::vector<std::int64_t>& rows, std::int64_t M) {
  const Tensor idx = index_tensor(rows, Shape({static_cast<std::int64_t>(rows.size())}));
  for (std::size_t i = 0; i < state.size(); ++i) {
    Tensor& t = state[i];
    if (!t.defined()) continue;
    UNROLL_CHECK(t.dim() >= 1 && t.size(0) == M, ShapeError,
                 "{}: state tensor {} must have the batch ({} rows) on dim 0; got {}", where, i, M, t.shape());
    t = index_select(t, 0, idx);
  }
}

}  // namespace

std::vector<std::vector<std::int64_t>> greedy_decode(const DecodeStep& step, DecodeState state, std::int64_t batch,
                                                     const DecodeOptions& o) {
  constexpr const char* where = "greedy_decode";
  UNROLL_CHECK(batch >= 1 && o.max_length >= 1, ValueError,
               "{}: batch and max_length must be >= 1; got batch={} max_length={}", where, batch, o.max_length);
  check_token(where, "bos", o.bos);
  check_token(where, "eos", o.eos);
  const autograd::NoGradGuard no_grad;
  std::vector<std::vector<std::int64_t>> out(static_cast<std::size_t>(batch));
  std::vector<std::int64_t> tokens(static_cast<std::size_t>(batch), o.bos);
  std::vector<bool> done(static_cast<std::size_t>(batch), false);
  for (std::int64_t t = 0; t < o.max_length; ++t) {
    std::int64_t V = 0;
    const auto logp = run_step(where, step, index_tensor(tokens, Shape({batch})), state, batch, V);
    bool all_done = true;
    for (std::int64_t b = 0; b < batch; ++b) {
      const auto ub = static_cast<std::size_t>(b);
      if (done[ub]) continue;
      const double* row = logp.data() + b * V;
      const std::int64_t best = std::max_element(row, row + V) - row;
      out[ub].push_back(best);
      tokens[ub] = best;
      done[ub] = best == o.eos;
      all_done = all_done && done[ub];
    }
    if (all_done) break;
  }
  return out;
}

std::vector<std::vector<Hypothesis>> beam_search(const DecodeStep& step, DecodeState state, std::int64_t batch,
                                                 const BeamSearchOptions& o) {
  constexpr const char* where = "beam_search";
  UNROLL_CHECK(batch >= 1 && o.max_length >= 1 && o.beam_size >= 1, ValueError,
               "{}: batch, max_length and beam_size must be >= 1; got batch={} max_length={} beam_size={}", where,
               batch, o.max_length, o.beam_size);
  UNROLL_CHECK(o.num_return >= 1 && o.num_return <= o.beam_size, ValueError,
               "{}: num_return must be in [1, beam_size={}]; got {}", where, o.beam_size, o.num_return);
  UNROLL_CHECK(std::isfinite(o.length_penalty), ValueError, "{}: length_penalty must be finite; got {}", where,
               o.length_penalty);
  check_token(where, "bos", o.bos);
  check_token(where, "eos", o.eos);
  const autograd::NoGradGuard no_grad;
  const std::int64_t K = o.beam_size, M = batch * K;
  auto normalised = [&](double log_prob, std::int64_t length) {
    return log_prob / std::pow(static_cast<double>(length), o.length_penalty);
  };

  {  // every row's state repeated once per beam: rows b*K .. b*K + K-1 belong to row b
    std::vector<std::int64_t> rows(static_cast<std::size_t>(M));
    for (std::int64_t m = 0; m < M; ++m) rows[static_cast<std::size_t>(m)] = m / K;
    select_rows(where, state, rows, batch);
  }
  // Only beam 0 is live at the start (the others would repeat it).
  std::vector<double> beam_lp(static_cast<std::size_t>(M), kNegInf);
  for (std::int64_t b = 0; b < batch; ++b) beam_lp[static_cast<std::size_t>(b * K)] = 0;
  std::vector<std::vector<std::int64_t>> seqs(static_cast<std::size_t>(M));
  std::vector<std::int64_t> tokens(static_cast<std::size_t>(M), o.bos);
  std::vector<std::vector<Hypothesis>> finished(static_cast<std::size_t>(batch));
  std::vector<bool> done(static_cast<std::size_t>(batch), false);

  struct Candidate {
    double lp;
    std::int64_t beam, token;
  };
  std::vector<Candidate> cands;
  for (std::int64_t t = 1; t <= o.max_length; ++t) {
    std::int64_t V = 0;
    const auto logp = run_step(where, step, index_tensor(tokens, Shape({M})), state, M, V);
    std::vector<std::int64_t> parents(static_cast<std::size_t>(M));
    std::vector<std::int64_t> next_tokens(static_cast<std::size_t>(M), o.eos);
    std::vector<double> next_lp(static_cast<std::size_t>(M), kNegInf);
    std::vector<std::vector<std::int64_t>> next_seqs(static_cast<std::size_t>(M));
    bool all_done = true;
    for (std::int64_t b = 0; b < batch; ++b) {
      const auto ub = static_cast<std::size_t>(b);
      for (std::int64_t k = 0; k < K; ++k) parents[static_cast<std::size_t>(b * K + k)] = b * K;  // filler
      if (done[ub]) continue;
      // The 2K best continuations: at most K of them end with eos, so K live ones remain.
      cands.clear();
      for (std::int64_t k = 0; k < K; ++k) {
        const double base = beam_lp[static_cast<std::size_t>(b * K + k)];
        if (base == kNegInf) continue;
        const double* row = logp.data() + (b * K + k) * V;
        for (std::int64_t v = 0; v < V; ++v)
          if (row[v] > kNegInf) cands.push_back({base + row[v], b * K + k, v});
      }
      UNROLL_CHECK(!cands.empty(), NonFiniteError,
                   "{}: no finite log-probability for batch row {} at step {}; got only -inf or nan from the step", where,
                   b, t);
      const auto keep = std::min<std::size_t>(cands.size(), static_cast<std::size_t>(2 * K));
      std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(keep), cands.end(),
                        [](const Candidate& x, const Candidate& y) { return x.lp > y.lp; });
      std::int64_t live = 0;
      for (std::size_t c = 0; c < keep && live < K; ++c) {
        const Candidate& cd = cands[c];
        std::vector<std::int64_t> seq = seqs[static_cast<std::size_t>(cd.beam)];
        seq.push_back(cd.token);
        if (cd.token == o.eos || t == o.max_length) {
          // An eos ranked below the K best candidates would have lost to them as a live beam; skip it as HF does.
          if (cd.token == o.eos && c >= static_cast<std::size_t>(K)) continue;
          finished[ub].push_back({std::move(seq), cd.lp, normalised(cd.lp, t)});
          continue;
        }
        const auto slot = static_cast<std::size_t>(b * K + live);
        parents[slot] = cd.beam;
        next_tokens[slot] = cd.token;
        next_lp[slot] = cd.lp;
        next_seqs[slot] = std::move(seq);
        ++live;
      }
      // Done when K hypotheses are finished and the best live beam cannot overtake the worst of them: its
      // log-probability only falls, and its length can grow up to max_length.
      auto& fin = finished[ub];
      if (t == o.max_length || live == 0) {
        done[ub] = true;
      } else if (static_cast<std::int64_t>(fin.size()) >= K) {
        // the K-th best finished score: what a live beam has to beat to enter the returned K
        std::vector<double> scores;
        for (const auto& h : fin) scores.push_back(h.score);
        std::nth_element(scores.begin(), scores.begin() + (K - 1), scores.end(), std::greater<>());
        const double worst = scores[static_cast<std::size_t>(K - 1)];
        const double best_live = next_lp[static_cast<std::size_t>(b * K)];
        const double bound = o.length_penalty >= 0 ? normalised(best_live, o.max_length) : normalised(best_live, t);
        done[ub] = bound <= worst;
      }
      all_done = all_done && done[ub];
    }
    if (all_done) break;
    select_rows(where, state, parents, M);
    beam_lp = std::move(next_lp);
    tokens = std::move(next_tokens);
    seqs = std::move(next_seqs);
  }
  std::vector<std::vector<Hypothesis>> out(static_cast<std::size_t>(batch));
  for (std::int64_t b = 0; b < batch; ++b) {
    auto& fin = finished[static_cast<std::size_t>(b)];
    std::stable_sort(fin.begin(), fin.end(),
                     [](const Hypothesis& x, const Hypothesis& y) { return x.score > y.score; });
    const auto n = std::min<std::size_t>(fin.size(), static_cast<std::size_t>(o.num_return));
    out[static_cast<std::size_t>(b)].assign(std::make_move_iterator(fin.begin()),
                                            std::make_move_iterator(fin.begin() + static_cast<std::ptrdiff_t>(n)));
  }
  return out;
}

double inverse_sigmoid_decay(std::int64_t step, double k) {
  UNROLL_CHECK(k >= 1 && step >= 0, ValueError, "inverse_sigmoid_decay: need k >= 1 and step >= 0; got k={} step={}", k,
               step);
  const double x = static_cast<double>(step) / k;
  return x > 700 ? 0.0 : k / (k + std::exp(x));
}

Tensor scheduled_sampling_inputs(const Tensor& gold, const Tensor& logits, double teacher_prob, Generator& gen,
                                 bool sample) {
  constexpr const char* where = "scheduled_sampling_inputs";
  UNROLL_CHECK(gold.defined() && gold.dtype() == Dtype::int64 && gold.dim() == 1, ShapeError,
               "{}: gold must be int64 [N]; got {}", where,
               gold.defined() ? fmt::format("{} {}", gold.dtype(), gold.shape()) : std::string("undefined"));
  const std::int64_t N = gold.size(0);
  UNROLL_CHECK(logits.defined() && is_floating(logits.dtype()) && logits.dim() == 2 && logits.size(0) == N &&
                   logits.size(1) >= 1,
               ShapeError, "{}: logits must be floating [N, V] with N={}; got {}", where, N,
               logits.defined() ? fmt::format("{} {}", logits.dtype(), logits.shape()) : std::string("undefined"));
  UNROLL_CHECK(teacher_prob >= 0 && teacher_prob <= 1, ValueError, "{}: teacher_prob must be in [0, 1]; got {}", where,
               teacher_prob);
  auto out = gold.to_vector<std::int64_t>();
  const auto z = logits.to_vector<double>();
  const std::int64_t V = logits.size(1);
  for (std::int64_t n = 0; n < N; ++n) {
    if (gen.uniform() < teacher_prob) continue;
    const double* row = z.data() + n * V;
    const double m = *std::max_element(row, row + V);
    std::int64_t pick = std::max_element(row, row + V) - row;
    if (sample) {
      double total = 0;
      for (std::int64_t v = 0; v < V; ++v) total += std::exp(row[v] - m);
      double u = gen.uniform() * total;
      for (std::int64_t v = 0; v < V; ++v) {
        u -= std::exp(row[v] - m);
        if (u < 0) {
          pick = v;
          break;
        }
      }
    }
    out[static_cast<std::size_t>(n)] = pick;
  }
  return index_tensor(out, Shape({N}));
}

}  // namespace unroll::nn
