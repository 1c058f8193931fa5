// Must NOT compile: a step with the wrong signature. CTest (tests/CMakeLists.txt, nn_run_cell_contract) builds
// it and passes when the compiler's output states run_cell's contract in plain words, instead of
// pages of template deduction.
#include <unroll/nn/sequence.hpp>

using namespace unroll;

int main() {
  const Tensor x = zeros({4, 2, 3}), h = zeros({2, 3});
  auto step = [](const Tensor& x_t, const Tensor& h_t, const Tensor& c_t) { return x_t + h_t + c_t; };
  auto out = nn::run_cell(x, h, step);
  return static_cast<int>(out.output.numel());
}
