// gradcheck itself: it must pass correct gradients, catch a wrong one and say where, and refuse float32.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
constexpr Dtype f64 = Dtype::float64;

// y = x^2 with a deliberately wrong backward: correct (2 x g) everywhere except flat element `bad`,
// where it returns 3 x g.
Tensor bad_square(const Tensor& x, std::int64_t bad) {
  Tensor y = mul(x.detach(), x.detach());
  if (autograd::needs_grad({&x}))
    autograd::record("bad_square", y, {&x}, [xs = x.detach(), bad](autograd::GradSink& sink) {
      Tensor dx = mul(mul(sink.grad_output(), xs), 2.0);
      dx.data<double>()[bad] *= 1.5;
      sink.add(0, std::move(dx));
    });
  return y;
}

// One step of h = tanh(x_t W + h U + b) over all T steps of x [T, B, F].
Tensor rnn(const std::vector<Tensor>& in, std::int64_t bad_step = -1) {
  const Tensor &x = in[0], &W = in[1], &U = in[2], &b = in[3];
  Tensor h = zeros({x.size(1), W.size(1)}, f64);
  for (std::int64_t t = 0; t < x.size(0); ++t) {
    Tensor xt = x[t];
    if (t == bad_step) xt = bad_square(xt, 2);  // wrong gradient at x[t][1][0] (B = 2, F = 2)
    h = unroll::tanh(matmul(xt, W) + matmul(h, U) + b);
  }
  return h;
}

std::vector<Tensor> rnn_inputs() {
  Generator gen(7);
  return {randn({5, 2, 2}, f64, gen).requires_grad_(), randn({2, 3}, f64, gen, 0.0, 0.5).requires_grad_(),
          randn({3, 3}, f64, gen, 0.0, 0.5).requires_grad_(), randn({3}, f64, gen, 0.0, 0.5).requires_grad_()};
}
}  // namespace

TEST_SUITE("autograd/gradcheck") {
  TEST_CASE("gradcheck passes a composed float64 expression") {
    Generator gen(3);
    std::vector<Tensor> in = {randn({3, 4}, f64, gen).requires_grad_(), randn({4, 2}, f64, gen).requires_grad_(),
                              (rand({3, 2}, f64, gen) + 0.5).requires_grad_()};
    auto f = [](const std::vector<Tensor>& x) {
      Tensor z = unroll::tanh(matmul(x[0], x[1])) * sigmoid(x[2]) + x[2] * x[2];
      return softmax(z / x[2], 1);
    };
    const auto r = autograd::gradcheck("composed", f, in);
    INFO(r.message);
    CHECK(r.ok);
    CHECK(r.message.find("passed") != std::string::npos);
  }

  TEST_CASE("gradcheck fails a wrong gradient and names the input and the multi-index") {
    Generator gen(5);
    std::vector<Tensor> in = {randn({2, 3}, f64, gen).requires_grad_(), randn({2, 3}, f64, gen).requires_grad_()};
    auto f = [](const std::vector<Tensor>& x) { return x[0] * bad_square(x[1], 5); };  // flat 5 = [1, 2]
    const auto r = autograd::gradcheck("bad", f, in);
    INFO(r.message);
    CHECK_FALSE(r.ok);
    CHECK(r.input == 1);
    CHECK(r.index == std::vector<std::int64_t>{1, 2});
    CHECK(r.name == "bad");
    CHECK(r.analytic == doctest::Approx(1.5 * r.numeric).epsilon(1e-6));
    CHECK(r.message.find("gradcheck 'bad': FAILED, worst at input 1 index [1, 2]") == 0);
  }

  TEST_CASE("gradcheck refuses float32 inputs that require grad") {
    std::vector<Tensor> in = {ones({2}, f64), ones({2}, Dtype::float32).requires_grad_()};
    auto f = [](const std::vector<Tensor>& x) { return x[0] * to(x[1], f64); };
    CHECK_THROWS_WITH_AS(
        autograd::gradcheck("f32", f, in),
        "gradcheck 'f32': input 1 must be float64 for finite differences; got float32, expected float64", DtypeError);
  }

  TEST_CASE("gradcheck holds float32 inputs without grad constant") {
    std::vector<Tensor> in = {ones({2}, Dtype::float32), tensor({1, 2}, {2}, f64).requires_grad_()};
    auto f = [](const std::vector<Tensor>& x) { return to(x[0], f64) * x[1] * x[1]; };
    const auto r = autograd::gradcheck("const f32", f, in);
    INFO(r.message);
    CHECK(r.ok);
  }

  TEST_CASE("gradcheck passes an unrolled 5-step RNN") {
    const auto r = autograd::gradcheck(
        "rnn", [](const std::vector<Tensor>& x) { return rnn(x); }, rnn_inputs());
    INFO(r.message);
    CHECK(r.ok);
  }

  TEST_CASE("gradcheck on an unrolled RNN reports the time step first") {
    const auto r = autograd::gradcheck(
        "rnn bad step", [](const std::vector<Tensor>& x) { return rnn(x, 3); }, rnn_inputs());
    INFO(r.message);
    CHECK_FALSE(r.ok);
    CHECK(r.input == 0);
    REQUIRE(r.index.size() == 3);
    CHECK(r.index == std::vector<std::int64_t>{3, 1, 0});
    CHECK(r.message.find("FAILED") != std::string::npos);
  }
}
