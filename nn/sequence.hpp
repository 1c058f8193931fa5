#pragma once
// The custom-cell path: run any user-written cell over a sequence. A cell is anything callable as
// `state = step(x_t, state)`; the state is a Tensor or a std::pair/std::tuple/std::array/std::vector of
// Tensors (LSTM-like cells carry (h, c)), or a named struct whose `tensors()` returns std::tie of its
// Tensor members (nn::SLSTMState in nn/xlstm.hpp). Backpropagation through time is the tape of this loop.
//
//   auto [out, h] = nn::run_cell(x, h0, [&](const Tensor& x_t, const Tensor& h) { return cell(x_t, h); });
//
// The initial state is the caller's: a Tensor [B, ...] per state tensor (zeros({B, H}) for a zero start). When
// the step callable itself has `State initial_state(std::int64_t batch, Dtype dtype) const` (pass the cell
// object as the step, not a lambda around it), it may be given an undefined state instead and starts from
// what that returns. After each step, every state tensor it returned must be defined and have the shape and
// dtype of the one it was given: a state that broadcast into another shape is an error naming the step, as
// is any error thrown inside the step (`run_cell: step t=3 of 12: <the op's message>`, same exception type).
// So a state must keep its shape from step to step; a cell whose state grows (a memory [B, t, H]) needs its
// own loop.
//
// Truncated BPTT: carry the final state into the next chunk through nn::detach_state(state), so the next
// backward stops at the chunk boundary.
#include <algorithm>
#include <array>
#include <concepts>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../autograd/checkpoint.hpp"
#include "../autograd/tape.hpp"
#include "../core/allocator.hpp"
#include "../core/random.hpp"
#include "../ops/elementwise.hpp"
#include "../ops/shape_ops.hpp"
#include "diagnostics.hpp"
#include "rnn.hpp"

namespace unroll::nn {

struct RunOptions {
  std::vector<std::int64_t> lengths;  ///< per batch row (empty: all T); rows past their end hold their state
  bool reverse = false;               ///< run from t = T-1 down to 0 (the backward half of a bidirectional layer)
  /// Checkpointed BPTT: with k > 0 the sequence runs in segments of k steps, each an autograd::checkpoint
  /// that keeps only its starting state; backward recomputes one segment at a time. Memory for what the steps
  /// keep falls from T steps' worth to T/k states plus k steps', for about one more forward pass. The same
  /// gradients: the recomputation replays the calling thread's default generator, so dropout drawn from it
  /// draws the same masks; a cell drawing from another generator must name it in `generators`. 0: off.
  std::int64_t checkpoint_every = 0;
  /// Or a budget in bytes for what the steps keep (their saved values and the segments' states): k is then
  /// the largest that fits, from one step's bytes measured at each call (the generators put back after). 0: off.
  std::int64_t memory_budget = 0;
  /// Generators besides the default one that the cell draws from (with checkpointing: replayed).
  std::vector<Generator*> generators{};
};

template <class State>
struct SequenceOutput {
  Tensor output;  ///< [T, B, ...]: the output of every step (zero past a row's length)
  State state;    ///< the final state (each row's own last step)
};

namespace detail {
template <class S>
struct is_cell_state : std::false_type {};
template <class S>
struct is_tensor_tie_t : std::false_type {};
template <class... S>
struct is_tensor_tie_t<std::tuple<S&...>>
    : std::bool_constant<(std::is_same_v<std::remove_const_t<S>, Tensor> && ...)> {};
template <class S>
concept TensorTie = is_tensor_tie_t<S>::value;
template <>
struct is_cell_state<Tensor> : std::true_type {};
template <class A, class B>
struct is_cell_state<std::pair<A, B>> : std::bool_constant<is_cell_state<A>::value && is_cell_state<B>::value> {};
template <class... S>
struct is_cell_state<std::tuple<S...>> : std::bool_constant<(is_cell_state<S>::value && ...)> {};
template <class S, std::size_t N>
struct is_cell_state<std::array<S, N>> : is_cell_state<S> {};
template <class S, class A>
struct is_cell_state<std::vector<S, A>> : is_cell_state<S> {};
// A named state struct opts in with `tensors()` (and its const overload) returning std::tie of its Tensor
// members, so a cell can name its state's parts (state.c, state.m) instead of std::get<2>.
template <class S>
concept NamedCellState = requires(S& s, const S& cs) {
  { s.tensors() } -> TensorTie;
  { cs.tensors() } -> TensorTie;
};
template <NamedCellState S>
struct is_cell_state<S> : std::true_type {};
}  // namespace detail

/// What run_cell carries from step to step: a Tensor, or a pair/tuple/array/vector of them (nested allowed), or a
/// named struct whose tensors() returns std::tie of its Tensor members.
template <class S>
concept CellState = detail::is_cell_state<std::remove_cvref_t<S>>::value;
/// A step run_cell can call: State(const Tensor& x_t, const State& s), returning the state it is given.
template <class F, class S>
concept CellStep = CellState<S> && std::invocable<F&, const Tensor&, const S&> &&
    std::convertible_to<std::invoke_result_t<F&, const Tensor&, const S&>, S>;
/// A step that runs a whole sequence itself (nn::FusedStep, nn::Fused): run_cell asks it for a session over
/// x [T, B, ...] and calls `session(t, state)` for each step t instead of `step(x[t], state)`.
template <class F, class S>
concept SequenceStep = requires(const std::remove_cvref_t<F>& f, const Tensor& x, std::int64_t t, const S& s) {
  { f.template begin_sequence<S>(x)(t, s) } -> std::convertible_to<S>;
};
/// A sequence step that can also run all steps itself, as one tape node (nn::FusedStep): run_cell's default
/// output (each step's first state tensor) then comes from `session.run_all(state, options)`; nullopt (a cell
/// that runs unfused) makes run_cell run the steps one by one.
template <class F, class S>
concept WholeSequenceStep = requires(const std::remove_cvref_t<F>& f, const Tensor& x, const S& s,
                                     const RunOptions& o) {
  { f.template begin_sequence<S>(x).run_all(s, o) } -> std::same_as<std::optional<SequenceOutput<S>>>;
};
/// A step that can make its own initial state (used when run_cell is given an undefined one).
template <class F, class S>
concept HasInitialState = requires(const F& f, std::int64_t batch, Dtype dtype) {
  { f.initial_state(batch, dtype) } -> std::convertible_to<S>;
};

namespace detail {
template <class S, class F>
void for_each_tensor(S& s, F&& f) {
  if constexpr (std::is_same_v<std::remove_const_t<S>, Tensor>)
    f(s);
  else if constexpr (NamedCellState<std::remove_const_t<S>>) {
    auto ts = s.tensors();
    for_each_tensor(ts, f);
  } else if constexpr (requires {
                         s.begin();
                         s.end();
                       })
    for (auto& t : s) for_each_tensor(t, f);
  else
    std::apply([&](auto&... ts) { (for_each_tensor(ts, f), ...); }, s);
}
template <class S, class F>
void zip_tensors(S& a, const S& b, F&& f) {
  if constexpr (std::is_same_v<S, Tensor>)
    f(a, b);
  else if constexpr (NamedCellState<S>) {
    auto ta = a.tensors();
    const auto tb = b.tensors();
    [&]<std::size_t... I>(std::index_sequence<I...>) { (zip_tensors(std::get<I>(ta), std::get<I>(tb), f), ...); }
    (std::make_index_sequence<std::tuple_size_v<decltype(ta)>>{});
  } else if constexpr (requires {
                         a.begin();
                         a.end();
                       }) {
    UNROLL_CHECK(std::size(a) == std::size(b), ValueError,
                 "run_cell: the step changed the number of state tensors; got {}, expected {}", std::size(a),
                 std::size(b));
    auto ib = b.begin();
    for (auto& t : a) zip_tensors(t, *ib++, f);
  } else {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (zip_tensors(std::get<I>(a), std::get<I>(b), f), ...); }
    (std::make_index_sequence<std::tuple_size_v<S>>{});
  }
}
template <class S>
bool any_undefined(const S& s) {
  bool undefined = false;
  for_each_tensor(s, [&](const Tensor& t) { undefined |= !t.defined(); });
  return undefined;
}
template <class S>
const Tensor& first_tensor(const S& s) {
  const Tensor* first = nullptr;
  for_each_tensor(s, [&](const Tensor& t) {
    if (!first) first = &t;
  });
  UNROLL_CHECK(first != nullptr, ValueError,
               "run_cell: the state holds no tensor; got an empty state, expected at least one tensor");
  return *first;
}
}  // namespace detail

/// The same state with every tensor detached (no gradient flows back through it): truncated BPTT.
template <class State>
State detach_state(State state) {
  detail::for_each_tensor(state, [](Tensor& t) {
    if (t.defined()) t = t.detach();
  });
  return state;
}

namespace detail {
/// Each state tensor in order (the layout for_each_tensor walks).
template <class State>
std::vector<Tensor> flatten_state(const State& s) {
  std::vector<Tensor> out;
  for_each_tensor(s, [&](const Tensor& t) { out.push_back(t); });
  return out;
}
/// `like` with its tensors replaced, in flatten_state's order, by `tensors`.
template <class State>
State unflatten_state(State like, std::span<const Tensor> tensors) {
  std::size_t i = 0;
  for_each_tensor(like, [&](Tensor& t) { t = tensors[i++]; });
  return like;
}

/// What a checkpoint's recomputation calls after run_cell has returned: a copy of the callable (a lambda, even
/// one the caller named, may be gone by then), or, for one that cannot be copied (a cell module), a reference:
/// that one must stay alive until backward.
template <class F>
std::shared_ptr<std::remove_reference_t<F>> keep_callable(F&& f) {
  using Plain = std::remove_cvref_t<F>;
  if constexpr (std::is_copy_constructible_v<Plain>)
    return std::make_shared<Plain>(std::forward<F>(f));
  else if constexpr (std::is_lvalue_reference_v<F>)
    return std::shared_ptr<std::remove_reference_t<F>>(std::shared_ptr<void>(), &f);  // not owned
  else
    return std::make_shared<Plain>(std::move(f));
}

/// Bytes of a state's tensors.
template <class State>
std::int64_t state_bytes(const State& s) {
  std::int64_t n = 0;
  for_each_tensor(s, [&](const Tensor& t) { n += t.numel() * static_cast<std::int64_t>(dtype_size(t.dtype())); });
  return n;
}

/// The segment length k for checkpointed BPTT (0: none) from the options: checkpoint_every as given, or the
/// largest k whose (T/k) states of `state` bytes plus k steps of `step` bytes fit in memory_budget.
/// `where` names the caller in the errors.
std::int64_t checkpoint_segment(const char* where, std::int64_t checkpoint_every, std::int64_t memory_budget,
                                std::int64_t T, std::int64_t state, std::int64_t step);
/// Checks checkpoint_every and memory_budget (one-line ValueErrors naming `where`).
void check_checkpoint_options(const char* where, std::int64_t checkpoint_every, std::int64_t memory_budget);

/// Runs steps [t0, t0 + n) of a sequence of T (x_local is their x, [n, B, ...]; mask_local [n, B] or
/// undefined), in order or reversed, calling session(local t, state). Returns the outputs [n, B, ...] (masked)
/// and the final state. Errors name the global time step.
template <class State, class Session, class OutputOf>
SequenceOutput<State> run_steps(Session& session, State state, OutputOf& output_of, const Tensor& mask_local,
                                bool reverse, std::int64_t t0, std::int64_t n, std::int64_t T, std::int64_t B) {
  // Per-step diagnostics (nn/diagnostics.hpp), usually off; not for a checkpointed segment (n < T).
  StepRecorder* const recorder = n == T ? active_recorder() : nullptr;
  if (recorder != nullptr) {
    std::size_t k = 0;
    for_each_tensor(state, [&](const Tensor&) { recorder->begin_state(fmt::format("state{}", k++), T); });
    recording_step() = {.t = -1, .T = T, .run = recording_step().run + 1};
  }
  std::vector<Tensor> outs(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t t = reverse ? n - 1 - i : i;
    if (recorder != nullptr) recording_step().t = t0 + t;
    unroll::detail::AnomalyWhere at_step_where;  // anomaly detection: a backward error names the step too
    if (unroll::detail::anomaly_checks()) [[unlikely]]
      at_step_where.set(fmt::format("run_cell: step t={} of {}", t0 + t, T));
    State next = [&]() -> State {
      try {
        return session(t, state);
      } catch (const Error&) {  // the step's own message, with where it happened
        if (recorder != nullptr) recording_step().t = -1;
        const bool hint = i == 0 && t0 == (reverse ? T - n : 0) && any_undefined(state);
        unroll::detail::rethrow_with_context(fmt::format(
            "run_cell: step t={} of {}{}: ", t0 + t, T,
            hint ? " (the initial state is undefined: pass zeros({B, H}) for each state tensor, or give the step "
                   "State initial_state(std::int64_t batch, Dtype dtype) const)"
                 : ""));
      }
    }();
    // Each returned tensor against the one the step was given, in one pass; with lengths, rows whose
    // sequence has ended keep their state.
    const Tensor m = mask_local.defined() ? mask_local[t] : Tensor();
    zip_tensors(next, state, [&](Tensor& nt, const Tensor& old) {
      // An undefined tensor passed through (a cell that tolerates one) would be carried on silently.
      UNROLL_CHECK(nt.defined(), ValueError,
                   "run_cell: step t={} of {} returned an undefined state tensor; got an undefined tensor, expected "
                   "a [B, ...] tensor (give an undefined initial state as zeros({{B, H}}), or the step "
                   "initial_state)",
                   t0 + t, T);
      if (old.defined()) {  // a state that broadcast into another shape would otherwise run on silently
        UNROLL_CHECK(nt.shape() == old.shape(), ShapeError,
                     "run_cell: step t={} of {} changed the state's shape; got {}, expected {} (the shape it was "
                     "given; a state is [B, ...] with B = {})",
                     t0 + t, T, nt.shape(), old.shape(), B);
        UNROLL_CHECK(
            nt.dtype() == old.dtype(), DtypeError,
            "run_cell: step t={} of {} changed the state's dtype; got {}, expected {} (the dtype it was given)", t0 + t,
            T, nt.dtype(), old.dtype());
      }
      if (!m.defined()) return;
      UNROLL_CHECK(nt.dim() >= 1 && nt.shape()[0] == B, ShapeError,
                   "run_cell: with lengths, every state tensor must be [B, ...]; got {}, expected [{}, ...]",
                   nt.shape(), B);
      Shape s = nt.shape();
      for (int k = 1; k < s.dim(); ++k) s[k] = 1;
      nt = where(m.view_as_shape(s), nt, old.defined() ? old : zeros_like(nt));  // undefined initial state = zeros
    });
    if (recorder != nullptr) {  // an identity node per state tensor that notes the norm of its gradient
      recording_step().t = -1;
      std::size_t k = 0;
      for_each_tensor(next, [&](Tensor& st) { st = recorder->watch(st, fmt::format("state{}", k++), t0 + t); });
    }
    state = std::move(next);
    outs[static_cast<std::size_t>(t)] = output_of(state);
  }
  Tensor output = stack(outs, 0);
  if (mask_local.defined()) {
    Shape s = output.shape();
    for (int k = 2; k < s.dim(); ++k) s[k] = 1;
    output = mul(output, mask_local.view_as_shape(s));
  }
  return {std::move(output), std::move(state)};
}

/// Runs a sequence of T steps in checkpointed segments of k: run_segment(x_seg, state, t0) runs steps
/// [t0, t0 + x_seg.shape()[0]) and returns their outputs and final state; each call is one
/// autograd::checkpoint. Segments run from the last one down when reverse.
template <class State, class RunSegment>
SequenceOutput<State> run_segments(const Tensor& x, State state, std::int64_t k, bool reverse,
                                   std::shared_ptr<RunSegment> run_segment, const std::vector<Generator*>& generators) {
  const autograd::CheckpointOptions replay{.generators = generators};
  const std::int64_t T = x.shape()[0], segments = (T + k - 1) / k;
  std::vector<Tensor> outs(static_cast<std::size_t>(segments));
  for (std::int64_t i = 0; i < segments; ++i) {
    const std::int64_t seg = reverse ? segments - 1 - i : i, t0 = seg * k, n = std::min(k, T - t0);
    std::vector<Tensor> inputs;  // x's rows, then the state's tensors
    inputs.reserve(8);
    inputs.push_back(narrow(x, 0, t0, n));
    for_each_tensor(state, [&](const Tensor& t) { inputs.push_back(t); });
    std::vector<Tensor> r = autograd::checkpoint(
        [run_segment, like = detach_state(state), t0](std::span<const Tensor> in) {
          SequenceOutput<State> o = (*run_segment)(in[0], unflatten_state(like, in.subspan(1)), t0);
          std::vector<Tensor> out{std::move(o.output)};
          for (Tensor& t : flatten_state(o.state)) out.push_back(std::move(t));
          return out;
        },
        inputs, replay);
    outs[static_cast<std::size_t>(seg)] = std::move(r[0]);
    state = unflatten_state(std::move(state), std::span<const Tensor>(r).subspan(1));
  }
  return {cat(outs, 0), std::move(state)};
}

}  // namespace detail

/// Runs `step(x_t, state) -> state` over x [T, B, ...] (x[t] is a view, no copy). The output at each step is
/// `output_of(state)`, by default the state itself if it is a Tensor, else its first tensor (h of (h, c)).
/// With opt.checkpoint_every or opt.memory_budget (and grad mode on) the sequence runs in checkpointed
/// segments, recomputed in backward: a step or output_of that can be copied (a lambda) is copied for that; one
/// that cannot (a cell module passed by reference) must stay alive until backward has run, as must whatever a
/// lambda captures by reference.
template <class State, class Step, class OutputOf>
requires(!std::same_as<std::remove_cvref_t<OutputOf>, RunOptions>)  // a non-const options lvalue is opt
    SequenceOutput<State> run_cell(const Tensor& x, State state, Step&& step, OutputOf&& output_of,
                                   const RunOptions& opt = {}) {
  static_assert(CellState<State>,
                "run_cell: the state must be a Tensor, or a std::pair/std::tuple/std::array/std::vector of Tensors");
  static_assert(CellStep<Step, State>,
                "run_cell: the step must be callable as State(const Tensor& x_t, const State& s), returning the State "
                "type it is given (e.g. [&](const Tensor& x, const Tensor& h) { return cell(x, h); })");
  if constexpr (CellStep<Step, State>) {
    UNROLL_CHECK(x.defined() && x.dim() >= 2, ShapeError, "run_cell: input must be [T, B, ...]; got x={}",
                 x.defined() ? fmt::format("{}", x.shape()) : std::string("undefined"));
    const std::int64_t T = x.shape()[0], B = x.shape()[1];
    UNROLL_CHECK(T >= 1, ValueError, "run_cell: empty sequence; got x={}, expected at least one time step", x.shape());
    detail::check_checkpoint_options("run_cell", opt.checkpoint_every, opt.memory_budget);
    const Tensor mask = opt.lengths.empty() ? Tensor() : detail::length_mask("run_cell", opt.lengths, T, B, x.dtype());
    if constexpr (HasInitialState<std::remove_cvref_t<Step>, State>)
      if (detail::any_undefined(state)) state = step.initial_state(B, x.dtype());
    // Steps [t0, t0 + n) on their own x (a segment's, or all of x), a session over it as the step wants one.
    auto run = [](Step& stp, OutputOf& out_of, const Tensor& x_part, State s, const Tensor& mask_part, bool reverse,
                  std::int64_t t0, std::int64_t T_all, std::int64_t batch) {
      auto session = [&] {
        if constexpr (SequenceStep<Step, State>)
          return stp.template begin_sequence<State>(x_part);
        else
          return [&stp, &x_part](std::int64_t t, const State& st) -> State { return stp(x_part[t], st); };
      }();
      return detail::run_steps(session, std::move(s), out_of, mask_part, reverse, t0, x_part.shape()[0], T_all, batch);
    };
    const bool segmented = (opt.checkpoint_every > 0 || opt.memory_budget > 0) && autograd::grad_enabled() &&
                           !detail::any_undefined(state);
    std::int64_t k = 0;
    if (segmented) {
      std::int64_t step_bytes = 0;
      if (opt.memory_budget > 0) {  // one step (the first one run), on the 1-step slice of x it reads
        const Tensor x1 = narrow(x, 0, opt.reverse ? T - 1 : 0, 1);
        auto session = [&] {
          if constexpr (SequenceStep<Step, State>)
            return step.template begin_sequence<State>(x1);
          else
            return [&step, &x1](std::int64_t t, const State& st) -> State { return step(x1[t], st); };
        }();
        step_bytes = autograd::measure_kept_bytes([&] { State next = session(0, state); }, opt.generators);
      }
      k = detail::checkpoint_segment("run_cell", opt.checkpoint_every, opt.memory_budget, T, detail::state_bytes(state),
                                     step_bytes);
    }
    if (k == 0 || k >= T) return run(step, output_of, x, std::move(state), mask, opt.reverse, 0, T, B);
    auto segment = std::make_shared<std::function<SequenceOutput<State>(const Tensor&, State, std::int64_t)>>(
        [stp = detail::keep_callable(std::forward<Step>(step)),
         out_of = detail::keep_callable(std::forward<OutputOf>(output_of)), mask, reverse = opt.reverse, T, B,
         run](const Tensor& x_seg, State s, std::int64_t t0) {
          const Tensor m = mask.defined() ? narrow(mask, 0, t0, x_seg.shape()[0]) : Tensor();
          return run(*stp, *out_of, x_seg, std::move(s), m, reverse, t0, T, B);
        });
    return detail::run_segments(x, std::move(state), k, opt.reverse, std::move(segment), opt.generators);
  } else {
    throw StateError("run_cell: unreachable");  // the static_asserts above have already failed the build
  }
}

/// run_cell with the default output: the state if it is a Tensor, else its first tensor. A fused cell
/// (nn/fuse.hpp) runs the whole sequence (or each checkpointed segment) as one tape node here.
template <class State, class Step>
SequenceOutput<State> run_cell(const Tensor& x, State state, Step&& step, const RunOptions& opt = {}) {
  if constexpr (WholeSequenceStep<Step, State>) {
    // (Not while recording per-step diagnostics: the recorder watches the state between the steps.)
    if (x.defined() && x.dim() >= 2 && x.shape()[0] >= 1 && detail::active_recorder() == nullptr) {
      const std::int64_t T = x.shape()[0], B = x.shape()[1];
      if (!opt.lengths.empty()) detail::check_lengths("run_cell", opt.lengths, T, B);
      detail::check_checkpoint_options("run_cell", opt.checkpoint_every, opt.memory_budget);
      State start = state;
      if constexpr (HasInitialState<std::remove_cvref_t<Step>, State>)
        if (detail::any_undefined(start)) start = step.initial_state(B, x.dtype());
      // Steps [t0, t0 + x_part.shape()[0]) as one fused node; nullopt: the cell runs unfused.
      auto run_part = [T](Step& stp, const Tensor& x_part, const State& s, const RunOptions& o,
                          std::int64_t t0) -> std::optional<SequenceOutput<State>> {
        auto session = stp.template begin_sequence<State>(x_part);
        RunOptions local{.lengths = {}, .reverse = o.reverse};
        for (std::int64_t len : o.lengths)  // each row's steps inside this part (0: it holds its state)
          local.lengths.push_back(std::clamp<std::int64_t>(len - t0, 0, x_part.shape()[0]));
        try {
          return session.run_all(s, local);
        } catch (const Error&) {  // tracing runs the cell's first step: name it as the loop would
          unroll::detail::rethrow_with_context(
              fmt::format("run_cell: step t={} of {}: ", o.reverse ? t0 + x_part.shape()[0] - 1 : t0, T));
        }
      };
      const bool segmented = (opt.checkpoint_every > 0 || opt.memory_budget > 0) && autograd::grad_enabled();
      if (!segmented) {
        if (auto out = run_part(step, x, start, opt, 0)) return std::move(*out);
      } else {
        // Whether the cell runs fused, and (for a budget) what one fused step keeps: one step on a tape of
        // its own, dropped after.
        bool fused = false;
        const std::int64_t step_bytes = autograd::measure_kept_bytes(
            [&] {
              fused = run_part(step, narrow(x, 0, opt.reverse ? T - 1 : 0, 1), start,
                               RunOptions{.lengths = {}, .reverse = opt.reverse}, 0)
                          .has_value();
            },
            opt.generators);
        if (fused) {
          const std::int64_t k = detail::checkpoint_segment("run_cell", opt.checkpoint_every, opt.memory_budget, T,
                                                            detail::state_bytes(start), step_bytes);
          if (k >= T) {
            if (auto out = run_part(step, x, start, opt, 0)) return std::move(*out);
          } else {
            auto segment = std::make_shared<std::function<SequenceOutput<State>(const Tensor&, State, std::int64_t)>>(
                [stp = detail::keep_callable(std::forward<Step>(step)), opt, run_part](const Tensor& x_seg, State s,
                                                                                       std::int64_t t0) {
                  std::optional<SequenceOutput<State>> o = run_part(*stp, x_seg, s, opt, t0);
                  UNROLL_CHECK(o.has_value(), StateError,
                               "run_cell: the fused cell stopped running fused between segments");
                  return std::move(*o);
                });
            return detail::run_segments(x, std::move(start), k, opt.reverse, std::move(segment), opt.generators);
          }
        }
      }
    }
  }
  return run_cell(
      x, std::move(state), std::forward<Step>(step),
      [](const State& s) -> Tensor {
        if constexpr (CellState<State>)
          return detail::first_tensor(s);
        else
          return Tensor();
      },
      opt);
}

}  // namespace unroll::nn
