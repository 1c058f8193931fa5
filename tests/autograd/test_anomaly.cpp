// Anomaly detection (autograd/anomaly.hpp): the first nan or inf in a recorded op's output or in a node's input
// gradients is a NonFiniteError naming the op; off, nothing is checked; on, results are unchanged.
// clip_grad_norm_'s error_if_nonfinite.
#include <doctest/doctest.h>

#include <cmath>
#include <span>
#include <string>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;

TEST_SUITE("autograd/anomaly") {
  TEST_CASE("forward: a recorded op's non-finite output names the op, the count and the first index") {
    Tensor x = tensor({1.0, -1.0, 4.0}, {3}, Dtype::float64).requires_grad_();
    autograd::DetectAnomaly anomaly;
    CHECK(autograd::detect_anomaly_enabled());
    CHECK_THROWS_WITH_AS(log(x),
                         "log: non-finite output (anomaly detection); got 1 of 3 elements non-finite (1 nan, 0 inf; "
                         "the first at flat index 1) in output 0 of shape [3], expected all finite",
                         NonFiniteError);
    CHECK_THROWS_WITH_AS(div(x, zeros({3}, Dtype::float64)), doctest::Contains("div: non-finite output"),
                         NonFiniteError);
  }

  TEST_CASE("off (the default, and after the scope): the same ops give nan silently") {
    { autograd::DetectAnomaly anomaly; }
    CHECK_FALSE(autograd::detect_anomaly_enabled());
    Tensor x = tensor({1.0, -1.0}, {2}, Dtype::float64).requires_grad_();
    CHECK(std::isnan(log(x).to_vector<double>()[1]));
    autograd::DetectAnomaly off(false);  // a scope can also turn it off
    CHECK_FALSE(autograd::detect_anomaly_enabled());
  }

  TEST_CASE("backward: a non-finite gradient names the node's op and the input") {
    // sqrt(0) = 0 is finite; its gradient 1 / (2 sqrt(0)) is not.
    Tensor x = tensor({0.0, 1.0, 4.0}, {3}, Dtype::float64).requires_grad_();
    autograd::DetectAnomaly anomaly;
    Tensor y = sum(mul(sqrt(x), 3.0));
    CHECK_THROWS_WITH_AS(y.backward(),
                         "backward of sqrt: non-finite gradient for input 0 (anomaly detection); got 1 of 3 elements "
                         "non-finite (0 nan, 1 inf; the first at flat index 0) in shape [3], expected all finite",
                         NonFiniteError);
  }

  TEST_CASE("inside run_cell, the forward error says at which time step") {
    const Tensor x = tensor({1, 1, 1, 1, 1, 1, 1, 1}, {4, 2, 1}, Dtype::float64);
    Tensor w = tensor({0.5}, {1}, Dtype::float64).requires_grad_();
    autograd::DetectAnomaly anomaly;
    int calls = 0;
    auto step = [&](const Tensor& x_t, const Tensor& h) {
      // From step 2 on, log of a negative number.
      return ++calls <= 2 ? add(h, mul(x_t, w)) : log(sub(mul(x_t, w), 10.0));
    };
    CHECK_THROWS_WITH_AS(nn::run_cell(x, zeros({2, 1}, Dtype::float64), step),
                         doctest::Contains("run_cell: step t=2 of 4: log: non-finite output (anomaly detection); got 2 "
                                           "of 2 elements non-finite"),
                         NonFiniteError);
  }

  TEST_CASE("inside a built-in layer, the forward error says at which time step") {
    nn::RNN rnn({.input_size = 1, .hidden_size = 2, .nonlinearity = RnnActivation::relu, .dtype = Dtype::float64});
    for (Tensor& p : rnn.parameters()) p.data<double>()[0] = 0;
    rnn.weights(0).weight_ih.data<double>()[1] = 1.0;  // h_0 = (0, 1) from x = 1
    for (std::int64_t i = 0; i < 4; ++i) rnn.weights(0).weight_hh.data<double>()[i] = 1e308;  // h_1 = 1e308, h_2 = inf
    const Tensor x = ones({4, 1, 1}, Dtype::float64);
    autograd::DetectAnomaly anomaly;
    CHECK_THROWS_WITH_AS(rnn(x), doctest::Contains("RNN: step t=2 of 4: rnn_step(relu): non-finite output"),
                         NonFiniteError);
  }

  TEST_CASE("inside run_cell, the backward error says at which time step") {
    // sqrt(0) at step 1 is finite; its gradient is not.
    const Tensor x = tensor({1.0, 0.0, 1.0}, {3, 1, 1}, Dtype::float64);
    Tensor w = tensor({0.5}, {1}, Dtype::float64).requires_grad_();
    auto step = [&](const Tensor& x_t, const Tensor& h) { return add(h, sqrt(mul(x_t, w))); };
    autograd::DetectAnomaly anomaly;
    auto r = nn::run_cell(x, zeros({1, 1}, Dtype::float64), step);
    CHECK_THROWS_WITH_AS(sum(r.output).backward(),
                         doctest::Contains("run_cell: step t=1 of 3: backward of sqrt: non-finite gradient for input "
                                           "0 (anomaly detection)"),
                         NonFiniteError);
    // A fused cell (nn/fuse.hpp) runs node by node while detection is on, so its steps are named too.
    auto fused = nn::fuse(step);
    auto rf = nn::run_cell(x, zeros({1, 1}, Dtype::float64), fused);
    CHECK_THROWS_WITH_AS(sum(rf.output).backward(), doctest::Contains("run_cell: step t=1 of 3: backward of"),
                         NonFiniteError);
  }

  TEST_CASE("inside a built-in layer, the backward error says at which time step") {
    // All states stay 0 (x = 0, no bias), so tanh' = 1 and each step back multiplies dL/dh by W_hh^T = 1e200:
    // finite at step 2's input, infinite at step 1's.
    nn::RNN rnn({.input_size = 1, .hidden_size = 2, .dtype = Dtype::float64});
    for (Tensor& p : rnn.parameters())
      for (double& v : std::span(p.data<double>(), static_cast<std::size_t>(p.numel()))) v = 0;
    for (std::int64_t i = 0; i < 4; ++i) rnn.weights(0).weight_hh.data<double>()[i] = 1e200;
    autograd::DetectAnomaly anomaly;
    Tensor y = rnn(zeros({3, 1, 1}, Dtype::float64)).output;
    CHECK_THROWS_WITH_AS(sum(y).backward(), doctest::Contains("RNN: step t=1 of 3: backward of"), NonFiniteError);
  }

  TEST_CASE("batch shards: a shard's anomaly reaches the caller") {
    Tensor w = tensor({1.0, 0.0}, {2}, Dtype::float64).requires_grad_();
    autograd::DetectAnomaly anomaly;
    const Tensor x = tensor({1, 2, 3, 4}, {4, 1}, Dtype::float64);
    CHECK_THROWS_AS(autograd::sharded_backward(4,
                                               [&](const autograd::Shard& s) {
                                                 return sum(sqrt(mul(narrow(x, 0, s.begin, s.size()), w)));
                                               },
                                               {.shards = 2}),
                    NonFiniteError);
  }

  TEST_CASE("on, a healthy LSTM's outputs and gradients are unchanged") {
    auto run = [](bool detect) {
      default_generator().manual_seed(3);
      nn::LSTM lstm({.input_size = 4, .hidden_size = 5});
      const Tensor x = randn({6, 2, 4});
      autograd::DetectAnomaly anomaly(detect);
      Tensor y = lstm.forward(x).output;
      sum(mul(y, y)).backward();
      std::vector<std::vector<float>> out{y.to_vector<float>()};
      for (const Tensor& p : lstm.parameters()) out.push_back(p.grad().to_vector<float>());
      return out;
    };
    CHECK(run(true) == run(false));
  }
}

TEST_SUITE("optim/clip") {
  TEST_CASE("clip_grad_norm_ error_if_nonfinite: names the first bad parameter and touches nothing") {
    Tensor a = tensor({3.0, 4.0}, {2}, Dtype::float64).requires_grad_();
    Tensor b = tensor({1.0, 1.0, 1.0}, {3}, Dtype::float64).requires_grad_();
    sum(add(mul(a, 1.0), 0.0)).backward();
    sum(div(b, tensor({1.0, 0.0, 1.0}, {3}, Dtype::float64))).backward();  // b's gradient: 1, inf, 1
    const std::vector<double> before = b.grad().to_vector<double>();
    CHECK_THROWS_WITH_AS(optim::clip_grad_norm_({a, b}, 1.0, 2.0, true),
                         "clip_grad_norm_: the total norm of order 2 of the gradients is non-finite, so they cannot be "
                         "clipped; got inf (parameter 1's gradient, of shape [3], has norm inf), expected a finite norm "
                         "(find the op with autograd::DetectAnomaly, or pass error_if_nonfinite = false)",
                         NonFiniteError);
    CHECK(b.grad().to_vector<double>() == before);
    CHECK(a.grad().to_vector<double>() == std::vector<double>{1.0, 1.0});
    CHECK(std::isinf(optim::clip_grad_norm_({a, b}, 1.0)));  // without the flag: returns the norm, as PyTorch
  }
}
