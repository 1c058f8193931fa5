// Built against the installed package by tools/quickstart.sh test: d/dw sum(tanh(x w)) checked by hand.
#include <cmath>
#include <cstdio>

#include <unroll/unroll.hpp>

int main() {
  auto w = unroll::tensor({0.5, -0.25}, {2, 1}, unroll::Dtype::float64).requires_grad_();
  auto x = unroll::tensor({1.0, 2.0}, {1, 2}, unroll::Dtype::float64);
  auto y = unroll::sum(unroll::tanh(unroll::matmul(x, w)));  // tanh(0.5 - 0.5) = tanh(0)
  y.backward();
  const auto g = w.grad().to_vector();
  const bool ok = std::abs(y.item()) < 1e-15 && std::abs(g[0] - 1.0) < 1e-15 && std::abs(g[1] - 2.0) < 1e-15;
  std::printf("consumer: y=%g dy/dw=[%g, %g] %s\n", y.item(), g[0], g[1], ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
