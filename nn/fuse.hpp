#pragma once
// Fused custom cells: a cell written from ordinary ops runs a whole sequence as ONE tape node.
//
//   nn::Fused<MGUCell> cell(input_size, hidden_size);      // an MGUCell (same parameters, same state dict)
//   auto [out, h] = nn::run_cell(x, h0, cell);              // fused
//   auto step = nn::fuse(existing_cell);                    // or wrap a cell object you already have
//   auto [out2, h2] = nn::run_cell(x, h0, step);
//
// The first step of each new shape traces the cell once on placeholder tensors (ops/trace.hpp) and compiles
// it (ops/fused_step.hpp): the values that depend only on the input are computed for all T steps at once
// (the input projections become one GEMM), the rest runs step by step inside ONE tape node for all T steps
// (nn::run_cell with its default output; given its own output_of, one node per step) — each step's products
// by parameters as GEMMs, all its elementwise ops in one pass over the rows, its backward derived from the
// same program. Programs are cached by the shapes and dtype of x_t and the state (a new batch size or dtype is
// traced again), by train/eval mode, and by the identity of the cell's parameters.
//
// What fuses: elementwise ops and activations (add, sub, mul, div and their scalar forms, neg, pow, exp,
// log, sqrt, abs, tanh, sigmoid, relu, logsigmoid, silu, softplus), linear/matmul of a step value by a
// parameter (or by anything computed from parameters only), cat/chunk/split/narrow along the features,
// sum/mean over the features (keepdim: layer norm), broadcasting with [features] parameters and scalar
// constants, on [batch, features] values. Anything else (dropout, where, a 3-D state, ...) makes the cell
// run unfused, op by op, with the same results; why_not() says why in one line naming the op. Under anomaly
// detection (autograd::DetectAnomaly) every cell runs op by op, so that an error names its op and time step.
//
// A trace records ONE path through the cell's code: a step that branches on its tensors' values would be
// frozen to the branch taken while tracing. The cell is traced twice on different values and refused when
// the two traces differ, or when it reads a traced value (item(), to_vector()); branches on shapes, on
// module flags or on anything else fixed per program are fine.
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "../ops/fused_step.hpp"
#include "module.hpp"
#include "sequence.hpp"

namespace unroll::nn {

namespace detail {
/// One cell's compiled programs by key (thread-safe: batch shards trace and read it concurrently).
class FusionCache {
 public:
  struct Entry {
    std::shared_ptr<const unroll::detail::FusedProgram> program;  ///< null: runs unfused
    std::string why_not;
  };
  /// The entry for `key`, tracing and compiling with `trace` on first sight.
  Entry get(const std::string& key, const std::function<unroll::detail::TraceResult()>& trace);
  /// The reason the most recently used entry runs unfused ("" when it is fused, or nothing ran yet).
  std::string last_why_not() const;
  /// Number of programs traced so far (each key once).
  std::size_t traces() const;
  void clear();

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  std::string last_why_not_;
  std::size_t traces_ = 0;
};

/// The cache key of a step: x_t's and the state's shapes and dtype, plus `extra`.
std::string fusion_key(std::span<const Tensor> examples, const std::string& extra);
/// The part of the key that a module adds: its training mode and its parameters' identities.
std::string module_key(const Module& m);
}  // namespace detail

/// A cell's step, fused: callable as the cell is, State(x_t, state), and run by nn::run_cell as one tape
/// node for the sequence (see the top of this file). Holds the cell by reference: the cell must outlive it.
template <class Cell>
class FusedStep {
 public:
  explicit FusedStep(const Cell& cell) : cell_(&cell), cache_(std::make_shared<detail::FusionCache>()) {}

  /// A sequence of steps over x [T, B, ...]: `session(t, state)` runs step t. The part of the cell that
  /// depends only on the input is computed for all T steps at the first call.
  template <class State>
  class Session {
   public:
    Session(const FusedStep& owner, const Tensor& x) : owner_(owner), x_(x) {}
    State operator()(std::int64_t t, const State& state) {
      if (!decided_ && !nn::detail::any_undefined(state)) decide(state);
      if (!sequence_) return (*owner_.cell_)(x_[t], state);
      flat_.clear();
      nn::detail::for_each_tensor(state, [&](const Tensor& s) { flat_.push_back(s); });
      sequence_->step(t, flat_, outs_);
      flat_.clear();
      State next = state;
      std::size_t k = 0;
      nn::detail::for_each_tensor(next, [&](Tensor& s) { s = std::move(outs_[k++]); });
      return next;
    }

    /// All T steps as one tape node (FusedSequence::run), the output being each step's first state tensor
    /// (nn::run_cell's default); nullopt when the cell runs unfused or the state is undefined.
    std::optional<SequenceOutput<State>> run_all(const State& state, const RunOptions& opt) {
      if (!decided_ && !nn::detail::any_undefined(state)) decide(state);
      if (!sequence_) return std::nullopt;
      flat_.clear();
      nn::detail::for_each_tensor(state, [&](const Tensor& s) { flat_.push_back(s); });
      unroll::detail::FusedSequence::Run r = sequence_->run(flat_, 0, opt.reverse, opt.lengths);
      flat_.clear();
      SequenceOutput<State> out{std::move(r.output), state};
      std::size_t k = 0;
      nn::detail::for_each_tensor(out.state, [&](Tensor& s) { s = std::move(r.state[k++]); });
      return out;
    }

   private:
    void decide(const State& state) {
      decided_ = true;
      // Under anomaly detection the cell runs op by op: each op is checked under its own name, and an error
      // names its time step (a fused program computes the input-only values of all T steps at once).
      if (!owner_.enabled_ || unroll::detail::anomaly_checks()) return;
      std::vector<Tensor> examples{x_[0].detach()};
      nn::detail::for_each_tensor(state, [&](const Tensor& s) { examples.push_back(s.detach()); });
      std::string extra;
      if constexpr (std::is_base_of_v<Module, Cell>) extra = detail::module_key(*owner_.cell_);
      const detail::FusionCache::Entry e = owner_.cache_->get(detail::fusion_key(examples, extra), [&] {
        return unroll::detail::trace_step(
            [&](std::span<const Tensor> ph) {
              State s = state;
              std::size_t k = 1;
              nn::detail::for_each_tensor(s, [&](Tensor& t) { t = ph[k++]; });
              State out = (*owner_.cell_)(ph[0], s);
              std::vector<Tensor> flat;
              nn::detail::for_each_tensor(out, [&](const Tensor& t) { flat.push_back(t); });
              return flat;
            },
            examples);
      });
      if (e.program) sequence_.emplace(e.program, x_);
    }

    const FusedStep& owner_;
    Tensor x_;
    bool decided_ = false;
    std::optional<unroll::detail::FusedSequence> sequence_;
    std::vector<Tensor> flat_, outs_;  // the state's tensors in and out, reused from step to step
  };

  /// What nn::run_cell calls: a session over x [T, B, ...].
  template <class State>
  Session<State> begin_sequence(const Tensor& x) const {
    return Session<State>(*this, x);
  }

  /// One step, as the cell: x [B, ...] and the state -> the next state (fused unless why_not() says otherwise).
  template <class State>
    requires CellStep<const Cell&, State>
  State operator()(const Tensor& x, const State& state) const {
    Session<State> session(*this, unsqueeze(x, 0));
    return session(0, state);
  }

  /// The cell's own initial state, when it has one (see nn::run_cell).
  auto initial_state(std::int64_t batch, Dtype dtype) const
    requires requires(const Cell& c) { c.initial_state(batch, dtype); }
  {
    return cell_->initial_state(batch, dtype);
  }

  /// Why the most recent step ran unfused, in one line naming the op; "" when it ran fused (or before the
  /// first step).
  std::string why_not() const {
    if (!enabled_) return "fusion is switched off (set_enabled(false))";
    if (unroll::detail::anomaly_checks()) return "anomaly detection is on (autograd::DetectAnomaly): op by op";
    return cache_->last_why_not();
  }
  /// Runs the cell op by op when off (the reference for tests, or to debug a cell).
  void set_enabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }
  /// Number of traces so far (one per new shape, dtype, mode or parameter set).
  std::size_t traces() const { return cache_->traces(); }
  /// Forgets every compiled program (the next step traces again).
  void clear() const { cache_->clear(); }

 private:
  const Cell* cell_;
  std::shared_ptr<detail::FusionCache> cache_;
  bool enabled_ = true;
};

/// Wraps an existing cell object (kept by reference) as a fused step for nn::run_cell.
template <class Cell>
FusedStep<Cell> fuse(const Cell& cell) {
  return FusedStep<Cell>(cell);
}

/// A cell type, fused: `Fused<MyCell>` is a MyCell (constructed with MyCell's arguments, same parameters
/// and state dict) whose steps run fused. `unfused(x, state)` runs MyCell's own operator().
template <class Cell>
class Fused : public Cell {
 public:
  using Cell::Cell;

  template <class State>
    requires CellStep<const Cell&, State>
  State operator()(const Tensor& x, const State& state) const {
    return fused_(x, state);
  }
  template <class State>
  typename FusedStep<Cell>::template Session<State> begin_sequence(const Tensor& x) const {
    return fused_.template begin_sequence<State>(x);
  }
  template <class State>
    requires CellStep<const Cell&, State>
  State unfused(const Tensor& x, const State& state) const {
    return static_cast<const Cell&>(*this)(x, state);
  }
  std::string why_not() const { return fused_.why_not(); }
  void set_fused(bool on) { fused_.set_enabled(on); }
  bool fused() const { return fused_.enabled(); }
  const FusedStep<Cell>& fused_step() const { return fused_; }

 private:
  FusedStep<Cell> fused_{static_cast<const Cell&>(*this)};
};

}  // namespace unroll::nn
