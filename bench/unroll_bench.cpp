// bench/unroll_bench.cpp — the benchmark workloads on unroll. Same flags, timing and JSON output as
// torch_bench.cpp (both use harness.hpp), so one run compares the two.
//
// Adding a workload: one `bench::Prepared NAME(bench::Args&)` function that builds parameters and data
// outside the timed region and returns the step closure, plus one row in kWorkloads.
#include <unroll/core/blas.hpp>
#include <unroll/unroll.hpp>

#include "harness.hpp"

namespace {
constexpr std::uint64_t kSeed = 42;

unroll::Tensor make_param(const unroll::Shape& shape, unroll::Generator& gen) {
  return unroll::uniform(shape, -0.1, 0.1, unroll::Dtype::float32, gen).requires_grad_();
}

// tiny_rnn: h = tanh(x_t W + h U + b) for T steps, loss = sum(h_T), backward. So small that the
// arithmetic is negligible: the time is the engine's per-op cost (recording, allocation, backward walk).
bench::Prepared tiny_rnn(bench::Args& args) {
  const int B = args.get_int("batch", 1, 1);
  const int I = args.get_int("input", 16, 1);
  const int H = args.get_int("hidden", 32, 1);
  const int T = args.get_int("seq", 200, 1);
  unroll::Generator gen(kSeed);
  unroll::Tensor W = make_param({I, H}, gen), U = make_param({H, H}, gen), b = make_param({H}, gen);
  const unroll::Tensor x = unroll::rand({T, B, I}, unroll::Dtype::float32, gen);
  const unroll::Tensor h0 = unroll::zeros({B, H});
  auto step = [W, U, b, x, h0, T]() mutable {
    unroll::Tensor h = h0;
    for (int t = 0; t < T; ++t) h = unroll::tanh(unroll::matmul(x[t], W) + unroll::matmul(h, U) + b);
    unroll::sum(h).backward();
    W.zero_grad();
    U.zero_grad();
    b.zero_grad();
  };
  nlohmann::json config = {{"batch", B}, {"input", I}, {"hidden", H}, {"seq", T}};
  return {config, static_cast<double>(B) * T, step};
}

// elementwise: y = tanh(a + b) on n floats, no autograd; run at --threads 1 and 2 to see where splitting
// the loop across threads starts to pay (this sets kElementwiseGrain in core/parallel.hpp).
bench::Prepared elementwise(bench::Args& args) {
  const int n = args.get_int("n", 1 << 16, 1);
  unroll::detail::kElementwiseGrain = args.get_int("grain", static_cast<int>(unroll::detail::kElementwiseGrain), 1);
  unroll::Generator gen(kSeed);
  const unroll::Tensor a = unroll::rand({n}, unroll::Dtype::float32, gen), b = unroll::rand({n}, unroll::Dtype::float32, gen);
  auto step = [a, b] {
    for (int r = 0; r < 100; ++r) unroll::tanh(a + b);  // 100 repetitions: one step is too short to time alone
  };
  return {{{"n", n}, {"grain", unroll::detail::kElementwiseGrain}, {"repeat", 100}}, 100.0 * n, step};
}

// matmul: [m, k] x [k, n] forward, no autograd, 100 times per step; compares the inline kernel with
// OpenBLAS across sizes (this sets kSmallGemmWork in core/blas.hpp).
bench::Prepared matmul(bench::Args& args) {
  const int m = args.get_int("m", 1, 1), n = args.get_int("n", 32, 1), k = args.get_int("k", 32, 1);
  // --small-work 0 --small-rows 0 forces OpenBLAS, a large --small-work forces the inline kernel
  unroll::detail::kSmallGemmWork = args.get_int("small-work", static_cast<int>(unroll::detail::kSmallGemmWork), 0);
  unroll::detail::kSmallGemmRows = args.get_int("small-rows", static_cast<int>(unroll::detail::kSmallGemmRows), 0);
  unroll::Generator gen(kSeed);
  const unroll::Tensor a = unroll::rand({m, k}, unroll::Dtype::float32, gen), b = unroll::rand({k, n}, unroll::Dtype::float32, gen);
  auto step = [a, b] {
    for (int r = 0; r < 100; ++r) unroll::matmul(a, b);
  };
  return {{{"m", m}, {"n", n}, {"k", k}, {"small_work", unroll::detail::kSmallGemmWork}, {"small_rows", unroll::detail::kSmallGemmRows}, {"repeat", 100}}, 100.0 * m, step};
}

const std::vector<bench::Workload> kWorkloads = {
    {"tiny_rnn", "vanilla tanh RNN, per-op overhead [--batch 1 --input 16 --hidden 32 --seq 200]", tiny_rnn},
    {"elementwise", "tanh(a + b) on n floats, x100, no autograd [--n 65536 --grain G]", elementwise},
    {"matmul", "[m,k] x [k,n] product, x100, no autograd [--m 1 --n 32 --k 32 --small-work W --small-rows R]", matmul},
};
}  // namespace

int main(int argc, char** argv) {
  return bench::run_main(argc, argv, "unroll", kWorkloads, [](int n) { unroll::set_num_threads(n); });
}
