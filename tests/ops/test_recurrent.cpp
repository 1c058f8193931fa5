// The fused recurrent steps: float64 gradchecks (with and without bias, with a length mask), agreement with
// the same math composed from primitive ops, packed weight_hh (HiddenWeight) against unpacked, and error
// texts. (linear and layer_norm: tests/ops/test_linear.cpp, test_norm.cpp.)
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>

#include <unroll/core/blas.hpp>
#include <unroll/ops/recurrent_detail.hpp>
#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;
using test_support::random_leaf;

namespace {

// The cells composed from primitive ops: the reference the fused steps must match.
Tensor rnn_composed(const Tensor& gx, const Tensor& h, const Tensor& w, const Tensor& b, RnnActivation act) {
  Tensor pre = gx + linear(h, w, b);
  return act == RnnActivation::tanh ? tanh(pre) : relu(pre);
}
std::pair<Tensor, Tensor> lstm_composed(const Tensor& gx, const Tensor& h, const Tensor& c, const Tensor& w,
                                        const Tensor& b) {
  auto g = chunk(gx + linear(h, w, b), 4, 1);
  Tensor c2 = sigmoid(g[1]) * c + sigmoid(g[0]) * tanh(g[2]);
  return {sigmoid(g[3]) * tanh(c2), c2};
}
Tensor gru_composed(const Tensor& gx, const Tensor& h, const Tensor& w, const Tensor& b) {
  auto x = chunk(gx, 3, 1);
  auto hh = chunk(linear(h, w, b), 3, 1);
  Tensor r = sigmoid(x[0] + hh[0]), z = sigmoid(x[1] + hh[1]);
  Tensor n = tanh(x[2] + r * hh[2]);
  return (1.0 - z) * n + z * h;
}

// Gradients of sum(f(inputs) * w) for each input, via backward.
std::vector<Tensor> grads_of(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                             const std::vector<Tensor>& inputs, const Tensor& weight) {
  std::vector<Tensor> ins;
  for (const Tensor& t : inputs) ins.push_back(t.defined() ? copy_of(t.detach()).requires_grad_() : Tensor());
  sum(f(ins) * weight).backward();
  std::vector<Tensor> g;
  for (const Tensor& t : ins) g.push_back(t.defined() ? t.grad() : Tensor());
  return g;
}

// p[i] if present (optional trailing inputs such as a bias), else undefined.
Tensor opt(const std::vector<Tensor>& p, std::size_t i) { return i < p.size() ? p[i] : Tensor(); }

void check_close(const Tensor& a, const Tensor& b, double tol = 1e-12) {
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  CHECK(test_support::tolerance_ratio(a, b, tol, tol) <= 1.0);
}
}  // namespace

TEST_SUITE("ops/recurrent") {
  TEST_CASE("fused steps pass float64 gradchecks (bias, no bias, length mask)") {
    Generator gen(3);
    const std::int64_t B = 3, H = 4;
    const Tensor mask = tensor({1, 0, 1}, {B}, Dtype::float64);
    for (bool bias : {true, false})
      for (bool masked : {false, true}) {
        CAPTURE(bias);
        CAPTURE(masked);
        const Tensor m = masked ? mask : Tensor();
        for (RnnActivation act : {RnnActivation::tanh, RnnActivation::relu}) {
          std::vector<Tensor> in = {random_leaf({B, H}, gen), random_leaf({B, H}, gen), random_leaf({H, H}, gen)};
          if (bias) in.push_back(random_leaf({H}, gen));
          auto r = autograd::gradcheck(
              "rnn_step", [&](const std::vector<Tensor>& p) { return rnn_step(p[0], p[1], p[2], opt(p, 3), act, m); },
              in);
          CHECK_MESSAGE(r.ok, r.message);
        }
        {
          std::vector<Tensor> in = {random_leaf({B, 4 * H}, gen), random_leaf({B, H}, gen), random_leaf({B, H}, gen),
                                    random_leaf({4 * H, H}, gen)};
          if (bias) in.push_back(random_leaf({4 * H}, gen));
          for (int out : {0, 1}) {
            auto r = autograd::gradcheck(
                "lstm_step",
                [&](const std::vector<Tensor>& p) {
                  auto [h, c] = lstm_step(p[0], p[1], p[2], p[3], opt(p, 4), m);
                  return out == 0 ? h : c * h;  // c * h: both outputs' gradients at once
                },
                in);
            CHECK_MESSAGE(r.ok, r.message);
          }
        }
        {
          std::vector<Tensor> in = {random_leaf({B, 3 * H}, gen), random_leaf({B, H}, gen),
                                    random_leaf({3 * H, H}, gen)};
          if (bias) in.push_back(random_leaf({3 * H}, gen));
          auto r = autograd::gradcheck(
              "gru_step", [&](const std::vector<Tensor>& p) { return gru_step(p[0], p[1], p[2], opt(p, 3), m); }, in);
          CHECK_MESSAGE(r.ok, r.message);
        }
      }
  }

  TEST_CASE("fused steps agree with the cells composed from primitives to float64 round-off") {
    Generator gen(4);
    const std::int64_t B = 5, H = 6;
    const Tensor w_out = randn({B, H}, Dtype::float64, gen);
    for (RnnActivation act : {RnnActivation::tanh, RnnActivation::relu}) {
      std::vector<Tensor> in = {random_leaf({B, H}, gen), random_leaf({B, H}, gen), random_leaf({H, H}, gen),
                                random_leaf({H}, gen)};
      auto fused = [&](const std::vector<Tensor>& p) { return rnn_step(p[0], p[1], p[2], p[3], act); };
      auto comp = [&](const std::vector<Tensor>& p) { return rnn_composed(p[0], p[1], p[2], p[3], act); };
      check_close(fused(in), comp(in));
      auto gf = grads_of(fused, in, w_out), gc = grads_of(comp, in, w_out);
      for (std::size_t i = 0; i < in.size(); ++i) check_close(gf[i], gc[i]);
    }
    {
      std::vector<Tensor> in = {random_leaf({B, 4 * H}, gen), random_leaf({B, H}, gen), random_leaf({B, H}, gen),
                                random_leaf({4 * H, H}, gen), random_leaf({4 * H}, gen)};
      auto fused = [&](const std::vector<Tensor>& p) {
        auto [h, c] = lstm_step(p[0], p[1], p[2], p[3], p[4]);
        return h * 0.7 + c;
      };
      auto comp = [&](const std::vector<Tensor>& p) {
        auto [h, c] = lstm_composed(p[0], p[1], p[2], p[3], p[4]);
        return h * 0.7 + c;
      };
      check_close(fused(in), comp(in));
      auto gf = grads_of(fused, in, w_out), gc = grads_of(comp, in, w_out);
      for (std::size_t i = 0; i < in.size(); ++i) check_close(gf[i], gc[i]);
    }
    {
      std::vector<Tensor> in = {random_leaf({B, 3 * H}, gen), random_leaf({B, H}, gen), random_leaf({3 * H, H}, gen),
                                random_leaf({3 * H}, gen)};
      auto fused = [&](const std::vector<Tensor>& p) { return gru_step(p[0], p[1], p[2], p[3]); };
      auto comp = [&](const std::vector<Tensor>& p) { return gru_composed(p[0], p[1], p[2], p[3]); };
      check_close(fused(in), comp(in));
      auto gf = grads_of(fused, in, w_out), gc = grads_of(comp, in, w_out);
      for (std::size_t i = 0; i < in.size(); ++i) check_close(gf[i], gc[i]);
    }
  }

  TEST_CASE("a packed weight_hh gives the unpacked step's values and gradients (every cell, mask, bias)") {
    Generator gen(8);
    const std::int64_t B = 7, H = 5;  // 7 rows: a 6-row tile and a 1-row one; 4H = 20: a partial panel
    const Tensor w_out = randn({B, H}, Dtype::float64, gen);
    const Tensor mask = tensor({1, 0, 1, 1, 1, 0, 1}, {B}, Dtype::float64);
    for (bool bias : {true, false})
      for (bool masked : {false, true}) {
        CAPTURE(bias);
        CAPTURE(masked);
        const Tensor m = masked ? mask : Tensor();
        auto same = [&](const std::function<Tensor(const std::vector<Tensor>&, bool)>& f,
                        const std::vector<Tensor>& in) {
          check_close(f(in, true), f(in, false));
          auto gp = grads_of([&](const std::vector<Tensor>& p) { return f(p, true); }, in, w_out);
          auto gu = grads_of([&](const std::vector<Tensor>& p) { return f(p, false); }, in, w_out);
          for (std::size_t i = 0; i < in.size(); ++i) check_close(gp[i], gu[i]);
          auto r = autograd::gradcheck(
              "packed", [&](const std::vector<Tensor>& p) { return f(p, true); }, in);
          CHECK_MESSAGE(r.ok, r.message);
        };
        auto weight = [](const Tensor& w, bool packed) {
          return packed ? detail::HiddenWeight::packed(w) : detail::HiddenWeight(w);
        };
        std::vector<Tensor> rnn_in = {random_leaf({B, H}, gen), random_leaf({B, H}, gen), random_leaf({H, H}, gen)};
        std::vector<Tensor> lstm_in = {random_leaf({B, 4 * H}, gen), random_leaf({B, H}, gen), random_leaf({B, H}, gen),
                                       random_leaf({4 * H, H}, gen)};
        std::vector<Tensor> gru_in = {random_leaf({B, 3 * H}, gen), random_leaf({B, H}, gen),
                                      random_leaf({3 * H, H}, gen)};
        if (bias)
          rnn_in.push_back(random_leaf({H}, gen)), lstm_in.push_back(random_leaf({4 * H}, gen)),
              gru_in.push_back(random_leaf({3 * H}, gen));
        same([&](const std::vector<Tensor>& p,
                 bool pk) { return detail::rnn_step(p[0], p[1], weight(p[2], pk), opt(p, 3), RnnActivation::tanh, m); },
             rnn_in);
        same(
            [&](const std::vector<Tensor>& p, bool pk) {
              auto [h, c] = detail::lstm_step(p[0], p[1], p[2], weight(p[3], pk), opt(p, 4), m);
              return c * h;
            },
            lstm_in);
        same([&](const std::vector<Tensor>& p,
                 bool pk) { return detail::gru_step(p[0], p[1], weight(p[2], pk), opt(p, 3), m); },
             gru_in);
      }
  }

  TEST_CASE("HiddenWeight: packed only where BLAS would run; a copy packed without grad mode still backpropagates") {
    Generator gen(9);
    CHECK_FALSE(detail::HiddenWeight::prepare(zeros({16, 4}), 32).is_packed());    // small: the inline kernel
    CHECK_FALSE(detail::HiddenWeight::prepare(zeros({512, 128}), 1).is_packed());  // batch 1: the inline kernel
    // Packed only where the packed kernel was compiled for the vectors it is written for (AVX).
    CHECK(detail::HiddenWeight::prepare(zeros({512, 128}), 32).is_packed() == detail::packed_gemm_is_fast());
    CHECK_FALSE(detail::HiddenWeight::prepare(zeros({3}), 32).is_packed());  // malformed: the step reports it
    CHECK_THROWS_AS(detail::rnn_step(zeros({2, 3}), zeros({2, 3}), detail::HiddenWeight::packed(zeros({3})), {},
                                     RnnActivation::tanh),
                    ShapeError);

    Tensor gx = random_leaf({6, 12}, gen), h = random_leaf({6, 3}, gen), c = random_leaf({6, 3}, gen),
           w = random_leaf({12, 3}, gen);
    auto packed_without_grad = [&] {
      autograd::NoGradGuard off;
      return detail::HiddenWeight::packed(w);
    }();
    REQUIRE(packed_without_grad.is_packed());
    auto [h1, c1] = detail::lstm_step(gx, h, c, packed_without_grad, {});
    sum(h1 * c1).backward();
    const Tensor dh_packed = copy_of(h.grad()), dw_packed = copy_of(w.grad());
    h.zero_grad(), w.zero_grad();
    auto [h2, c2] = lstm_step(gx, h, c, w, {});
    sum(h2 * c2).backward();
    check_close(dh_packed, h.grad());
    check_close(dw_packed, w.grad());
  }

  TEST_CASE("float32 fused steps stay close to float64") {
    Generator gen(5);
    const std::int64_t B = 4, H = 8;
    Tensor gx = randn({B, 4 * H}, Dtype::float64, gen), h = randn({B, H}, Dtype::float64, gen),
           c = randn({B, H}, Dtype::float64, gen);
    Tensor w = randn({4 * H, H}, Dtype::float64, gen, 0, 0.3), b = randn({4 * H}, Dtype::float64, gen);
    auto [h64, c64] = lstm_step(gx, h, c, w, b);
    auto [h32, c32] = lstm_step(convert(gx, Dtype::float32), convert(h, Dtype::float32), convert(c, Dtype::float32),
                                convert(w, Dtype::float32), convert(b, Dtype::float32));
    CHECK(test_support::tolerance_ratio(convert(h32, Dtype::float64), h64, 1e-5, 1e-5) <= 1.0);
    CHECK(test_support::tolerance_ratio(convert(c32, Dtype::float64), c64, 1e-5, 1e-5) <= 1.0);
  }

  TEST_CASE("a masked row holds its state and passes its gradient straight through") {
    Generator gen(6);
    Tensor gx = random_leaf({2, 8}, gen), h = random_leaf({2, 2}, gen), c = random_leaf({2, 2}, gen),
           w = random_leaf({8, 2}, gen);
    auto [h2, c2] = lstm_step(gx, h, c, w, {}, tensor({1, 0}, {2}, Dtype::float64));
    auto hv = h.to_vector(), h2v = h2.to_vector(), cv = c.to_vector(), c2v = c2.to_vector();
    CHECK(h2v[2] == hv[2]);
    CHECK(h2v[3] == hv[3]);
    CHECK(c2v[3] == cv[3]);
    CHECK(h2v[0] != hv[0]);
    sum(h2 + c2).backward();
    auto gh = h.grad().to_vector(), ggx = gx.grad().to_vector();
    CHECK(gh[2] == 1.0);
    CHECK(gh[3] == 1.0);
    for (int j = 8; j < 16; ++j) CHECK(ggx[static_cast<std::size_t>(j)] == 0.0);
  }

  // A T-step sequence of lstm_step (or rnn_step) over gx [T, B, G*H] (in reverse: t = T-1 first), the
  // gradients of weight_hh and bias_hh either per step or through with_hidden_weight_grad (all steps at
  // once); sum of squares of all outputs.
  Tensor run_steps(const Tensor& gx, const Tensor& h0, const Tensor& w, const Tensor& b, bool lstm, bool one_gemm,
                   const Tensor& mask, bool reverse = false) {
    const std::int64_t T = gx.size(0);
    auto history = std::make_shared<detail::HiddenHistory>();
    // One-GEMM form as the layers use it: b is split into b_ih = b / 4 outside the steps and b_hh = b - b_ih.
    const Tensor b_ih = b * 0.25, b_hh = b - b_ih;
    const Tensor xs = one_gemm ? detail::with_hidden_weight_grad(gx, w, b_ih, b_hh, history) : gx;
    const Tensor ws = one_gemm ? w.detach() : w, bs = one_gemm ? b_ih.detach() + b_hh.detach() : b;
    std::vector<Tensor> outs(static_cast<std::size_t>(T));
    Tensor h = h0, c = zeros_like(h0);
    for (std::int64_t step = 0; step < T; ++step) {
      const std::int64_t t = reverse ? T - 1 - step : step;
      const Tensor m = mask.defined() ? mask[t] : Tensor();
      if (lstm)
        std::tie(h, c) = lstm_step(xs[t], h, c, ws, bs, m);
      else
        h = rnn_step(xs[t], h, ws, bs, RnnActivation::tanh, m);
      outs[static_cast<std::size_t>(t)] = h;
    }
    const Tensor states = stack(outs, 0);
    *history = {h0.detach(), states.detach(), reverse};
    return sum(states * states);
  }

  TEST_CASE("with_hidden_weight_grad: one GEMM over all steps gives the per-step gradients; gradcheck; errors") {
    Generator gen(11);
    const std::int64_t T = 5, B = 3, H = 4;
    const Tensor mask = tensor({1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0}, {T, B}, Dtype::float64);
    for (bool lstm : {true, false})
      for (bool masked : {false, true})
        for (bool reverse : {false, true}) {
          CAPTURE(lstm);
          CAPTURE(masked);
          CAPTURE(reverse);
          const std::int64_t G = lstm ? 4 : 1;
          const Tensor m = masked ? mask : Tensor();
          std::vector<Tensor> in = {random_leaf({T, B, G * H}, gen), random_leaf({B, H}, gen),
                                    random_leaf({G * H, H}, gen), random_leaf({G * H}, gen)};
          auto run = [&](bool one_gemm) {
            return [&, one_gemm](const std::vector<Tensor>& p) {
              return run_steps(p[0], p[1], p[2], p[3], lstm, one_gemm, m, reverse);
            };
          };
          const auto per_step = grads_of(run(false), in, ones({}, Dtype::float64));
          const auto batched = grads_of(run(true), in, ones({}, Dtype::float64));
          for (std::size_t i = 0; i < in.size(); ++i) {
            CAPTURE(i);
            check_close(batched[i], per_step[i]);
          }
          auto r = autograd::gradcheck("with_hidden_weight_grad", run(true), in);
          CHECK_MESSAGE(r.ok, r.message);
        }
    {  // T = 1 (only the initial-state product) and no initial state (a zero h0: that product is skipped)
      std::vector<Tensor> in = {random_leaf({1, B, 4 * H}, gen), random_leaf({B, H}, gen), random_leaf({4 * H, H}, gen),
                                random_leaf({4 * H}, gen)};
      const auto per_step =
          grads_of([&](const std::vector<Tensor>& p) { return run_steps(p[0], p[1], p[2], p[3], true, false, {}); }, in,
                   ones({}, Dtype::float64));
      const auto batched =
          grads_of([&](const std::vector<Tensor>& p) { return run_steps(p[0], p[1], p[2], p[3], true, true, {}); }, in,
                   ones({}, Dtype::float64));
      for (std::size_t i = 0; i < in.size(); ++i) check_close(batched[i], per_step[i]);
      Tensor gx = random_leaf({T, B, 4 * H}, gen), w = random_leaf({4 * H, H}, gen);
      auto history = std::make_shared<detail::HiddenHistory>();
      Tensor xs = detail::with_hidden_weight_grad(gx, w, {}, {}, history);
      Tensor h = zeros({B, H}, Dtype::float64), c = zeros({B, H}, Dtype::float64);
      std::vector<Tensor> outs;
      for (std::int64_t t = 0; t < T; ++t) {
        std::tie(h, c) = lstm_step(xs[t], h, c, w.detach(), {});
        outs.push_back(h);
      }
      *history = {Tensor(), stack(outs, 0).detach(), false};
      sum(stack(outs, 0)).backward();
      const Tensor dw_batched = copy_of(w.grad());
      w.zero_grad();
      h = zeros({B, H}, Dtype::float64), c = zeros({B, H}, Dtype::float64);
      outs.clear();
      for (std::int64_t t = 0; t < T; ++t) {
        std::tie(h, c) = lstm_step(gx[t], h, c, w, {});
        outs.push_back(h);
      }
      sum(stack(outs, 0)).backward();
      check_close(dw_batched, w.grad());
    }
    // Without the hidden states filled in, backward says so instead of reading garbage.
    Tensor w = random_leaf({4 * H, H}, gen);
    Tensor gx = random_leaf({T, B, 4 * H}, gen);
    Tensor tapped = detail::with_hidden_weight_grad(gx, w, {}, {}, std::make_shared<detail::HiddenHistory>());
    CHECK_THROWS_WITH_AS(
        sum(tapped).backward(),
        "with_hidden_weight_grad: the hidden states the steps read are missing or misshapen; got states=none "
        "initial=none, expected states=[5, 3, 4] and initial=[3, 4] or none",
        StateError);
    CHECK_THROWS_WITH_AS(
        detail::with_hidden_weight_grad(gx, w, {}, zeros({3}, Dtype::float64),
                                        std::make_shared<detail::HiddenHistory>()),
        "with_hidden_weight_grad: bias_hh does not match weight_hh; got b_hh=[3] and w_hh=[16, 4], expected [16]",
        ShapeError);
    CHECK_THROWS_WITH_AS(
        detail::with_hidden_weight_grad(gx, w, zeros({16, 1}, Dtype::float64), {},
                                        std::make_shared<detail::HiddenHistory>()),
        "with_hidden_weight_grad: bias_ih does not match weight_hh; got b_ih=[16, 1] and w_hh=[16, 4], expected [16]",
        ShapeError);
    CHECK_THROWS_WITH_AS(
        detail::with_hidden_weight_grad(zeros({T, B, 7}, Dtype::float64), w, {}, {},
                                        std::make_shared<detail::HiddenHistory>()),
        "with_hidden_weight_grad: input gates do not match weight_hh; got gx=[5, 3, 7] and w_hh=[16, 4], expected gx=[T, B, 16]",
        ShapeError);
  }

  // The traits entries are what the sequence layers run on: each must run its op, and its
  // gate_grad_is_input_grad must hold exactly when the step's gate gradient is its gx gradient — then the
  // bias gradient (the row sum of the gate gradient) equals the row sum of gx's gradient.
  TEST_CASE("StepTraits: each entry runs its op; gate_grad_is_input_grad holds exactly where the gradients agree") {
    Generator gen(12);
    const std::int64_t B = 3, H = 4;
    for (const detail::StepTraits* st : {&detail::rnn_tanh_step_traits, &detail::rnn_relu_step_traits,
                                         &detail::lstm_step_traits, &detail::gru_step_traits}) {
      CAPTURE(st->op);
      const std::int64_t G = st->gates;
      Tensor gx = random_leaf({B, G * H}, gen), h = random_leaf({B, H}, gen), w = random_leaf({G * H, H}, gen),
             b = random_leaf({G * H}, gen);
      Tensor c = st->has_cell_state ? random_leaf({B, H}, gen) : Tensor();
      detail::StepState s{h, c};
      st->step(gx, s, w, b, {});
      // The same step through the public op.
      Tensor expected =
          std::string(st->op) == "lstm_step" ? lstm_step(gx, h, c, w, b).first
          : std::string(st->op) == "gru_step"
              ? gru_step(gx, h, w, b)
              : rnn_step(gx, h, w, b,
                         std::string(st->op) == "rnn_step(tanh)" ? RnnActivation::tanh : RnnActivation::relu);
      check_close(s.h, expected);
      CHECK(s.c.defined() == st->has_cell_state);
      sum(s.h * s.h).backward();
      const double gap = test_support::tolerance_ratio(b.grad(), sum(gx.grad(), {0}), 1e-12, 1e-12);
      CHECK((gap <= 1.0) == st->gate_grad_is_input_grad);
    }
  }

  TEST_CASE("fused steps: error texts") {
    Tensor h = zeros({2, 3});
    CHECK_THROWS_WITH_AS(
        lstm_step(zeros({2, 11}), h, h, zeros({12, 3}), {}),
        "lstm_step: input gates do not match the hidden state; got gx=[2, 11] and h=[2, 3], expected gx=[2, 12]",
        ShapeError);
    CHECK_THROWS_WITH_AS(gru_step(zeros({2, 9}), h, zeros({9, 4}), {}),
                         "gru_step: weight_hh does not match the hidden size; got w_hh=[9, 4], expected [9, 3]",
                         ShapeError);
    CHECK_THROWS_WITH_AS(rnn_step(zeros({2, 3}), h, zeros({3, 3}), zeros({4}), RnnActivation::tanh),
                         "rnn_step(tanh): bias_hh does not match the hidden size; got b_hh=[4], expected [3]",
                         ShapeError);
    CHECK_THROWS_WITH_AS(rnn_step(zeros({2, 3}), h, zeros({3, 3}), {}, RnnActivation::relu, zeros({3})),
                         "rnn_step(relu): mask must have one entry per batch row; got mask=[3], expected [2]",
                         ShapeError);
    CHECK_THROWS_WITH_AS(lstm_step(zeros({2, 12}), h, zeros({2, 2}), zeros({12, 3}), {}),
                         "lstm_step: cell state differs from hidden state; got c=[2, 2] and h=[2, 3]", ShapeError);
    CHECK_THROWS_AS(gru_step(zeros({2, 9}, Dtype::float64), h, zeros({9, 3}), {}), DtypeError);
  }

  TEST_CASE("float32 tanh saturates to +-1 (never NaN) for huge and infinite inputs, also inside the fused steps") {
    const float inf = std::numeric_limits<float>::infinity();
    Tensor x = tensor({600.0, -1e4, 3e38, -3e38, static_cast<double>(inf), -static_cast<double>(inf), 0.3}, {7});
    auto y = tanh(x).to_vector();
    CHECK(y == std::vector<double>{1, -1, 1, -1, 1, -1, static_cast<double>(std::tanh(0.3f))});
    // An LSTM cell state of 700 (a long unroll with the forget gate open): tanh(c') must be 1, not NaN.
    Tensor gx = full({1, 4}, 50.0), h = zeros({1, 1}), c = full({1, 1}, 700.0), w = zeros({4, 1});
    auto [h2, c2] = lstm_step(gx, h, c, w, {});
    CHECK(h2.item() == doctest::Approx(1.0));
    CHECK(c2.item() == doctest::Approx(701.0));
    CHECK(rnn_step(full({1, 1}, 1e5), h, zeros({1, 1}), {}, RnnActivation::tanh).item() == 1.0);
  }
}
