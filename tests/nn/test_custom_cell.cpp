// Custom cells, the one home for their tests (a cell is an nn::Module run over a sequence by nn::run_cell):
// the README's walkthrough verbatim, a minimal gated unit gradchecked over an unrolled sequence and trained
// with Adam and truncated BPTT until it solves a memory task; and a layer-normalised LSTM cell, whose state
// is an (h, c) pair, gradchecked the same way. run_cell itself: tests/nn/test_sequence.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;

namespace {
// --- README begin ---
// Minimal gated unit: f = σ(W_f [x, h]),  h' = (1 - f) ⊙ h + f ⊙ tanh(W_c [x, f ⊙ h])
struct MGUCell : nn::Module {
  nn::Linear f, c;
  MGUCell(std::int64_t in, std::int64_t hid, Dtype dt = Dtype::float32)
      : f(in + hid, hid, true, dt), c(in + hid, hid, true, dt) {
    register_module("f", f);
    register_module("c", c);
  }
  Tensor operator()(const Tensor& x, const Tensor& h) const {
    Tensor gate = sigmoid(f(cat({x, h}, 1)));
    Tensor cand = tanh(c(cat({x, gate * h}, 1)));
    return (1.0 - gate) * h + gate * cand;
  }
};
// --- README end ---

// Layer-normalised LSTM cell: a custom cell built from Modules and ops (the README's second example).
struct LayerNormLSTMCell : nn::Module {
  nn::Linear ih, hh;
  nn::LayerNorm ln_gates, ln_cell;
  LayerNormLSTMCell(std::int64_t in, std::int64_t hid, Dtype dt)
      : ih(in, 4 * hid, true, dt),
        hh(hid, 4 * hid, false, dt),
        ln_gates({4 * hid}, 1e-5, true, dt),
        ln_cell({hid}, 1e-5, true, dt) {
    register_module("ih", ih);
    register_module("hh", hh);
    register_module("ln_gates", ln_gates);
    register_module("ln_cell", ln_cell);
  }
  std::pair<Tensor, Tensor> operator()(const Tensor& x, const std::pair<Tensor, Tensor>& s) const {
    auto g = chunk(ln_gates(ih(x) + hh(s.first)), 4, 1);
    Tensor c = sigmoid(g[1]) * s.second + sigmoid(g[0]) * tanh(g[2]);
    return {sigmoid(g[3]) * tanh(ln_cell(c)), c};
  }
};
}  // namespace

TEST_SUITE("nn/custom_cell") {
  TEST_CASE("the README's MGU cell passes an unrolled float64 gradcheck through run_cell") {
    manual_seed(21);
    MGUCell cell(3, 4, Dtype::float64);
    std::vector<Tensor> inputs = {randn({6, 2, 3}, Dtype::float64).requires_grad_(),
                                  randn({2, 4}, Dtype::float64).requires_grad_()};
    for (const Tensor& p : cell.parameters()) inputs.push_back(p);
    auto report = autograd::gradcheck(
        "mgu", [&](const std::vector<Tensor>& p) { return nn::run_cell(p[0], p[1], cell).output; }, inputs);
    CHECK_MESSAGE(report.ok, report.message);
    CHECK(report.message.find("gradcheck 'mgu': passed") == 0);
  }

  TEST_CASE("the README's training loop: the MGU learns to recall the input from 3 steps back") {
    manual_seed(22);
    const std::int64_t B = 16, T = 12, H = 16, lag = 3;
    MGUCell cell(1, H);
    nn::Linear readout(H, 1);
    std::vector<Tensor> params = cell.parameters();
    for (const Tensor& p : readout.parameters()) params.push_back(p);
    optim::Adam opt(params, {.lr = 1e-2});

    Tensor h = zeros({B, H});
    double first = 0, last = 0;
    for (int step = 0; step < 300; ++step) {
      Tensor x = randn({T, B, 1});
      auto run = nn::run_cell(x, nn::detach_state(h), cell);       // truncated BPTT: state carried, graph cut
      Tensor pred = readout(narrow(run.output, 0, lag, T - lag));  // [T - lag, B, 1]
      Tensor loss = mse_loss(pred, narrow(x, 0, 0, T - lag));
      opt.zero_grad();
      loss.backward();
      optim::clip_grad_norm_(params, 1.0);
      opt.step();
      h = run.state;
      if (step < 20) first += loss.item() / 20;
      if (step >= 280) last += loss.item() / 20;
    }
    MESSAGE("MGU recall loss: first 20 steps " << first << ", last 20 steps " << last);
    CHECK(last < 0.2 * first);
  }

  TEST_CASE("a layer-normalised LSTM cell passes an unrolled float64 gradcheck through run_cell") {
    manual_seed(12);
    LayerNormLSTMCell cell(3, 4, Dtype::float64);
    std::vector<Tensor> inputs = {randn({5, 2, 3}, Dtype::float64).requires_grad_(),
                                  randn({2, 4}, Dtype::float64).requires_grad_()};
    for (Tensor& p : cell.parameters()) inputs.push_back(p);
    auto r = autograd::gradcheck(
        "ln_lstm",
        [&](const std::vector<Tensor>& p) {
          auto res = nn::run_cell(p[0], std::pair<Tensor, Tensor>{p[1], zeros({2, 4}, Dtype::float64)}, cell);
          return res.output;
        },
        inputs);
    CHECK_MESSAGE(r.ok, r.message);
  }

  // IndRNN (h' = relu(W x + b + u ⊙ h)), the custom-cell README's hoisting example: the input projection of all
  // steps in one linear() before run_cell gives the same outputs and gradients as the projection inside the cell,
  // and |u| is kept bounded after the optimizer step with clamp_ under NoGradGuard.
  TEST_CASE("IndRNN with its input projection hoisted out of the loop equals the in-cell form; clamp_ constraint") {
    manual_seed(21);
    const std::int64_t T = 6, B = 3, E = 4, H = 5;
    struct IndRNNCell : nn::Module {
      nn::Linear input{4, 5, true, Dtype::float64};
      Tensor u = uniform({5}, -1.0, 1.0, Dtype::float64).requires_grad_();
      IndRNNCell() {
        register_module("input", input);
        register_parameter("u", u);
      }
      Tensor step(const Tensor& wx_t, const Tensor& h) const { return relu(wx_t + u * h); }        // projected input
      Tensor operator()(const Tensor& x_t, const Tensor& h) const { return step(input(x_t), h); }  // raw input
    } cell;
    cell.check_registered([&] { (void)cell(zeros({B, E}, Dtype::float64), zeros({B, H}, Dtype::float64)); });
    const Tensor x = randn({T, B, E}, Dtype::float64), h0 = zeros({B, H}, Dtype::float64);
    auto grads = [&](bool hoisted) {
      cell.zero_grad();
      auto run =
          hoisted ? nn::run_cell(cell.input(x), h0, [&](const Tensor& g, const Tensor& h) { return cell.step(g, h); })
                  : nn::run_cell(x, h0, cell);
      sum(run.output * run.output).backward();
      std::vector<std::vector<double>> out = {run.output.detach().to_vector()};
      for (const Tensor& p : cell.parameters()) out.push_back(p.grad().to_vector());
      return out;
    };
    const auto hoisted = grads(true), in_cell = grads(false);
    REQUIRE(hoisted.size() == in_cell.size());
    for (std::size_t i = 0; i < hoisted.size(); ++i)
      for (std::size_t j = 0; j < hoisted[i].size(); ++j)
        CHECK(hoisted[i][j] == doctest::Approx(in_cell[i][j]).epsilon(1e-12));

    optim::SGD opt(cell.parameters(), {.lr = 0.1});
    opt.step();
    {
      NoGradGuard no_grad;
      copy_(cell.u, tensor({-3, -0.5, 0.25, 1.5, 4}, {5}, Dtype::float64));  // as if a step had overshot
      clamp_(cell.u, -1.0, 1.0);
    }
    CHECK(cell.u.to_vector() == std::vector<double>{-1, -0.5, 0.25, 1, 1});
    const auto& ps = opt.params();  // the optimizer's parameter itself was constrained
    CHECK(std::any_of(ps.begin(), ps.end(), [&](const Tensor& p) { return p.same_data(cell.u); }));
  }

  // The README's second custom cell: a recurrence linear in the state runs as one scan over all steps. minGRU
  // (Feng et al. 2024): z_t = σ(W_z x_t), h~_t = W_h x_t, h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h~_t.
  namespace {
  // --- README minGRU begin ---
  struct MinGRU : nn::Module {
    nn::Linear z, h;
    MinGRU(std::int64_t in, std::int64_t hid, Dtype dt = Dtype::float32) : z(in, hid, true, dt), h(in, hid, true, dt) {
      register_module("z", z);
      register_module("h", h);
    }
    // x [T, B, I] -> every h_t [T, B, H]: the gates of all steps in two GEMMs, the recurrence in one scan node.
    Tensor operator()(const Tensor& x, const Tensor& h0 = {}) const {
      Tensor gate = sigmoid(z(x));
      return linear_scan(1.0 - gate, gate * h(x), h0);
    }
  };
  // --- README minGRU end ---
  }  // namespace

  TEST_CASE("the README's minGRU: the scan equals the same cell stepped by run_cell; unrolled gradcheck") {
    manual_seed(41);
    MinGRU cell(3, 4, Dtype::float64);
    const Tensor x = randn({7, 2, 3}, Dtype::float64), h0 = randn({2, 4}, Dtype::float64);
    auto stepped = nn::run_cell(x, h0, [&](const Tensor& x_t, const Tensor& h) {
      Tensor gate = sigmoid(cell.z(x_t));
      return (1.0 - gate) * h + gate * cell.h(x_t);
    });
    const Tensor scanned = cell(x, h0);
    CHECK(test_support::tolerance_ratio(scanned, stepped.output, 1e-13, 1e-13) <= 1.0);
    std::vector<Tensor> in = {copy_of(x).requires_grad_(), copy_of(h0).requires_grad_()};
    for (const Tensor& p : cell.parameters()) in.push_back(p);
    auto r = autograd::gradcheck(
        "mingru", [&](const std::vector<Tensor>& p) { return cell(p[0], p[1]); }, in);
    CHECK_MESSAGE(r.ok, r.message);
  }
}
