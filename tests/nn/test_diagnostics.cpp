// tests/nn/test_diagnostics.cpp — per-step diagnostics (nn/diagnostics.hpp): the gradient norms per step
// against zero-leaf probes on the same model unrolled by hand, the layers' gate statistics against the same
// cell written from primitives reporting its gates with record_gate, results unchanged when recording, and
// nothing recorded (no node) when off.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
constexpr Dtype f64 = Dtype::float64;
using Pair = std::pair<Tensor, Tensor>;

Tensor weights_like(const Tensor& t) {
  Tensor w = Tensor::empty(t.shape(), t.dtype());
  for (std::int64_t i = 0; i < w.numel(); ++i) w.data<double>()[i] = std::cos(0.37 * static_cast<double>(i));
  return w;
}

double norm_of(const Tensor& g) { return g.defined() ? std::sqrt(sum(g * g).item()) : 0.0; }

// PyTorch's LSTM cell from primitives, with the layer's parameters, reporting its gates.
struct LSTMCellOps : nn::Module, nn::RecurrentWeights {
  explicit LSTMCellOps(const nn::RecurrentWeights& w) : nn::RecurrentWeights(w) {}
  Pair operator()(const Tensor& x, const Pair& s) const {
    auto g = chunk(linear(x, weight_ih, bias_ih) + linear(s.first, weight_hh, bias_hh), 4, 1);
    const Tensor i = sigmoid(g[0]), f = sigmoid(g[1]), gg = tanh(g[2]), o = sigmoid(g[3]);
    nn::record_gate("i", i);
    nn::record_gate("f", f);
    nn::record_gate("g", gg, nn::GateActivation::tanh);
    nn::record_gate("o", o);
    Tensor c = f * s.second + i * gg;
    return {o * tanh(c), c};
  }
};

struct GRUCellOps : nn::RecurrentWeights {
  explicit GRUCellOps(const nn::RecurrentWeights& w) : nn::RecurrentWeights(w) {}
  Tensor operator()(const Tensor& x, const Tensor& h) const {
    auto gi = chunk(linear(x, weight_ih, bias_ih), 3, 1);
    auto gh = chunk(linear(h, weight_hh, bias_hh), 3, 1);
    Tensor r = sigmoid(gi[0] + gh[0]), z = sigmoid(gi[1] + gh[1]);
    Tensor n = tanh(gi[2] + r * gh[2]);
    nn::record_gate("r", r);
    nn::record_gate("z", z);
    nn::record_gate("n", n, nn::GateActivation::tanh);
    return (1.0 - z) * n + z * h;
  }
};

void check_close(const std::vector<double>& a, const std::vector<double>& b, double tol = 1e-12) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(a[i] == doctest::Approx(b[i]).epsilon(tol).scale(1.0));
  }
}
}  // namespace

TEST_SUITE("nn/diagnostics") {
  TEST_CASE("an LSTM layer's ||dL/dh_t||, ||dL/dc_t|| and gates equal the hand-unrolled cell's") {
    const std::int64_t T = 7, B = 3, I = 4, H = 5;
    manual_seed(21);
    nn::LSTM lstm({.input_size = I, .hidden_size = H, .dtype = f64});
    lstm.weights(0).bias_hh.data<double>()[2] = 6.0;  // one saturated input-gate unit
    const Tensor x = randn({T, B, I}, f64);
    const std::vector<std::int64_t> lengths{7, 3, 5};
    for (bool with_lengths : {false, true}) {
      CAPTURE(with_lengths);
      const std::vector<std::int64_t> lens = with_lengths ? lengths : std::vector<std::int64_t>{};
      lstm.zero_grad();  // the hand-unrolled run of the previous pass added to the same parameters
      // The layer, recorded.
      nn::StepRecorder rec;
      std::vector<double> out_on;
      {
        nn::RecordSteps on(rec);
        Tensor y = lstm(x, {}, {}, lens).output;
        sum(y * weights_like(y)).backward();
        out_on = y.to_vector();
      }
      const std::vector<double> grad_on = lstm.weights(0).weight_hh.grad().to_vector();
      lstm.zero_grad();
      // The same layer, not recorded: the same values and gradients.
      {
        Tensor y = lstm(x, {}, {}, lens).output;
        sum(y * weights_like(y)).backward();
        CHECK(y.to_vector() == out_on);
        CHECK(lstm.weights(0).weight_hh.grad().to_vector() == grad_on);
      }
      lstm.zero_grad();
      // By hand: the cell from primitives with zero-leaf probes on h_t and c_t (and its gates via record_gate).
      LSTMCellOps cell(lstm.weights(0));
      const Tensor mask = with_lengths ? nn::detail::length_mask("test", lengths, T, B, f64) : ones({T, B}, f64);
      std::vector<Tensor> ph, pc, hs;
      nn::StepRecorder gates;
      {
        nn::RecordSteps on(gates);  // only for record_gate (run step by step through run_cell for the step index)
        Pair s{zeros({B, H}, f64), zeros({B, H}, f64)};
        auto r = nn::run_cell(x, s, [&](const Tensor& x_t, const Pair& st) {
          Pair n = cell(x_t, st);
          ph.push_back(zeros({B, H}, f64).requires_grad_());
          pc.push_back(zeros({B, H}, f64).requires_grad_());
          return Pair{n.first + ph.back(), n.second + pc.back()};
        }, nn::RunOptions{.lengths = lens, .reverse = false});
        sum(r.output * weights_like(r.output)).backward();
      }
      {  // the hand-unrolled run's gradient (it shares the parameters) equals the layer's
        const std::vector<double> by_hand = lstm.weights(0).weight_hh.grad().to_vector();
        check_close(by_hand, grad_on, 1e-12);
      }
      std::vector<double> want_h, want_c;
      for (std::int64_t t = 0; t < T; ++t) {
        // The probe's gradient counts only rows still running (the others hold their state, not this step's).
        const Tensor m = reshape(mask[t], {B, 1});
        for (auto [probes, want] : {std::pair{&ph, &want_h}, std::pair{&pc, &want_c}}) {
          const Tensor g = (*probes)[static_cast<std::size_t>(t)].grad();  // undefined: c_T reaches no loss
          want->push_back(g.defined() ? norm_of(g * m) : 0.0);
        }
      }
      if (!with_lengths) {
        check_close(rec.grad_norm("h_l0"), want_h);
        check_close(rec.grad_norm("c_l0"), want_c);
      }
      for (const char* g : {"i", "f", "g", "o"}) {
        CAPTURE(g);
        if (!with_lengths) {  // run_cell's record_gate counts every row; the layer only running rows
          check_close(rec.gate(std::string(g) + "_l0").mean, gates.gate(g).mean);
          check_close(rec.gate(std::string(g) + "_l0").saturated, gates.gate(g).saturated);
        }
      }
      CHECK(rec.gate("i_l0").saturated[0] > 0);  // the unit with bias 6: sigmoid > 0.99 in some rows
      CHECK(rec.state_keys() == std::vector<std::string>{"c_l0", "h_l0"});
    }
  }

  TEST_CASE("run_cell records its states' gradient norms; the GRU layer's gates equal the cell's") {
    const std::int64_t T = 6, B = 2, I = 3, H = 4;
    manual_seed(22);
    nn::GRU gru({.input_size = I, .hidden_size = H, .dtype = f64});
    const Tensor x = randn({T, B, I}, f64);
    GRUCellOps cell(gru.weights(0));
    nn::StepRecorder layer, loop;
    {
      nn::RecordSteps on(layer);
      Tensor y = gru(x).output;
      sum(y * weights_like(y)).backward();
    }
    gru.zero_grad();
    {
      nn::RecordSteps on(loop);
      auto r = nn::run_cell(x, zeros({B, H}, f64), cell);
      sum(r.output * weights_like(r.output)).backward();
    }
    check_close(layer.grad_norm("h_l0"), loop.grad_norm("state0"));
    for (const char* g : {"r", "z", "n"}) {
      CAPTURE(g);
      check_close(layer.gate(std::string(g) + "_l0").mean, loop.gate(g).mean);
      check_close(layer.gate(std::string(g) + "_l0").saturated, loop.gate(g).saturated);
    }
    // The last step's gradient is the loss weight of the last output row alone.
    CHECK(loop.grad_norm("state0").back() == doctest::Approx(norm_of(weights_like(zeros({T, B, H}, f64))[T - 1])));
  }

  TEST_CASE("off, nothing is recorded and no node is added; saturation thresholds; errors") {
    manual_seed(23);
    nn::RNN rnn({.input_size = 2, .hidden_size = 3, .bidirectional = true, .dtype = f64});
    const Tensor x = randn({5, 2, 2}, f64);
    const std::size_t plain = [&] {
      autograd::Tape tape;
      (void)rnn(x);
      return tape.size();
    }();
    nn::StepRecorder rec;
    {
      autograd::Tape tape;
      nn::RecordSteps on(rec);
      (void)rnn(x);
      CHECK(tape.size() == plain + 2 * 5);  // one watch node per step and direction
    }
    CHECK(rec.state_keys() == std::vector<std::string>{"h_l0", "h_l0_reverse"});
    CHECK(rec.gate_keys() == std::vector<std::string>{"a_l0", "a_l0_reverse"});
    CHECK(rec.grad_norm("h_l0") == std::vector<double>(5, 0.0));  // no backward yet

    nn::StepRecorder s;
    s.begin_gate("sig", 1, nn::GateActivation::sigmoid);
    s.gate_values("sig", 0, tensor({0.005, 0.5, 0.995, 0.3}, {1, 4}, f64));
    CHECK(s.gate("sig").saturated[0] == 0.5);
    CHECK(s.gate("sig").mean[0] == doctest::Approx(0.45));
    s.begin_gate("th", 1, nn::GateActivation::tanh);
    s.gate_values("th", 0, tensor({-0.995, 0.0, 0.5, 0.98}, {2, 2}, f64), tensor({1.0, 0.0}, {2}, f64));
    CHECK(s.gate("th").saturated[0] == 0.5);  // only the first row counts
    CHECK_THROWS_WITH_AS(s.grad_norm("h"), "StepRecorder: no state 'h' recorded; got 'h', expected one of none",
                         ValueError);
    CHECK_THROWS_WITH_AS(s.gate("x"), "StepRecorder: no gate 'x' recorded; got 'x', expected one of sig, th",
                         ValueError);
    CHECK_THROWS_WITH_AS(s.gate_values("sig", 3, ones({1, 1}, f64)),
                         "StepRecorder: gate step out of range for 'sig'; got t=3, expected 0 <= t < 1", IndexError);
    nn::record_gate("nobody", ones({1}, f64));  // no recorder: nothing happens
  }
}
