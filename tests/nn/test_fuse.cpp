// Fused custom cells (nn/fuse.hpp): every cell the issue names — MGU, LSTM, GRU, a layer-normalised LSTM, a
// peephole LSTM, IndRNN, a matmul-form Elman RNN — gives the same outputs and gradients fused as unfused to
// float64 round-off (with lengths, in reverse, with batch shards, in float32 to float32 round-off), random cells
// built from every fusable op agree the same way (a property test), gradcheck passes through fused
// sequences, and what cannot be fused falls back with a one-line reason.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <map>
#include <random>

#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;

namespace {

constexpr Dtype f64 = Dtype::float64;
using Pair = std::pair<Tensor, Tensor>;

// h' = h + f (tanh(W_c [x, f h]) - h), f = sigmoid(W_f [x, h])
struct MGU : nn::Module {
  nn::Linear gate, cand;
  MGU(std::int64_t in, std::int64_t hid, Dtype dt = f64) : gate(in + hid, hid, true, dt), cand(in + hid, hid, true, dt) {
    register_module("gate", gate);
    register_module("cand", cand);
  }
  Tensor operator()(const Tensor& x, const Tensor& h) const {
    const Tensor f = sigmoid(gate(cat({x, h}, 1)));
    return h + f * (tanh(cand(cat({x, f * h}, 1))) - h);
  }
};

// PyTorch's LSTM cell from primitives (gates i, f, g, o).
struct LSTM : nn::Module, nn::RecurrentWeights {  // the library's parameters, names and init
  LSTM(std::int64_t in, std::int64_t hid, Dtype dt = f64) { create(*this, "", in, hid, 4, true, dt); }
  Pair operator()(const Tensor& x, const Pair& s) const {
    auto g = chunk(linear(x, weight_ih, bias_ih) + linear(s.first, weight_hh, bias_hh), 4, 1);
    Tensor c = sigmoid(g[1]) * s.second + sigmoid(g[0]) * tanh(g[2]);
    return {sigmoid(g[3]) * tanh(c), c};
  }
};

// PyTorch's GRU cell from primitives (gates r, z, n).
struct GRU : nn::Module, nn::RecurrentWeights {  // the library's parameters, names and init
  GRU(std::int64_t in, std::int64_t hid, Dtype dt = f64) { create(*this, "", in, hid, 3, true, dt); }
  Tensor operator()(const Tensor& x, const Tensor& h) const {
    auto gi = chunk(linear(x, weight_ih, bias_ih), 3, 1);
    auto gh = chunk(linear(h, weight_hh, bias_hh), 3, 1);
    Tensor r = sigmoid(gi[0] + gh[0]), z = sigmoid(gi[1] + gh[1]);
    Tensor n = tanh(gi[2] + r * gh[2]);
    return (1.0 - z) * n + z * h;
  }
};

// Layer norm over the features from mean/var, with a gain and a shift.
Tensor layer_norm_of(const Tensor& v, const Tensor& gain, const Tensor& shift) {
  const Tensor d = v - mean(v, {-1}, true);
  return d / sqrt(mean(d * d, {-1}, true) + 1e-5) * gain + shift;
}

// Layer-normalised LSTM (Ba et al., 2016): LN on both gate products and on the cell.
struct LNLSTM : nn::Module {
  Tensor w_ih, w_hh, bias, g_ih, g_hh, g_c, s_ih, s_hh, s_c;
  LNLSTM(std::int64_t in, std::int64_t hid, Dtype dt = f64) {
    w_ih = uniform({4 * hid, in}, -0.5, 0.5, dt);
    w_hh = uniform({4 * hid, hid}, -0.5, 0.5, dt);
    bias = uniform({4 * hid}, -0.5, 0.5, dt);
    g_ih = uniform({4 * hid}, 0.5, 1.5, dt);
    g_hh = uniform({4 * hid}, 0.5, 1.5, dt);
    g_c = uniform({hid}, 0.5, 1.5, dt);
    s_ih = uniform({4 * hid}, -0.1, 0.1, dt);
    s_hh = uniform({4 * hid}, -0.1, 0.1, dt);
    s_c = uniform({hid}, -0.1, 0.1, dt);
    for (auto [name, t] : {std::pair{"w_ih", &w_ih}, {"w_hh", &w_hh}, {"bias", &bias}, {"g_ih", &g_ih}, {"g_hh", &g_hh},
                           {"g_c", &g_c}, {"s_ih", &s_ih}, {"s_hh", &s_hh}, {"s_c", &s_c}})
      register_parameter(name, *t);
  }
  Pair operator()(const Tensor& x, const Pair& s) const {
    auto g = chunk(layer_norm_of(linear(x, w_ih), g_ih, s_ih) + layer_norm_of(linear(s.first, w_hh), g_hh, s_hh) + bias,
                   4, 1);
    Tensor c = sigmoid(g[1]) * s.second + sigmoid(g[0]) * tanh(g[2]);
    return {sigmoid(g[3]) * tanh(layer_norm_of(c, g_c, s_c)), c};
  }
};

// Peephole LSTM (Gers & Schmidhuber, 2000): the gates also see the cell (diagonal weights).
struct PeepholeLSTM : nn::Module {
  Tensor w_ih, w_hh, b, p_i, p_f, p_o;
  PeepholeLSTM(std::int64_t in, std::int64_t hid, Dtype dt = f64) {
    w_ih = uniform({4 * hid, in}, -0.5, 0.5, dt);
    w_hh = uniform({4 * hid, hid}, -0.5, 0.5, dt);
    b = uniform({4 * hid}, -0.5, 0.5, dt);
    p_i = uniform({hid}, -0.5, 0.5, dt);
    p_f = uniform({hid}, -0.5, 0.5, dt);
    p_o = uniform({hid}, -0.5, 0.5, dt);
    for (auto [name, t] : {std::pair{"w_ih", &w_ih}, {"w_hh", &w_hh}, {"b", &b}, {"p_i", &p_i}, {"p_f", &p_f},
                           {"p_o", &p_o}})
      register_parameter(name, *t);
  }
  Pair operator()(const Tensor& x, const Pair& s) const {
    auto g = split(linear(x, w_ih, b) + matmul(s.first, transpose(w_hh, 0, 1)), w_hh.size(1), 1);
    const Tensor& c = s.second;
    Tensor i = sigmoid(g[0] + p_i * c), f = sigmoid(g[1] + p_f * c);
    Tensor c2 = f * c + i * tanh(g[2]);
    Tensor o = sigmoid(g[3] + p_o * c2);
    return {o * tanh(c2), c2};
  }
};

// IndRNN (Li et al., 2018): h' = relu(W x + b + u ⊙ h).
struct IndRNN : nn::Module {
  nn::Linear input;
  Tensor u;
  IndRNN(std::int64_t in, std::int64_t hid, Dtype dt = f64) : input(in, hid, true, dt) {
    u = uniform({hid}, 0.0, 1.0, dt);
    register_module("input", input);
    register_parameter("u", u);
  }
  Tensor operator()(const Tensor& x, const Tensor& h) const { return relu(input(x) + u * h); }
};

// The benchmark's tiny_rnn as a cell: h' = tanh(x W + h U + b), W [I, H], U [H, H] (matmul form).
struct TinyRNN : nn::Module {
  Tensor W, U, b;
  TinyRNN(std::int64_t in, std::int64_t hid, Dtype dt = f64) {
    W = uniform({in, hid}, -0.5, 0.5, dt);
    U = uniform({hid, hid}, -0.5, 0.5, dt);
    b = uniform({hid}, -0.5, 0.5, dt);
    register_parameter("W", W);
    register_parameter("U", U);
    register_parameter("b", b);
  }
  Tensor operator()(const Tensor& x, const Tensor& h) const { return tanh(matmul(x, W) + matmul(h, U) + b); }
};


// A random cell for the property test: `ops` random operations over a pool of values that starts with the
// input projection, the state, its projection and a parameter; the new state mixes the last value in.
struct RandomCell {
  Tensor Wx, Wh, Wh2, M, Wc, bias, p;
  std::int64_t H;
  struct Op {
    int kind, a, b;
    double s;
  };
  std::vector<Op> ops;
  RandomCell(std::int64_t in, std::int64_t hid, std::uint64_t seed) : H(hid) {
    Generator g(seed);
    Wx = uniform({hid, in}, -0.5, 0.5, f64, g).requires_grad_();
    Wh = uniform({hid, hid}, -0.5, 0.5, f64, g).requires_grad_();
    Wh2 = uniform({hid, hid}, -0.5, 0.5, f64, g).requires_grad_();
    M = uniform({hid, hid}, -0.5, 0.5, f64, g).requires_grad_();
    Wc = uniform({hid, 2 * hid}, -0.5, 0.5, f64, g).requires_grad_();
    bias = uniform({hid}, -0.5, 0.5, f64, g).requires_grad_();
    p = uniform({hid}, -0.5, 0.5, f64, g).requires_grad_();
    std::mt19937_64 rng(seed);
    const int n = 6 + static_cast<int>(rng() % 10);
    for (int i = 0; i < n; ++i) {
      const int pool = 5 + i;
      ops.push_back({static_cast<int>(rng() % 27), static_cast<int>(rng() % pool), static_cast<int>(rng() % pool),
                     0.25 + static_cast<double>(rng() % 100) / 50.0});
    }
  }
  std::vector<Tensor> parameters() const { return {Wx, Wh, Wh2, M, Wc, bias, p}; }
  Tensor operator()(const Tensor& x, const Tensor& h) const {
    std::vector<Tensor> v{linear(x, Wx), h, linear(h, Wh, bias), tanh(linear(x, Wx) + p), x.size(1) == H ? x : h};
    for (const Op& o : ops) {
      const Tensor &a = v[static_cast<std::size_t>(o.a)], &b = v[static_cast<std::size_t>(o.b)];
      const double s = o.s;
      const std::int64_t half = H / 2;
      Tensor r;
      switch (o.kind) {
        case 0: r = a + b; break;
        case 1: r = a - b; break;
        case 2: r = a * b; break;
        case 3: r = a / (abs(b) + 1.0); break;
        case 4: r = a * s; break;
        case 5: r = s - a; break;
        case 6: r = a / s; break;
        case 7: r = s / (abs(a) + 1.0); break;
        case 8: r = tanh(a); break;
        case 9: r = sigmoid(a); break;
        case 10: r = relu(a); break;
        case 11: r = silu(a); break;
        case 12: r = softplus(a); break;
        case 13: r = logsigmoid(a); break;
        case 14: r = exp(tanh(a)); break;
        case 15: r = log(sigmoid(a) + 0.5); break;
        case 16: r = sqrt(a * a + 1.0); break;
        case 17: r = pow(sigmoid(a) + 0.5, s); break;
        case 18: r = a - mean(a, {-1}, true); break;
        case 19: r = a * sum(tanh(b), {-1}, true) / static_cast<double>(H); break;
        case 20: r = cat({narrow(a, 1, 0, half), narrow(b, 1, half, H - half)}, 1); break;
        case 21: r = linear(tanh(a), Wh2); break;
        case 22: r = matmul(sigmoid(a), M); break;
        case 23: r = a + p; break;
        case 24: r = -(a - 1.5); break;
        case 25: r = linear(cat({a, b}, 1), Wc, bias); break;  // split into blocks when a, b mix input and state
        default: r = chunk(cat({a, b}, 1), 2, 1)[1] + 0.3; break;
      }
      v.push_back(r);
    }
    return 0.5 * h + 0.5 * tanh(v.back());
  }
};

template <class S>
std::vector<Tensor> leaves_of(S& s) {
  std::vector<Tensor> out;
  nn::detail::for_each_tensor(s, [&](Tensor& t) {
    t = t.detach().requires_grad_();
    out.push_back(t);
  });
  return out;
}

// Outputs and every gradient (parameters, x, the initial state) of a loss over the whole sequence.
// How a fused cell's sequence runs: all steps as one tape node (run_cell's default output), or one node per
// step (what run_cell does when given its own output_of).
enum class Nodes { whole_sequence, per_step };

template <class Cell, class State>
std::map<std::string, Tensor> run_and_grads(nn::Fused<Cell>& cell, const Tensor& x0, const State& s0, bool fused,
                                            const nn::RunOptions& opt = {}, Nodes nodes = Nodes::whole_sequence) {
  cell.set_fused(fused);
  cell.zero_grad();
  Tensor x = x0.detach().requires_grad_();
  State s = s0;
  std::vector<Tensor> start = leaves_of(s);
  auto first = [](const State& st) { return nn::detail::first_tensor(st); };
  auto r = nodes == Nodes::per_step ? nn::run_cell(x, s, cell, first, opt) : nn::run_cell(x, s, cell, opt);
  Generator gen(5);
  Tensor loss = sum(r.output * uniform(r.output.shape(), -1, 1, r.output.dtype(), gen));
  nn::detail::for_each_tensor(r.state, [&](const Tensor& t) {
    loss = loss + sum(t * uniform(t.shape(), -1, 1, t.dtype(), gen));
  });
  loss.backward();
  std::map<std::string, Tensor> out{{"output", r.output.detach()}, {"x.grad", x.grad()}};
  for (std::size_t k = 0; k < start.size(); ++k) out["state" + std::to_string(k) + ".grad"] = start[k].grad();
  for (const auto& [name, p] : cell.named_parameters()) out[name + ".grad"] = p.grad();
  return out;
}

// Sets one of the fused step's size knobs (unroll::detail::kOpsFirstBytes: which order a step's elementwise
// stages run in; kWeightRowsBytes: how many steps' weight-gradient rows a sequence gathers) for its lifetime.
struct SetBytes {
  std::int64_t& knob;
  std::int64_t saved;
  SetBytes(std::int64_t& k, std::int64_t bytes) : knob(k), saved(k) { knob = bytes; }
  ~SetBytes() { knob = saved; }
  SetBytes(const SetBytes&) = delete;
  SetBytes& operator=(const SetBytes&) = delete;
};

template <class Cell, class State>
void check_fused_equals_unfused(nn::Fused<Cell>& cell, const Tensor& x, const State& s0, const nn::RunOptions& opt = {},
                                double tol = 1e-12) {
  const auto unfused = run_and_grads(cell, x, s0, false, opt);
  // Both orders of the step's elementwise stages (each row through all ops; each op over all rows), each
  // compiled afresh; the sequence as one tape node and as one per step. With the first order, a whole
  // sequence multiplies its weight-gradient rows step by step (the smallest gather), with the second all at once.
  for (const std::int64_t bytes : {std::int64_t{0}, std::int64_t{1} << 20})
    for (const Nodes nodes : {Nodes::whole_sequence, Nodes::per_step}) {
      CAPTURE(bytes);
      CAPTURE(nodes == Nodes::per_step);
      const SetBytes order(unroll::detail::kOpsFirstBytes, bytes);
      const SetBytes gather(unroll::detail::kWeightRowsBytes, bytes == 0 ? 1 : std::int64_t{1} << 30);
      cell.fused_step().clear();
      const auto fused = run_and_grads(cell, x, s0, true, opt, nodes);
      CHECK_MESSAGE(cell.why_not() == "", cell.why_not());
      for (const auto& [name, want] : unfused) {
        INFO(name);
        REQUIRE(fused.at(name).defined() == want.defined());
        if (want.defined()) CHECK(test_support::tolerance_ratio(fused.at(name), want, tol, tol) <= 1.0);
      }
    }
  cell.fused_step().clear();  // the next run compiles with the default order
}

// Fixed, non-uniform loss weights (the same for the fused and the unfused run).
Tensor cos_weights(const Shape& s) {
  Tensor w = Tensor::empty(s, f64);
  double* p = w.data<double>();
  for (std::int64_t i = 0; i < w.numel(); ++i) p[i] = std::cos(0.7 * static_cast<double>(i));
  return w;
}

Pair zero_pair(std::int64_t B, std::int64_t H, Dtype dt = f64) { return {randn({B, H}, dt), randn({B, H}, dt)}; }

}  // namespace

TEST_SUITE("nn/fuse") {
  TEST_CASE("the issue's cells: fused equals unfused to float64 round-off, outputs and every gradient") {
    manual_seed(3);
    const std::int64_t T = 5, B = 3, I = 4, H = 6;
    const Tensor x = randn({T, B, I}, f64);
    // Batches of 3 and 16: above 8 rows a step's products run through gemm (bias-prefilled rows with beta = 1
    // forward, beta = 0 where backward's first write stores) instead of row updates.
    const std::int64_t big = 16;
    const Tensor xb = randn({T, big, I}, f64);
    SUBCASE("MGU") {
      nn::Fused<MGU> cell(I, H);
      check_fused_equals_unfused(cell, x, randn({B, H}, f64));
      check_fused_equals_unfused(cell, xb, randn({big, H}, f64));
    }
    SUBCASE("MGU with an input wider than its state: linear of [x, h] is split, its input block hoisted") {
      nn::Fused<MGU> cell(2 * H, H);
      check_fused_equals_unfused(cell, randn({T, B, 2 * H}, f64), randn({B, H}, f64));
    }
    SUBCASE("LSTM") {
      nn::Fused<LSTM> cell(I, H);
      check_fused_equals_unfused(cell, x, zero_pair(B, H));
      check_fused_equals_unfused(cell, xb, zero_pair(big, H));
    }
    SUBCASE("GRU") {
      nn::Fused<GRU> cell(I, H);
      check_fused_equals_unfused(cell, x, randn({B, H}, f64));
      check_fused_equals_unfused(cell, xb, randn({big, H}, f64));
    }
    SUBCASE("layer-normalised LSTM") {
      nn::Fused<LNLSTM> cell(I, H);
      check_fused_equals_unfused(cell, x, zero_pair(B, H));
      check_fused_equals_unfused(cell, xb, zero_pair(big, H));
    }
    SUBCASE("IndRNN") {
      nn::Fused<IndRNN> cell(I, H);
      check_fused_equals_unfused(cell, x, randn({B, H}, f64));
    }
    SUBCASE("tiny RNN (matmul form), one row") {
      nn::Fused<TinyRNN> cell(I, H);
      check_fused_equals_unfused(cell, randn({T, 1, I}, f64), randn({1, H}, f64));
    }
  }

  TEST_CASE("property: random cells of every fusable op, fused equals unfused to float64 round-off") {
    const std::int64_t T = 4, I = 6, H = 6;
    int fused_cells = 0;
    // Both orders of an elementwise stage: each row through all ops (wide rows), each op over all rows (narrow
    // rows; flat instructions as one loop over B * w). Seeds alternate between them.
    for (std::uint64_t seed = 1; seed <= 40; ++seed) {
      CAPTURE(seed);
      const SetBytes order(unroll::detail::kOpsFirstBytes, seed % 2 == 0 ? 0 : std::int64_t{1} << 20);
      const std::int64_t B = seed % 3 == 0 ? 12 : 3;  // every third cell's products through gemm (B > 8)
      const RandomCell cell(I, H, seed);
      Generator g(seed);
      const Tensor x0 = randn({T, B, I}, f64, g), h00 = randn({B, H}, f64, g);
      auto grads = [&](bool fused) {
        auto step = nn::fuse(cell);
        step.set_enabled(fused);
        Tensor x = x0.detach().requires_grad_(), h0 = h00.detach().requires_grad_();
        for (const Tensor& q : cell.parameters()) const_cast<Tensor&>(q).zero_grad();
        auto r = nn::run_cell(x, h0, step);
        sum(r.output * cos_weights(r.output.shape())).backward();
        std::vector<Tensor> out{r.output.detach(), x.grad(), h0.grad()};
        for (const Tensor& q : cell.parameters()) out.push_back(q.grad());
        if (fused) {
          CHECK_MESSAGE(step.why_not() == "", step.why_not());
          fused_cells += step.why_not().empty() ? 1 : 0;
        }
        return out;
      };
      const auto want = grads(false), got = grads(true);
      for (std::size_t k = 0; k < want.size(); ++k) {
        CAPTURE(k);
        REQUIRE(got[k].defined() == want[k].defined());
        if (want[k].defined()) CHECK(test_support::tolerance_ratio(got[k], want[k], 1e-11, 1e-11) <= 1.0);
      }
    }
    CHECK(fused_cells == 40);
  }

  TEST_CASE("a peephole LSTM whose weight is transposed inside the step: the transpose runs once per sequence") {
    manual_seed(4);
    nn::Fused<PeepholeLSTM> cell(3, 5);
    check_fused_equals_unfused(cell, randn({4, 2, 3}, f64), zero_pair(2, 5));
  }

  TEST_CASE("with lengths, in reverse, and over batch shards") {
    manual_seed(5);
    const std::int64_t T = 6, B = 4, I = 3, H = 5;
    const Tensor x = randn({T, B, I}, f64);
    nn::Fused<LSTM> cell(I, H);
    check_fused_equals_unfused(cell, x, zero_pair(B, H), {.lengths = {6, 2, 4, 1}});
    check_fused_equals_unfused(cell, x, zero_pair(B, H), {.lengths = {3, 6, 1, 5}, .reverse = true});
    // Shards: each thread traces or reuses the program for its rows; gradients equal the unsharded ones.
    auto sharded = [&](bool fused) {
      cell.set_fused(fused);
      cell.zero_grad();
      const Pair s0{zeros({B, H}, f64), zeros({B, H}, f64)};
      autograd::sharded_backward(
          B,
          [&](const autograd::Shard& s) {
            const Pair part{narrow(s0.first, 0, s.begin, s.size()), narrow(s0.second, 0, s.begin, s.size())};
            return sum(nn::run_cell(narrow(x, 1, s.begin, s.size()), part, cell).output);
          },
          {.shards = 2, .sum_loss = true});
      std::vector<Tensor> g;
      for (const Tensor& p : cell.parameters()) g.push_back(p.grad());
      return g;
    };
    const auto want = sharded(false), got = sharded(true);
    for (std::size_t k = 0; k < want.size(); ++k) CHECK(test_support::tolerance_ratio(got[k], want[k], 1e-12, 1e-12) <= 1.0);
  }

  TEST_CASE("the sequence as one node: a loss on the outputs only, on the final state only, and without grad") {
    // The node's backward starts from whichever of its outputs a gradient reached (the other is absent, not
    // zeros), with lengths and in reverse too; without gradients it runs all steps through one step's buffer.
    manual_seed(12);
    const std::int64_t T = 5, B = 3, I = 2, H = 4;
    const Tensor x = randn({T, B, I}, f64);
    const Pair s0 = zero_pair(B, H);
    nn::Fused<LSTM> cell(I, H);
    for (const nn::RunOptions& opt : {nn::RunOptions{}, nn::RunOptions{.lengths = {2, 5, 3}, .reverse = true}})
      for (const int loss_on : {0, 1, 2}) {  // outputs, the final h, the final c
        CAPTURE(loss_on);
        CAPTURE(opt.reverse);
        auto grads = [&](bool fused) {
          cell.set_fused(fused);
          cell.zero_grad();
          Tensor xr = x.detach().requires_grad_();
          auto r = nn::run_cell(xr, s0, cell, opt);
          const Tensor& y = loss_on == 0 ? r.output : loss_on == 1 ? r.state.first : r.state.second;
          sum(y * cos_weights(y.shape())).backward();
          std::vector<Tensor> g{xr.grad()};
          for (const Tensor& p : cell.parameters()) g.push_back(p.grad());
          return g;
        };
        const auto want = grads(false), got = grads(true);
        for (std::size_t k = 0; k < want.size(); ++k)
          CHECK(test_support::tolerance_ratio(got[k], want[k], 1e-12, 1e-12) <= 1.0);
      }
    NoGradGuard no_grad;
    cell.set_fused(false);
    const auto want = nn::run_cell(x, s0, cell, {.lengths = {2, 5, 3}});
    cell.set_fused(true);
    const auto got = nn::run_cell(x, s0, cell, {.lengths = {2, 5, 3}});
    CHECK(cell.why_not() == "");
    CHECK(test_support::tolerance_ratio(got.output, want.output, 1e-12, 1e-12) <= 1.0);
    CHECK(test_support::tolerance_ratio(got.state.second, want.state.second, 1e-12, 1e-12) <= 1.0);
  }

  TEST_CASE("a fused step that changes its state's shape is an error naming the step, as unfused") {
    // The whole sequence writes each step's new state where the state was: a wider one must be refused, not
    // written past the buffer's rows.
    struct Widen {
      Tensor operator()(const Tensor& x, const Tensor& h) const { return cat({h, tanh(x)}, 1); }
    };
    const Widen cell;
    auto step = nn::fuse(cell);
    std::string message;
    try {
      nn::run_cell(randn({4, 2, 3}, f64), randn({2, 3}, f64), step);
    } catch (const ShapeError& e) {
      message = e.what();
    }
    CHECK(step.why_not() == "");
    CHECK_MESSAGE(message.starts_with("run_cell: step t=0 of 4: "), message);
    CHECK_MESSAGE(message.find("changed state tensor 0's shape; got [2, 6], expected [2, 3]") != std::string::npos,
                  message);
  }

  TEST_CASE("float32: fused equals unfused to float32 round-off") {
    manual_seed(6);
    nn::Fused<GRU> cell(4, 8, Dtype::float32);
    check_fused_equals_unfused(cell, randn({5, 3, 4}), randn({3, 8}), {}, 1e-5);
  }

  TEST_CASE("gradcheck through a fused sequence") {
    manual_seed(7);
    nn::Fused<LNLSTM> cell(2, 3);
    const Tensor x = randn({4, 2, 2}, f64);
    std::vector<Tensor> inputs = cell.parameters();
    inputs.push_back(randn({2, 3}, f64).requires_grad_());
    auto r = autograd::gradcheck(
        "fused LN-LSTM",
        [&](const std::vector<Tensor>& in) {
          const Pair s0{in.back(), zeros({2, 3}, f64)};
          return nn::run_cell(x, s0, cell).output;
        },
        inputs);
    CHECK_MESSAGE(r.ok, r.message);
    CHECK(cell.why_not() == "");
  }

  TEST_CASE("one tape node for the steps, and a new shape is traced again") {
    manual_seed(8);
    nn::Fused<LSTM> cell(3, 4);
    auto& tape = autograd::Tape::current();
    tape.clear();
    auto r = nn::run_cell(randn({7, 2, 3}, f64), zero_pair(2, 4), cell);
    // The hoisted input products (a reshape and one linear), the bias add, then one node for all 7 steps:
    // twice the steps, the same nodes.
    const std::size_t nodes = tape.size();
    CHECK(nodes <= 4);
    CHECK(cell.fused_step().traces() == 1);
    tape.clear();
    r = nn::run_cell(randn({14, 2, 3}, f64), zero_pair(2, 4), cell);
    CHECK(tape.size() == nodes);
    CHECK(cell.fused_step().traces() == 1);  // T is not part of the program
    tape.clear();
    nn::run_cell(randn({7, 2, 3}, f64), zero_pair(2, 4), cell);
    CHECK(cell.fused_step().traces() == 1);  // the same shapes: the cached program
    nn::run_cell(randn({7, 5, 3}, f64), zero_pair(5, 4), cell);
    CHECK(cell.fused_step().traces() == 2);  // another batch size: traced again
    cell.eval();
    nn::run_cell(randn({7, 5, 3}, f64), zero_pair(5, 4), cell);
    CHECK(cell.fused_step().traces() == 3);  // eval mode: traced again (dropout may differ)
    tape.clear();
  }

  TEST_CASE("a bias added after the state's product is hoisted with the input projection") {
    // tanh(x W + h U + b) meets b only after the sum: (x W + b) runs once over all T*B rows, so the tape holds
    // x W, + b and the steps (x needs no gradient: its reshape is not recorded) — and b's gradient is one sum
    // over the rows, not T adds. Unhoisted, + b would be part of every step instead.
    manual_seed(9);
    nn::Fused<TinyRNN> cell(3, 4);
    auto& tape = autograd::Tape::current();
    tape.clear();
    const std::int64_t T = 6;
    const Tensor x = randn({T, 2, 3}, f64), h0 = randn({2, 4}, f64);
    auto r = nn::run_cell(x, h0, cell);  // the steps as one node
    CHECK(cell.why_not() == "");
    CHECK(tape.size() == 3);
    tape.clear();
    // One node per step and the stack of their outputs (run_cell given its own output_of).
    r = nn::run_cell(x, h0, cell, [](const Tensor& h) { return h; });
    CHECK(tape.size() == static_cast<std::size_t>(T) + 3);
    tape.clear();
  }

  TEST_CASE("a Fused cell is the cell: same parameters and state dict, loads the unfused cell's dict") {
    manual_seed(10);
    MGU plain(3, 4);
    nn::Fused<MGU> fused(3, 4);
    std::vector<std::string> a, b;
    for (const auto& [name, t] : plain.state_dict()) a.push_back(name);
    for (const auto& [name, t] : fused.state_dict()) b.push_back(name);
    CHECK(a == b);
    fused.load_state_dict(plain.state_dict());
    const Tensor x = randn({5, 2, 3}, f64), h0 = randn({2, 4}, f64);
    const Tensor want = nn::run_cell(x, h0, plain).output, got = nn::run_cell(x, h0, fused).output;
    CHECK(fused.why_not() == "");
    CHECK(test_support::tolerance_ratio(got, want, 1e-14, 1e-13) <= 1.0);
    // One step outside run_cell, fused, equals the cell's own step.
    CHECK(test_support::tolerance_ratio(fused(x[0], h0), plain(x[0], h0), 1e-14, 1e-13) <= 1.0);
    CHECK(fused.unfused(x[0], h0).to_vector() == plain(x[0], h0).to_vector());  // the same ops: bit for bit
  }

  TEST_CASE("what cannot be fused runs unfused, and why_not() names it") {
    manual_seed(9);
    const Tensor x = randn({3, 2, 4}, f64);
    const Tensor h0 = zeros({2, 4}, f64);
    Tensor w = uniform({4, 4}, -0.5, 0.5, f64).requires_grad_();
    auto run = [&](auto&& f) {
      auto step = nn::fuse(f);
      const auto fused = nn::run_cell(x, h0, step);
      step.set_enabled(false);
      const auto plain = nn::run_cell(x, h0, step);
      CHECK(test_support::tolerance_ratio(fused.output, plain.output, 1e-14, 1e-14) <= 1.0);
      step.set_enabled(true);
      nn::run_cell(x, h0, step);
      return step.why_not();
    };
    CHECK(run([&](const Tensor& xt, const Tensor& h) { return tanh(linear(xt + h, w)); }) == "");
    std::string why = run([&](const Tensor& xt, const Tensor& h) { return dropout(tanh(linear(xt + h, w)), 0.5, false); });
    CHECK(why == "");  // dropout outside training is the identity: nothing to refuse
    manual_seed(1);
    why = run([&](const Tensor& xt, const Tensor& h) {
      Generator g(1);
      return dropout(tanh(linear(xt + h, w)), 0.5, true, g);
    });
    CHECK_MESSAGE(why.find("'dropout' cannot be fused") != std::string::npos, why);
    why = run([&](const Tensor& xt, const Tensor& h) { return clamp(h, 0.0, 0.5) + xt; });
    CHECK_MESSAGE(why.find("'clamp' cannot be fused") != std::string::npos, why);
    why = run([&](const Tensor& xt, const Tensor& h) { return sum(h).item() > 0 ? xt + h : xt - h; });
    CHECK_MESSAGE(why.find("branches on its values") != std::string::npos, why);
    why = run([&](const Tensor& xt, const Tensor& h) { return tanh(linear(xt, w) * h.detach() + h); });
    CHECK_MESSAGE(why.find("changed with its inputs") != std::string::npos, why);
    why = run([&](const Tensor& xt, const Tensor& h) { return matmul(tanh(matmul(h, transpose(h, 0, 1))), h) + xt; });
    CHECK_MESSAGE(why.find("cannot be fused") != std::string::npos, why);
  }
}
