// bench/torch_bench.cpp — LibTorch reference implementation of the benchmark
// workloads, so unroll can be compared against an established engine on the
// same machine with the same harness (flags, timing, JSON output).
//
// Adding a workload: write one `bench::Prepared NAME(bench::Args&)` function
// that reads its flags, builds parameters and data outside the timed region,
// and returns the step closure; then add one row to kWorkloads at the bottom.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "harness.hpp"

namespace {

constexpr const char* kImpl = "libtorch";

// Fixed seed so every run (and every implementation that follows the same
// recipe) times the same numbers; values matter little for speed, but NaNs or
// saturated tanh could.
constexpr uint64_t kSeed = 42;

// Parameter tensor with values uniform in (-0.1, 0.1) that records gradients.
torch::Tensor make_param(at::IntArrayRef shape) {
    return torch::empty(shape, torch::kFloat32).uniform_(-0.1, 0.1).requires_grad_(true);
}

// Drop the gradient so the next backward() allocates it afresh, like
// zero_grad(set_to_none=true) — what a training loop would do each step.
void clear_grad(torch::Tensor& p) { p.mutable_grad() = torch::Tensor(); }

// ---------------------------------------------------------------------------
// tiny_rnn: a vanilla RNN so small that the arithmetic is negligible and the
// time is dominated by per-op overhead: dispatch, autograd graph recording and
// the backward engine.  T=200 steps x ~5 ops forward, plus their backward.
// ---------------------------------------------------------------------------
bench::Prepared tiny_rnn(bench::Args& args) {
    const int B = args.get_int("batch", 1, 1);
    const int I = args.get_int("input", 16, 1);
    const int H = args.get_int("hidden", 32, 1);
    const int T = args.get_int("seq", 200, 1);

    torch::manual_seed(kSeed);
    torch::Tensor W = make_param({I, H});
    torch::Tensor U = make_param({H, H});
    torch::Tensor b = make_param({H});
    const torch::Tensor x = torch::rand({T, B, I}, torch::kFloat32);  // fixed input
    const torch::Tensor h0 = torch::zeros({B, H}, torch::kFloat32);

    // Tensors are reference-counted handles: the lambda's copies share
    // storage (and .grad) with the originals.
    auto step = [W, U, b, x, h0, T]() mutable {
        torch::Tensor h = h0;
        for (int64_t t = 0; t < T; ++t)
            h = torch::tanh(torch::mm(x[t], W) + torch::mm(h, U) + b);
        torch::Tensor loss = h.sum();
        loss.backward();
        clear_grad(W);
        clear_grad(U);
        clear_grad(b);
    };

    nlohmann::json config = {{"batch", B}, {"input", I}, {"hidden", H}, {"seq", T}};
    return {config, static_cast<double>(B) * T, step};
}

// Name -> workload table; the help string lists the flags and their defaults.
const std::vector<bench::Workload> kWorkloads = {
    {"tiny_rnn", "vanilla tanh RNN, per-op overhead [--batch 1 --input 16 --hidden 32 --seq 200]",
     tiny_rnn},
};

// Intra-op pool as requested; inter-op pool pinned to 1 so only the intra-op
// setting varies between runs.  Must run before any parallel work starts:
// LibTorch refuses to resize the inter-op pool afterwards.
void set_threads(int n) {
    torch::set_num_interop_threads(1);
    torch::set_num_threads(n);
}

}  // namespace

int main(int argc, char** argv) {
    return bench::run_main(argc, argv, kImpl, kWorkloads, set_threads);
}
