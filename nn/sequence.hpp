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
#include <array>
#include <concepts>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../ops/elementwise.hpp"
#include "../ops/shape_ops.hpp"
#include "rnn.hpp"

namespace unroll::nn {

struct RunOptions {
  std::vector<std::int64_t> lengths;  ///< per batch row (empty: all T); rows past their end hold their state
  bool reverse = false;               ///< run from t = T-1 down to 0 (the backward half of a bidirectional layer)
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
concept WholeSequenceStep = requires(const std::remove_cvref_t<F>& f, const Tensor& x, const S& s, const RunOptions& o) {
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

/// Runs `step(x_t, state) -> state` over x [T, B, ...] (x[t] is a view, no copy). The output at each step is
/// `output_of(state)`, by default the state itself if it is a Tensor, else its first tensor (h of (h, c)).
template <class State, class Step, class OutputOf>
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
    const Tensor mask = opt.lengths.empty() ? Tensor() : detail::length_mask("run_cell", opt.lengths, T, B, x.dtype());
    const bool undefined_start = detail::any_undefined(state);
    if constexpr (HasInitialState<std::remove_cvref_t<Step>, State>)
      if (undefined_start) state = step.initial_state(B, x.dtype());
    auto session = [&] {
      if constexpr (SequenceStep<Step, State>)
        return step.template begin_sequence<State>(x);
      else
        return [&step, &x](std::int64_t t, const State& s) -> State { return step(x[t], s); };
    }();
    std::vector<Tensor> outs(static_cast<std::size_t>(T));
    for (std::int64_t i = 0; i < T; ++i) {
      const std::int64_t t = opt.reverse ? T - 1 - i : i;
      State next = [&]() -> State {
        try {
          return session(t, state);
        } catch (const Error&) {  // the step's own message, with where it happened
          const bool hint = i == 0 && detail::any_undefined(state);
          unroll::detail::rethrow_with_context(fmt::format(
              "run_cell: step t={} of {}{}: ", t, T,
              hint ? " (the initial state is undefined: pass zeros({B, H}) for each state tensor, or give the step "
                     "State initial_state(std::int64_t batch, Dtype dtype) const)"
                   : ""));
        }
      }();
      // Each returned tensor against the one the step was given, in one pass; with lengths, rows whose
      // sequence has ended keep their state.
      const Tensor m = mask.defined() ? mask[t] : Tensor();
      detail::zip_tensors(next, state, [&](Tensor& n, const Tensor& old) {
        // An undefined tensor passed through (a cell that tolerates one) would be carried on silently.
        UNROLL_CHECK(n.defined(), ValueError,
                     "run_cell: step t={} of {} returned an undefined state tensor; got an undefined tensor, expected "
                     "a [B, ...] tensor (give an undefined initial state as zeros({{B, H}}), or the step "
                     "initial_state)",
                     t, T);
        if (old.defined()) {  // a state that broadcast into another shape would otherwise run on silently
          UNROLL_CHECK(n.shape() == old.shape(), ShapeError,
                       "run_cell: step t={} of {} changed the state's shape; got {}, expected {} (the shape it was "
                       "given; a state is [B, ...] with B = {})",
                       t, T, n.shape(), old.shape(), B);
          UNROLL_CHECK(
              n.dtype() == old.dtype(), DtypeError,
              "run_cell: step t={} of {} changed the state's dtype; got {}, expected {} (the dtype it was given)", t, T,
              n.dtype(), old.dtype());
        }
        if (!m.defined()) return;
        UNROLL_CHECK(n.dim() >= 1 && n.shape()[0] == B, ShapeError,
                     "run_cell: with lengths, every state tensor must be [B, ...]; got {}, expected [{}, ...]",
                     n.shape(), B);
        Shape s = n.shape();
        for (int k = 1; k < s.dim(); ++k) s[k] = 1;
        n = where(m.view_as_shape(s), n, old.defined() ? old : zeros_like(n));  // undefined initial state = zeros
      });
      state = std::move(next);
      outs[static_cast<std::size_t>(t)] = output_of(state);
    }
    Tensor output = stack(outs, 0);
    if (mask.defined()) {
      Shape s = output.shape();
      for (int k = 2; k < s.dim(); ++k) s[k] = 1;
      output = mul(output, mask.view_as_shape(s));
    }
    return {std::move(output), std::move(state)};
  } else {
    throw StateError("run_cell: unreachable");  // the static_asserts above have already failed the build
  }
}

/// run_cell with the default output: the state if it is a Tensor, else its first tensor. A fused cell
/// (nn/fuse.hpp) runs the whole sequence as one tape node here.
template <class State, class Step>
SequenceOutput<State> run_cell(const Tensor& x, State state, Step&& step, const RunOptions& opt = {}) {
  if constexpr (WholeSequenceStep<Step, State>) {
    if (x.defined() && x.dim() >= 2 && x.shape()[0] >= 1) {  // else the loop below reports what is wrong
      const std::int64_t T = x.shape()[0], B = x.shape()[1];
      if (!opt.lengths.empty()) detail::check_lengths("run_cell", opt.lengths, T, B);
      State start = state;
      if constexpr (HasInitialState<std::remove_cvref_t<Step>, State>)
        if (detail::any_undefined(start)) start = step.initial_state(B, x.dtype());
      auto session = step.template begin_sequence<State>(x);
      std::optional<SequenceOutput<State>> out;
      try {
        out = session.run_all(start, opt);
      } catch (const Error&) {  // tracing runs the cell's first step: name it as the loop would
        unroll::detail::rethrow_with_context(fmt::format("run_cell: step t={} of {}: ", opt.reverse ? T - 1 : 0, T));
      }
      if (out) return std::move(*out);
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
