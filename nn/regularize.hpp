#pragma once
// Regularisers for recurrent networks that work with any cell (AWD-LSTM's recipe, Merity et al. 2017):
//
//   Tensor e = nn::embedding_dropout(embed, tokens, 0.1, training);      // whole words dropped
//   e = nn::locked_dropout(e, 0.4, training);                              // one mask per sequence, all steps
//   auto step = nn::with_zoneout(cell, {0.1, 0.05}, training);             // h (and c) keep their old value
//   auto r = nn::run_cell(e, state0, step);
//   Tensor loss = ce + nn::activation_regularization(dropped, 2.0)
//                    + nn::temporal_activation_regularization(r.output, 1.0);
//
// Each is the identity (or its expectation: zoneout) outside training, draws its masks from a Generator
// (default: the thread's, which batch shards seed per shard, so a run is reproducible for a seed and shard
// count), and is built from differentiable ops: gradients flow through the kept values as through the ops.
// Dropout on the state carried from step to step, one mask per sequence (Gal & Ghahramani 2016), is a mask
// drawn once and multiplied in by the step:
//   Tensor m = nn::dropout_mask({B, H}, 0.25, dtype);
//   auto r = nn::run_cell(x, h0, [&](const Tensor& x_t, const Tensor& h) { return cell(x_t, h * m); });
// A probability outside [0, 1) is a ValueError naming the regulariser.
#include <cstdint>
#include <utility>
#include <vector>

#include "../core/random.hpp"
#include "../ops/elementwise.hpp"
#include "layers.hpp"
#include "module.hpp"
#include "sequence.hpp"

namespace unroll::nn {

/// An inverted-dropout mask of `shape`: 0 with probability p, else 1 / (1 - p) (a constant: no gradient).
Tensor dropout_mask(const Shape& shape, double p, Dtype dtype = Dtype::float32, Generator& gen = default_generator());

/// Variational ("locked") dropout over x [T, B, ...]: one mask per batch row and feature, the same at every
/// time step (AWD-LSTM's LockedDropout). x unchanged outside training or with p = 0.
Tensor locked_dropout(const Tensor& x, double p, bool training, Generator& gen = default_generator());

/// locked_dropout as a module (training follows train()/eval()).
class LockedDropout : public Module {
 public:
  explicit LockedDropout(double p = 0.5);
  Tensor forward(const Tensor& x) const;
  Tensor operator()(const Tensor& x) const { return forward(x); }
  double p;
  Generator* generator = nullptr;  ///< null: the thread's default generator
};

/// Embedding dropout: embed(indices) with whole rows of the embedding matrix dropped (every occurrence of a
/// dropped word reads zeros) and the kept rows scaled by 1 / (1 - p); the dropped rows get no gradient.
/// embed(indices) outside training or with p = 0.
Tensor embedding_dropout(const Embedding& embed, const Tensor& indices, double p, bool training,
                         Generator& gen = default_generator());

/// Zoneout (Krueger et al. 2016) of one state tensor: in training each unit keeps its previous value with
/// probability p (a fresh mask per call), h = d ⊙ previous + (1 − d) ⊙ next; outside training the
/// expectation p · previous + (1 − p) · next.
Tensor zoneout(const Tensor& previous, const Tensor& next, double p, bool training,
               Generator& gen = default_generator());

/// AR: alpha · mean(output²) (AWD-LSTM applies it to the last layer's output after dropout).
Tensor activation_regularization(const Tensor& output, double alpha);
/// TAR: beta · mean((h_t − h_{t−1})²) over output [T, B, ...] (the last layer's output before dropout);
/// needs T >= 2.
Tensor temporal_activation_regularization(const Tensor& output, double beta);

namespace detail {
void check_probability(const char* where, double p);
}

/// A step (a cell, or any State(x_t, state) callable) with zoneout on its state tensors, for nn::run_cell:
/// state tensor k (in the order run_cell flattens the state: h, c) uses p[k], or p[0] for all when p has one
/// entry. Holds the step by reference.
template <class Step>
class ZoneoutStep {
 public:
  ZoneoutStep(const Step& step, std::vector<double> p, bool training, Generator* gen = nullptr)
      : step_(&step), p_(std::move(p)), training_(training), gen_(gen) {
    UNROLL_CHECK(!p_.empty(), ValueError, "zoneout: no probability; got none, expected one per state tensor or one for all");
    for (double q : p_) detail::check_probability("zoneout", q);
  }
  template <class State>
  State operator()(const Tensor& x, const State& state) const {
    std::size_t count = 0;
    nn::detail::for_each_tensor(state, [&](const Tensor&) { ++count; });
    UNROLL_CHECK(p_.size() == 1 || p_.size() == count, ValueError,
                 "zoneout: one probability per state tensor or one for all; got {} probabilities for {} state tensors",
                 p_.size(), count);
    State next = (*step_)(x, state);
    std::size_t k = 0;
    nn::detail::zip_tensors(next, state, [&](Tensor& n, const Tensor& old) {
      n = zoneout(old, n, p_[p_.size() == 1 ? 0 : k++], training_, gen_ ? *gen_ : default_generator());
    });
    return next;
  }
  /// The step's own initial state, when it has one (see nn::run_cell).
  auto initial_state(std::int64_t batch, Dtype dtype) const
    requires requires(const Step& s) { s.initial_state(batch, dtype); }
  {
    return step_->initial_state(batch, dtype);
  }

 private:
  const Step* step_;
  std::vector<double> p_;
  bool training_;
  Generator* gen_;
};

/// `step` with zoneout on its state (see ZoneoutStep); `training` false gives the expectation.
template <class Step>
ZoneoutStep<Step> with_zoneout(const Step& step, std::vector<double> p, bool training, Generator* gen = nullptr) {
  return ZoneoutStep<Step>(step, std::move(p), training, gen);
}

}  // namespace unroll::nn
