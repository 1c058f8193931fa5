#pragma once
// The custom-cell path: run any user-written cell over a sequence. A cell is anything callable as
// `state = step(x_t, state)`; the state is a Tensor or a std::pair/std::tuple/std::array/std::vector of
// Tensors (LSTM-like cells carry (h, c)). Backpropagation through time is the tape of this loop.
//
//   auto [out, h] = nn::run_cell(x, h0, [&](const Tensor& x_t, const Tensor& h) { return cell(x_t, h); });
//
// Truncated BPTT: carry the final state into the next chunk through nn::detach_state(state), so the next
// backward stops at the chunk boundary.
#include <array>
#include <cstdint>
#include <tuple>
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
template <class S, class F> void for_each_tensor(S& s, F&& f) {
  if constexpr (std::is_same_v<std::remove_const_t<S>, Tensor>) f(s);
  else if constexpr (requires { s.begin(); s.end(); })
    for (auto& t : s) for_each_tensor(t, f);
  else std::apply([&](auto&... ts) { (for_each_tensor(ts, f), ...); }, s);
}
template <class S, class F> void zip_tensors(S& a, const S& b, F&& f) {
  if constexpr (std::is_same_v<S, Tensor>) f(a, b);
  else if constexpr (requires { a.begin(); a.end(); }) {
    UNROLL_CHECK(std::size(a) == std::size(b), ValueError, "run_cell: the step changed the number of state tensors; got {}, expected {}",
                 std::size(a), std::size(b));
    auto ib = b.begin();
    for (auto& t : a) zip_tensors(t, *ib++, f);
  } else {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (zip_tensors(std::get<I>(a), std::get<I>(b), f), ...); }
    (std::make_index_sequence<std::tuple_size_v<S>>{});
  }
}
template <class S> const Tensor& first_tensor(const S& s) {
  const Tensor* first = nullptr;
  for_each_tensor(s, [&](const Tensor& t) {
    if (!first) first = &t;
  });
  UNROLL_CHECK(first != nullptr, ValueError, "run_cell: the state holds no tensor; got an empty state, expected at least one tensor");
  return *first;
}
}  // namespace detail

/// The same state with every tensor detached (no gradient flows back through it): truncated BPTT.
template <class State> State detach_state(State state) {
  detail::for_each_tensor(state, [](Tensor& t) {
    if (t.defined()) t = t.detach();
  });
  return state;
}

/// Runs `step(x_t, state) -> state` over x [T, B, ...] (x[t] is a view, no copy). The output at each step is
/// `output_of(state)`, by default the state itself if it is a Tensor, else its first tensor (h of (h, c)).
template <class State, class Step, class OutputOf>
SequenceOutput<State> run_cell(const Tensor& x, State state, Step&& step, OutputOf&& output_of, const RunOptions& opt = {}) {
  UNROLL_CHECK(x.defined() && x.dim() >= 2, ShapeError, "run_cell: input must be [T, B, ...]; got x={}",
               x.defined() ? fmt::format("{}", x.shape()) : std::string("undefined"));
  const std::int64_t T = x.shape()[0], B = x.shape()[1];
  UNROLL_CHECK(T >= 1, ValueError, "run_cell: empty sequence; got x={}, expected at least one time step", x.shape());
  const Tensor mask = opt.lengths.empty() ? Tensor() : detail::length_mask("run_cell", opt.lengths, T, B, x.dtype());
  std::vector<Tensor> outs(static_cast<std::size_t>(T));
  for (std::int64_t i = 0; i < T; ++i) {
    const std::int64_t t = opt.reverse ? T - 1 - i : i;
    State next = step(x[t], state);
    if (mask.defined()) {  // rows whose sequence has ended keep their state
      const Tensor m = mask[t];
      detail::zip_tensors(next, state, [&](Tensor& n, const Tensor& old) {
        UNROLL_CHECK(n.defined() && n.dim() >= 1 && n.shape()[0] == B, ShapeError,
                     "run_cell: with lengths, every state tensor must be [B, ...]; got {}, expected [{}, ...]",
                     n.defined() ? fmt::format("{}", n.shape()) : std::string("undefined"), B);
        Shape s = n.shape();
        for (int k = 1; k < s.dim(); ++k) s[k] = 1;
        n = where(m.view_as_shape(s), n, old.defined() ? old : zeros_like(n));  // undefined initial state = zeros
      });
    }
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
}

/// run_cell with the default output: the state if it is a Tensor, else its first tensor.
template <class State, class Step>
SequenceOutput<State> run_cell(const Tensor& x, State state, Step&& step, const RunOptions& opt = {}) {
  return run_cell(x, std::move(state), std::forward<Step>(step),
                  [](const State& s) -> Tensor { return detail::first_tensor(s); }, opt);
}

}  // namespace unroll::nn
