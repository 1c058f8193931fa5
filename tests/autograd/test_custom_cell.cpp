// The README's custom-cell example: a minimal gated unit written as a function of ops, gradchecked over
// a 5-step unroll (float64), and trained a little to show its loss falls.
#include <doctest/doctest.h>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
// f = sigmoid([x, h] Wf + bf);  h' = (1 - f) * h + f * tanh([x, f * h] Wc + bc)
Tensor mgu_step(const Tensor& x, const Tensor& h, const Tensor& Wf, const Tensor& bf, const Tensor& Wc,
                const Tensor& bc) {
  Tensor f = sigmoid(matmul(cat({x, h}, 1), Wf) + bf);
  Tensor c = tanh(matmul(cat({x, f * h}, 1), Wc) + bc);
  return (1.0 - f) * h + f * c;
}
}  // namespace

TEST_SUITE("autograd/custom_cell") {
TEST_CASE("a minimal gated unit passes an unrolled float64 gradcheck") {
  Generator gen(3);
  const std::int64_t T = 5, B = 2, I = 3, H = 4;
  auto leaf = [&](Shape s) { return randn(s, Dtype::float64, gen, 0.0, 0.5).requires_grad_(); };
  std::vector<Tensor> inputs = {leaf({T, B, I}), leaf({B, H}), leaf({I + H, H}), leaf({H}), leaf({I + H, H}), leaf({H})};
  auto report = autograd::gradcheck(
      "mgu",
      [&](const std::vector<Tensor>& p) {
        Tensor h = p[1];
        for (std::int64_t t = 0; t < T; ++t) h = mgu_step(p[0][t], h, p[2], p[3], p[4], p[5]);
        return h;
      },
      inputs);
  CHECK_MESSAGE(report.ok, report.message);
  CHECK(report.message.find("gradcheck 'mgu': passed") == 0);
}

TEST_CASE("the gated unit learns: loss falls with SGD over truncated windows") {
  Generator gen(5);
  const std::int64_t B = 4, I = 1, H = 8, T = 10;
  auto leaf = [&](Shape s) { return uniform(s, -0.3, 0.3, Dtype::float32, gen).requires_grad_(); };
  Tensor Wf = leaf({I + H, H}), bf = leaf({H}), Wc = leaf({I + H, H}), bc = leaf({H}), V = leaf({H, 1});
  std::vector<Tensor*> params = {&Wf, &bf, &Wc, &bc, &V};
  // Task: output the input of the previous step (a one-step memory).
  double first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    Tensor x = randn({T, B, I}, Dtype::float32, gen);
    Tensor h = zeros({B, H});
    Tensor loss = zeros({});
    for (std::int64_t t = 0; t < T; ++t) {
      h = mgu_step(x[t], h, Wf, bf, Wc, bc);
      if (t > 0) loss = loss + mse_loss(matmul(h, V), x[t - 1]);
    }
    loss.backward();
    NoGradGuard no_grad;
    for (Tensor* p : params) {
      add_(*p, p->grad(), -0.05);
      p->zero_grad();
    }
    if (step < 10) first += loss.item() / 10;
    if (step >= 290) last += loss.item() / 10;
  }
  CHECK(last < 0.5 * first);
}
}
