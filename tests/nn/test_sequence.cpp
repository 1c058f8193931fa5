// The custom-cell path (nn::run_cell): it reproduces the library layers exactly when given their cells
// (including variable lengths and reverse direction), truncated BPTT with detach_state stops gradients at
// the chunk boundary, and its error texts. Cells written by users: tests/nn/test_custom_cell.cpp.
#include <doctest/doctest.h>

#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;

TEST_SUITE("nn/sequence") {
  TEST_CASE("run_cell with the library's cell reproduces the LSTM layer, with lengths and in reverse") {
    manual_seed(11);
    const std::int64_t T = 6, B = 3, I = 2, H = 4;
    nn::LSTM layer({.input_size = I, .hidden_size = H, .bidirectional = true, .dtype = Dtype::float64});
    nn::LSTMCell fwd(I, H, true, Dtype::float64), bwd(I, H, true, Dtype::float64);
    const auto &w0 = layer.weights(0), &w1 = layer.weights(0, true);
    StateDict d0, d1;
    d0.insert("weight_ih", w0.weight_ih);
    d0.insert("weight_hh", w0.weight_hh);
    d0.insert("bias_ih", w0.bias_ih);
    d0.insert("bias_hh", w0.bias_hh);
    d1.insert("weight_ih", w1.weight_ih);
    d1.insert("weight_hh", w1.weight_hh);
    d1.insert("bias_ih", w1.bias_ih);
    d1.insert("bias_hh", w1.bias_hh);
    fwd.load_state_dict(d0);
    bwd.load_state_dict(d1);
    const Tensor x = randn({T, B, I}, Dtype::float64);
    const std::vector<std::int64_t> lengths = {6, 2, 4};
    auto ref = layer(x, {}, {}, lengths);
    const std::pair<Tensor, Tensor> s0{zeros({B, H}, Dtype::float64), zeros({B, H}, Dtype::float64)};
    auto step_f = [&](const Tensor& xt, const std::pair<Tensor, Tensor>& s) { return fwd(xt, s.first, s.second); };
    auto step_b = [&](const Tensor& xt, const std::pair<Tensor, Tensor>& s) { return bwd(xt, s.first, s.second); };
    auto rf = nn::run_cell(x, s0, step_f, {.lengths = lengths});
    auto rb = nn::run_cell(x, s0, step_b, {.lengths = lengths, .reverse = true});
    const Tensor out = cat({rf.output, rb.output}, 2);
    CHECK(test_support::tolerance_ratio(out, ref.output, 1e-14, 1e-12) <= 1.0);
    CHECK(test_support::tolerance_ratio(stack({rf.state.first, rb.state.first}, 0), ref.h_n, 1e-14, 1e-12) <= 1.0);
    CHECK(test_support::tolerance_ratio(stack({rf.state.second, rb.state.second}, 0), ref.c_n, 1e-14, 1e-12) <= 1.0);
  }

  TEST_CASE("truncated BPTT: detach_state stops the gradient at the chunk boundary") {
    manual_seed(13);
    nn::GRUCell cell(2, 3, true, Dtype::float64);
    Tensor x = randn({8, 1, 2}, Dtype::float64).requires_grad_();
    auto step = [&](const Tensor& xt, const Tensor& h) { return cell(xt, h); };
    // Chunk 1 (t < 4), then chunk 2 from the detached state: x's gradient in chunk 1 stays zero.
    auto c1 = nn::run_cell(narrow(x, 0, 0, 4), zeros({1, 3}, Dtype::float64), step);
    auto c2 = nn::run_cell(narrow(x, 0, 4, 4), nn::detach_state(c1.state), step);
    sum(c2.output).backward();
    auto g = x.grad().to_vector();
    for (std::size_t i = 0; i < 8; ++i) CHECK(g[i] == 0.0);
    bool nonzero = false;
    for (std::size_t i = 8; i < 16; ++i) nonzero |= g[i] != 0.0;
    CHECK(nonzero);
    // Without detaching, the gradient reaches the first chunk.
    x.zero_grad();
    auto d1 = nn::run_cell(narrow(x, 0, 0, 4), zeros({1, 3}, Dtype::float64), step);
    auto d2 = nn::run_cell(narrow(x, 0, 4, 4), d1.state, step);
    sum(d2.output).backward();
    CHECK(x.grad().to_vector()[0] != 0.0);
    // Tuple and vector states detach too.
    auto st = nn::detach_state(std::vector<Tensor>{d1.state, d1.state});
    CHECK_FALSE(st[0].requires_grad());
  }

  TEST_CASE("run_cell error texts") {
    auto id = [](const Tensor&, const Tensor& h) { return h; };
    CHECK_THROWS_WITH_AS(nn::run_cell(zeros({4}), zeros({1}), id), "run_cell: input must be [T, B, ...]; got x=[4]",
                         ShapeError);
    CHECK_THROWS_WITH_AS(nn::run_cell(zeros({3, 2, 1}), zeros({2, 1}), id, {.lengths = {1, 4}}),
                         "run_cell: sequence length out of range; got lengths[1]=4, expected 1 <= length <= 3",
                         ValueError);
  }
}

TEST_SUITE("nn/sequence") {
  TEST_CASE("run_cell with lengths and an undefined (zero) initial state; state checks") {
    nn::GRUCell cell(2, 3, true, Dtype::float64);
    Tensor x = randn({4, 2, 2}, Dtype::float64);
    auto step = [&](const Tensor& xt, const Tensor& h) { return cell(xt, h); };
    auto a = nn::run_cell(x, Tensor(), step, {.lengths = {4, 2}});
    auto b = nn::run_cell(x, zeros({2, 3}, Dtype::float64), step, {.lengths = {4, 2}});
    CHECK(a.output.to_vector() == b.output.to_vector());
    CHECK(a.state.to_vector() == b.state.to_vector());
    auto grow = [](const Tensor&, const std::vector<Tensor>& s) {
      auto n = s;
      n.push_back(s[0]);
      return n;
    };
    CHECK_THROWS_WITH_AS(nn::run_cell(x, std::vector<Tensor>{zeros({2, 3})}, grow, {.lengths = {4, 2}}),
                         "run_cell: the step changed the number of state tensors; got 2, expected 1", ValueError);
  }

  // The rough edges a researcher meets first: an undefined start, a state of the wrong shape, an error
  // deep inside the cell, a wrong step signature.
  namespace {
  // A cell that multiplies its state (fails on an undefined one, as most user cells do).
  struct Leaky {
    Tensor w = tensor({0.5, -0.25, 0.75}, {3}, Dtype::float64);
    Tensor operator()(const Tensor& x, const Tensor& h) const { return tanh(x + h * w); }
  };
  // The same cell with a hook that makes its zero state.
  struct LeakyWithStart : Leaky {
    Tensor initial_state(std::int64_t batch, Dtype dtype) const { return zeros({batch, 3}, dtype); }
  };
  }  // namespace

  TEST_CASE("run_cell: an undefined start is the cell's initial_state, or an error that says what to pass") {
    const Tensor x = randn({4, 2, 3}, Dtype::float64);
    auto with_hook = nn::run_cell(x, Tensor(), LeakyWithStart{});
    auto explicit_zeros = nn::run_cell(x, zeros({2, 3}, Dtype::float64), Leaky{});
    CHECK(with_hook.output.to_vector() == explicit_zeros.output.to_vector());
    CHECK(with_hook.state.shape() == Shape{2, 3});
    CHECK_THROWS_WITH_AS(nn::run_cell(x, Tensor(), Leaky{}),
                         "run_cell: step t=0 of 4 (the initial state is undefined: pass zeros({B, H}) for each state "
                         "tensor, or give the step State initial_state(std::int64_t batch, Dtype dtype) const): mul: "
                         "operand is undefined; got an undefined tensor, expected a tensor",
                         StateError);
  }

  TEST_CASE("run_cell: a step that passes an undefined state tensor through is an error, not a silent carry") {
    const Tensor x = randn({3, 2, 3}, Dtype::float64);
    auto keeps_c = [](const Tensor& xt, const std::pair<Tensor, Tensor>& s) {
      return std::pair<Tensor, Tensor>{xt, s.second};  // c passed through, never computed
    };
    CHECK_THROWS_WITH_AS(
        nn::run_cell(x, std::pair<Tensor, Tensor>{zeros({2, 3}, Dtype::float64), Tensor()}, keeps_c),
        "run_cell: step t=0 of 3 returned an undefined state tensor; got an undefined tensor, expected a "
        "[B, ...] tensor (give an undefined initial state as zeros({B, H}), or the step initial_state)",
        ValueError);
  }

  TEST_CASE("run_cell: a state that changes shape or dtype is an error naming the step") {
    const Tensor x = randn({5, 2, 3}, Dtype::float64);
    // [H] instead of [B, H]: broadcasting would silently give [B, H] states.
    CHECK_THROWS_WITH_AS(
        nn::run_cell(x, zeros({3}, Dtype::float64), Leaky{}),
        "run_cell: step t=0 of 5 changed the state's shape; got [2, 3], expected [3] (the shape it was "
        "given; a state is [B, ...] with B = 2)",
        ShapeError);
    auto to32 = [](const Tensor& xt, const Tensor& h) {
      return h.shape() == xt.shape() ? to(h + xt, Dtype::float32) : h;
    };
    CHECK_THROWS_WITH_AS(
        nn::run_cell(x, zeros({2, 3}, Dtype::float64), to32, {.lengths = {}, .reverse = true}),
        "run_cell: step t=4 of 5 changed the state's dtype; got float32, expected float64 (the dtype it "
        "was given)",
        DtypeError);
    auto pair_step = [](const Tensor& xt, const std::pair<Tensor, Tensor>& s) {
      return std::pair<Tensor, Tensor>{s.first + xt, sum(s.second, {1})};  // c loses its feature dim
    };
    CHECK_THROWS_WITH_AS(
        nn::run_cell(x, std::pair{zeros({2, 3}, Dtype::float64), zeros({2, 3}, Dtype::float64)}, pair_step),
        "run_cell: step t=0 of 5 changed the state's shape; got [2], expected [2, 3] (the shape it was "
        "given; a state is [B, ...] with B = 2)",
        ShapeError);
  }

  TEST_CASE("run_cell: an error inside the cell keeps its type and says which step") {
    const Tensor x = randn({6, 2, 3}, Dtype::float64);
    int calls = 0;
    auto fails_late = [&calls](const Tensor& xt, const Tensor& h) {
      return ++calls == 4 ? matmul(h, zeros({4, 3}, Dtype::float64)) : h + xt;
    };
    CHECK_THROWS_WITH_AS(nn::run_cell(x, zeros({2, 3}, Dtype::float64), fails_late),
                         "run_cell: step t=3 of 6: matmul: inner dimensions differ; got a=[2, 3] and b=[4, 3]",
                         ShapeError);
    // Anything that is not unroll's goes through unchanged.
    auto throws_std = [](const Tensor&, const Tensor&) -> Tensor { throw std::runtime_error("user's own"); };
    CHECK_THROWS_WITH_AS(nn::run_cell(x, zeros({2, 3}, Dtype::float64), throws_std), "user's own", std::runtime_error);
  }

  TEST_CASE("run_cell's contract as concepts: the state kinds and the step signature it accepts") {
    using State2 = std::pair<Tensor, Tensor>;
    static_assert(nn::CellState<Tensor> && nn::CellState<State2> && nn::CellState<std::tuple<Tensor, Tensor, Tensor>> &&
                  nn::CellState<std::array<Tensor, 2>> && nn::CellState<std::vector<Tensor>> &&
                  nn::CellState<std::pair<Tensor, std::vector<Tensor>>>);
    static_assert(!nn::CellState<int> && !nn::CellState<std::pair<Tensor, double>> &&
                  !nn::CellState<std::vector<float>>);
    auto good = [](const Tensor& x, const Tensor& h) { return x + h; };
    auto two_args_wrong = [](const Tensor& x, const Tensor& h, const Tensor& c) { return x + h + c; };
    auto returns_pair = [](const Tensor& x, const Tensor& h) { return std::pair<Tensor, Tensor>{x, h}; };
    static_assert(nn::CellStep<decltype(good), Tensor>);
    static_assert(!nn::CellStep<decltype(two_args_wrong), Tensor>);
    static_assert(!nn::CellStep<decltype(returns_pair), Tensor>);
    static_assert(nn::HasInitialState<LeakyWithStart, Tensor> && !nn::HasInitialState<Leaky, Tensor>);
    CHECK(true);  // the checks above are compile-time; tests/nn/run_cell_contract.cpp checks the message
  }
}
