// The README's custom-cell walkthrough, verbatim: a minimal gated unit written as an nn::Module, run over
// sequences with nn::run_cell, gradchecked over an unrolled sequence, and trained with Adam and truncated
// BPTT until it solves a memory task.
#include <doctest/doctest.h>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
// --- README begin ---
// Minimal gated unit: f = σ(W_f [x, h]),  h' = (1 - f) ⊙ h + f ⊙ tanh(W_c [x, f ⊙ h])
struct MGUCell : nn::Module {
  nn::Linear f, c;
  MGUCell(std::int64_t in, std::int64_t hid, Dtype dt = Dtype::float32) : f(in + hid, hid, true, dt), c(in + hid, hid, true, dt) {
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
}  // namespace

TEST_SUITE("nn/custom_cell") {
TEST_CASE("the README's MGU cell passes an unrolled float64 gradcheck through run_cell") {
  manual_seed(21);
  MGUCell cell(3, 4, Dtype::float64);
  std::vector<Tensor> inputs = {randn({6, 2, 3}, Dtype::float64).requires_grad_(), randn({2, 4}, Dtype::float64).requires_grad_()};
  for (const Tensor& p : cell.parameters()) inputs.push_back(p);
  auto report = autograd::gradcheck(
      "mgu", [&](const std::vector<Tensor>& p) { return nn::run_cell(p[0], p[1], cell).output; }, inputs);
  CHECK_MESSAGE(report.ok, report.message);
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
    auto run = nn::run_cell(x, nn::detach_state(h), cell);          // truncated BPTT: state carried, graph cut
    Tensor pred = readout(narrow(run.output, 0, lag, T - lag));      // [T - lag, B, 1]
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
}
