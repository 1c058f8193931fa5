// bench/torch_bench.cpp — LibTorch reference implementation of the benchmark
// workloads, so unroll can be compared against an established engine on the
// same machine with the same harness (flags, timing, JSON output).
//
// Adding a workload: write one `bench::Prepared NAME(bench::Args&)` function
// that reads its flags, builds parameters and data outside the timed region,
// and returns the step closure; then add one row to kWorkloads at the bottom.
//
// Threads: `--threads N` means N cores are available.  LibTorch is run at its
// best setting for N cores, which is not "N of everything" (see
// apply_threads); `--torch-threads K` and `--blas-threads K` override it.
#include <dlfcn.h>
#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <string>
#include <tuple>
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
// Threads
// ---------------------------------------------------------------------------

// Cores available, from --threads (run_main hands it to set_threads before
// any workload is prepared).
int g_cores = 1;

// Sets OpenBLAS's thread count and returns the count it reports back, or -1
// when the process has no OpenBLAS.  Debian's LibTorch calls the Fortran
// sgemm_ of libblas.so.3, which the alternatives system points at
// openblas-pthread, so its GEMMs run on OpenBLAS's own pthread pool: ATen's
// set_num_threads sizes only the OpenMP pool (and MKL's, which Debian lacks)
// and never touches OpenBLAS, which defaults to one thread per core.  The
// symbol is looked up at run time rather than linked so that a LibTorch on
// another BLAS (e.g. MKL, sized by set_num_threads) still builds and runs.
int set_openblas_threads(int n) {
  using SetFn = void (*)(int);
  using GetFn = int (*)();
  void* set_sym = dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
  void* get_sym = dlsym(RTLD_DEFAULT, "openblas_get_num_threads");
  if (set_sym == nullptr || get_sym == nullptr) return -1;
  reinterpret_cast<SetFn>(set_sym)(n);
  return reinterpret_cast<GetFn>(get_sym)();
}

// Configures LibTorch's pools before the workload builds anything and returns
// the setting for the config JSON.
//
// Default for N cores: intra-op 1, inter-op 1, OpenBLAS N.  LibTorch has two
// independent pools, OpenMP (intra-op: elementwise kernels, oneDNN) and
// OpenBLAS (GEMMs).  Giving both N threads oversubscribes the cores: idle
// OpenMP workers spin after each parallel region while OpenBLAS wants the
// same cores, and on the 2-core machine that was slower than one thread.
// Measured there (bench/RESULTS.md, "torch-bench threading"), the best of the
// combinations is one OpenMP thread with the GEMMs on all cores, because the
// GEMMs are where the time goes in these workloads.  Reporting LibTorch at
// its best setting keeps the comparison fair; the override flags reproduce
// the others.
nlohmann::json apply_threads(bench::Args& args) {
  const int torch_threads = args.get_int("torch-threads", 1, 1);
  const int blas_request = args.get_int("blas-threads", g_cores, 1);
  // Inter-op pool pinned to 1: nothing here runs independent ops
  // concurrently.  Must precede any parallel work: LibTorch refuses to
  // resize the inter-op pool afterwards.
  torch::set_num_interop_threads(1);
  torch::set_num_threads(torch_threads);
  const int blas_threads = set_openblas_threads(blas_request);
  if (blas_threads < 0 && args.flags.count("blas-threads") != 0)
    throw bench::UsageError("flag --blas-threads needs OpenBLAS, which this LibTorch does not load");
  nlohmann::json out = {{"torch_threads", torch::get_num_threads()},
                        {"interop_threads", torch::get_num_interop_threads()}};
  // null: not OpenBLAS, so the BLAS (if any) follows torch_threads.
  out["blas_threads"] = blas_threads < 0 ? nlohmann::json() : nlohmann::json(blas_threads);
  return out;
}

// Wraps a workload's prepare so the thread setting is applied first and
// recorded in its config.
std::function<bench::Prepared(bench::Args&)> with_threads(bench::Prepared (*prepare)(bench::Args&)) {
  return [prepare](bench::Args& args) {
    const nlohmann::json threads = apply_threads(args);
    bench::Prepared p = prepare(args);
    for (const auto& kv : threads.items()) p.config[kv.key()] = kv.value();
    return p;
  };
}

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
    for (int64_t t = 0; t < T; ++t) h = torch::tanh(torch::mm(x[t], W) + torch::mm(h, U) + b);
    torch::Tensor loss = h.sum();
    loss.backward();
    clear_grad(W);
    clear_grad(U);
    clear_grad(b);
  };

  nlohmann::json config = {{"batch", B}, {"input", I}, {"hidden", H}, {"seq", T}};
  return {config, static_cast<double>(B) * T, step};
}

// ---------------------------------------------------------------------------
// lstm_lm: one training step of a character language model, the workload a
// user of either library actually runs.  Embedding(96, H) -> LSTM(H, H, L)
// -> Linear(H, 96), cross-entropy over all T*B positions, backward, Adam.
// Modules keep PyTorch's default initialisation.  Input [T, B] (not batch
// first); the state starts at zeros every step (nothing is carried over).
// ---------------------------------------------------------------------------
bench::Prepared lstm_lm(bench::Args& args) {
  const int B = args.get_int("batch", 32, 1);
  const int T = args.get_int("seq", 64, 1);
  const int H = args.get_int("hidden", 128, 1);
  const int L = args.get_int("layers", 1, 1);
  constexpr int kVocab = 96;  // printable ASCII
  constexpr double kLr = 1e-3;

  torch::manual_seed(kSeed);
  torch::nn::Embedding embed(kVocab, H);
  torch::nn::LSTM lstm(torch::nn::LSTMOptions(H, H).num_layers(L));
  torch::nn::Linear head(H, kVocab);
  std::vector<torch::Tensor> params;
  for (const auto& group : {embed->parameters(), lstm->parameters(), head->parameters()})
    params.insert(params.end(), group.begin(), group.end());
  // shared_ptr: the optimizer is not copyable and std::function needs a
  // copyable closure.
  auto adam = std::make_shared<torch::optim::Adam>(params, torch::optim::AdamOptions(kLr));
  const torch::Tensor tokens = torch::randint(kVocab, {T, B}, torch::kInt64);
  const torch::Tensor targets = torch::randint(kVocab, {T * B}, torch::kInt64);

  // Module holders are shared_ptr handles, so the copies are the modules.
  auto step = [embed, lstm, head, adam, params, tokens, targets, T, B, H]() mutable {
    torch::Tensor x = embed(tokens);                       // [T, B, H]
    torch::Tensor out = std::get<0>(lstm(x));              // [T, B, H], zero initial state
    torch::Tensor logits = head(out.reshape({T * B, H}));  // [T*B, 96]
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits, targets);
    loss.backward();
    adam->step();
    for (auto& p : params) clear_grad(p);  // zero_grad(set_to_none=true)
  };

  nlohmann::json config = {{"batch", B}, {"seq", T},        {"hidden", H}, {"layers", L},
                           {"embed", H}, {"vocab", kVocab}, {"lr", kLr},   {"optimizer", "adam"}};
  return {config, static_cast<double>(B) * T, step};
}

// ---------------------------------------------------------------------------
// fastrnn: the classic fastrnns benchmark — one layer over T=100, B=64,
// input 512, hidden 512, forward and backward of the sum of all outputs.
// Variants: the library layer on the whole sequence (nn_lstm, nn_gru) or the
// cell composed from primitives in a loop (cell_lstm, cell_gru), which is
// what a custom cell costs.  All variants share the same parameters,
// uniform(-1/sqrt(H), 1/sqrt(H)) as PyTorch initialises them; the input and
// the initial state are fixed N(0, 1) tensors that do not require grad.
// ---------------------------------------------------------------------------

// One step of PyTorch's LSTM cell from primitives, gate order (i, f, g, o).
std::tuple<torch::Tensor, torch::Tensor> lstm_cell(const torch::Tensor& x, const torch::Tensor& h,
                                                   const torch::Tensor& c, const std::vector<torch::Tensor>& w) {
  const torch::Tensor gates = x.mm(w[0].t()) + w[2] + h.mm(w[1].t()) + w[3];
  const auto g = gates.chunk(4, 1);
  torch::Tensor c_next = torch::sigmoid(g[1]) * c + torch::sigmoid(g[0]) * torch::tanh(g[2]);
  torch::Tensor h_next = torch::sigmoid(g[3]) * torch::tanh(c_next);
  return {h_next, c_next};
}

// One step of PyTorch's GRU cell from primitives, gate order (r, z, n); the
// reset gate multiplies the recurrent candidate term including its bias.
torch::Tensor gru_cell(const torch::Tensor& x, const torch::Tensor& h, const std::vector<torch::Tensor>& w) {
  const auto gi = (x.mm(w[0].t()) + w[2]).chunk(3, 1);
  const auto gh = (h.mm(w[1].t()) + w[3]).chunk(3, 1);
  const torch::Tensor r = torch::sigmoid(gi[0] + gh[0]);
  const torch::Tensor z = torch::sigmoid(gi[1] + gh[1]);
  const torch::Tensor n = torch::tanh(gi[2] + r * gh[2]);
  return (1 - z) * n + z * h;
}

bench::Prepared fastrnn(bench::Args& args) {
  const int T = args.get_int("seq", 100, 1);
  const int B = args.get_int("batch", 64, 1);
  const int I = args.get_int("input", 512, 1);
  const int H = args.get_int("hidden", 512, 1);
  const std::string variant = args.get_str("variant", "nn_lstm");
  const bool is_lstm = variant == "nn_lstm" || variant == "cell_lstm";
  if (!is_lstm && variant != "nn_gru" && variant != "cell_gru")
    throw bench::UsageError("flag --variant expects nn_lstm, cell_lstm, cell_gru or nn_gru, got '" + variant + "'");
  const int64_t gates = (is_lstm ? 4 : 3) * static_cast<int64_t>(H);

  torch::manual_seed(kSeed);
  const double bound = 1.0 / std::sqrt(static_cast<double>(H));
  auto uniform_param = [bound](at::IntArrayRef shape) {
    return torch::empty(shape, torch::kFloat32).uniform_(-bound, bound).requires_grad_(true);
  };
  // w_ih [G, I], w_hh [G, H], b_ih [G], b_hh [G]: PyTorch's names and order.
  std::vector<torch::Tensor> w = {uniform_param({gates, I}), uniform_param({gates, H}), uniform_param({gates}),
                                  uniform_param({gates})};
  const torch::Tensor x = torch::randn({T, B, I}, torch::kFloat32);
  const torch::Tensor h0 = torch::randn({B, H}, torch::kFloat32);
  const torch::Tensor c0 = torch::randn({B, H}, torch::kFloat32);

  std::function<void()> step;
  if (variant == "nn_lstm" || variant == "nn_gru") {
    // The module's own parameters, overwritten with the shared values so
    // every variant computes the same function.
    std::shared_ptr<torch::nn::Module> module;
    torch::nn::LSTM lstm(nullptr);
    torch::nn::GRU gru(nullptr);
    if (is_lstm) {
      lstm = torch::nn::LSTM(torch::nn::LSTMOptions(I, H));
      module = lstm.ptr();
    } else {
      gru = torch::nn::GRU(torch::nn::GRUOptions(I, H));
      module = gru.ptr();
    }
    {
      torch::NoGradGuard no_grad;
      const char* names[] = {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"};
      auto named = module->named_parameters();
      for (std::size_t i = 0; i < 4; ++i) named[names[i]].copy_(w[i]);
    }
    w = module->parameters();
    const torch::Tensor h0_3d = h0.unsqueeze(0), c0_3d = c0.unsqueeze(0);  // [layers, B, H]
    if (is_lstm) {
      step = [lstm, w, x, h0_3d, c0_3d]() mutable {
        torch::Tensor out = std::get<0>(lstm(x, std::make_tuple(h0_3d, c0_3d)));
        out.sum().backward();
        for (auto& p : w) clear_grad(p);
      };
    } else {
      step = [gru, w, x, h0_3d]() mutable {
        torch::Tensor out = std::get<0>(gru(x, h0_3d));
        out.sum().backward();
        for (auto& p : w) clear_grad(p);
      };
    }
  } else if (is_lstm) {
    step = [w, x, h0, c0, T]() mutable {
      torch::Tensor h = h0, c = c0;
      std::vector<torch::Tensor> outs;
      outs.reserve(static_cast<std::size_t>(T));
      for (int64_t t = 0; t < T; ++t) {
        std::tie(h, c) = lstm_cell(x[t], h, c, w);
        outs.push_back(h);
      }
      torch::stack(outs).sum().backward();
      for (auto& p : w) clear_grad(p);
    };
  } else {
    step = [w, x, h0, T]() mutable {
      torch::Tensor h = h0;
      std::vector<torch::Tensor> outs;
      outs.reserve(static_cast<std::size_t>(T));
      for (int64_t t = 0; t < T; ++t) {
        h = gru_cell(x[t], h, w);
        outs.push_back(h);
      }
      torch::stack(outs).sum().backward();
      for (auto& p : w) clear_grad(p);
    };
  }

  nlohmann::json config = {{"seq", T}, {"batch", B}, {"input", I}, {"hidden", H}, {"layers", 1}, {"variant", variant}};
  return {config, static_cast<double>(B) * T, step};
}

// ---------------------------------------------------------------------------
// attention: torch::nn::MultiheadAttention self-attention, forward and
// backward of sum(output), need_weights off.  Input [T, B, E] requiring
// grad, N(0, 1); the module's own initialisation.
// ---------------------------------------------------------------------------
bench::Prepared attention(bench::Args& args) {
  const int T = args.get_int("seq", 64, 1);
  const int B = args.get_int("batch", 16, 1);
  const int E = args.get_int("embed", 256, 1);
  const int heads = args.get_int("heads", 4, 1);
  if (E % heads != 0) throw bench::UsageError("flag --embed must be a multiple of --heads");
  torch::manual_seed(kSeed);
  torch::nn::MultiheadAttention mha(torch::nn::MultiheadAttentionOptions(E, heads));
  torch::Tensor x = torch::randn({T, B, E}).requires_grad_();
  auto params = mha->parameters();
  auto step = [mha, x, params]() mutable {
    torch::Tensor out = std::get<0>(mha->forward(x, x, x, {}, /*need_weights=*/false));
    out.sum().backward();
    for (auto& p : params) clear_grad(p);
    clear_grad(x);
  };
  nlohmann::json config = {{"seq", T}, {"batch", B}, {"embed", E}, {"heads", heads}, {"self_attention", true}};
  return {config, static_cast<double>(B) * T, step};
}

// ---------------------------------------------------------------------------
// seq2seq: one training step of a character translation model (the shape of
// unroll's examples/translate).  Embedding(96, H) -> bidirectional GRU(H, H)
// over S source steps; GRUCell(H + 2H, 2H) decoder with Luong "general"
// attention (keys projected once by a [2H, 2H] weight, no bias) and input
// feeding, h~ = tanh(W_c [c; h]), logits = W_o h~ over T target steps
// (teacher forcing); cross-entropy summed over steps / (T B), backward, Adam.
// ---------------------------------------------------------------------------
bench::Prepared seq2seq(bench::Args& args) {
  const int B = args.get_int("batch", 32, 1);
  const int S = args.get_int("src-len", 40, 1);
  const int T = args.get_int("tgt-len", 40, 1);
  const int H = args.get_int("hidden", 128, 1);
  constexpr int kVocab = 96;
  torch::manual_seed(kSeed);
  torch::nn::Embedding src_embed(kVocab, H), tgt_embed(kVocab, H);
  torch::nn::GRU encoder(torch::nn::GRUOptions(H, H).bidirectional(true));
  torch::nn::GRUCell cell(3 * H, 2 * H);
  torch::nn::Linear key_proj(torch::nn::LinearOptions(2 * H, 2 * H).bias(false));
  torch::nn::Linear combine(4 * H, 2 * H), out(2 * H, kVocab);
  std::vector<torch::Tensor> params;
  for (const auto& group : {src_embed->parameters(), tgt_embed->parameters(), encoder->parameters(),
                            cell->parameters(), key_proj->parameters(), combine->parameters(), out->parameters()})
    params.insert(params.end(), group.begin(), group.end());
  auto adam = std::make_shared<torch::optim::Adam>(params, torch::optim::AdamOptions(1e-3));
  const torch::Tensor src = torch::randint(kVocab, {S, B}, torch::kInt64);
  const torch::Tensor tgt_in = torch::randint(kVocab, {T, B}, torch::kInt64);
  const torch::Tensor tgt_out = torch::randint(kVocab, {T, B}, torch::kInt64);
  auto step = [=]() mutable {
    auto enc = encoder(src_embed(src));
    const torch::Tensor memory = std::get<0>(enc).transpose(0, 1).contiguous();  // [B, S, 2H]
    const torch::Tensor h_n = std::get<1>(enc);                                  // [2, B, H]
    const torch::Tensor keys = key_proj(memory);                                 // [B, S, 2H]
    torch::Tensor h = torch::cat({h_n[0], h_n[1]}, 1);
    torch::Tensor feed = torch::zeros({B, 2 * H});
    torch::Tensor loss;
    for (int t = 0; t < T; ++t) {
      h = cell(torch::cat({tgt_embed(tgt_in[t]), feed}, 1), h);
      const torch::Tensor w = torch::softmax(torch::bmm(keys, h.unsqueeze(2)).squeeze(2), 1);
      const torch::Tensor context = torch::bmm(w.unsqueeze(1), memory).squeeze(1);
      feed = torch::tanh(combine(torch::cat({context, h}, 1)));
      const torch::Tensor l = torch::nn::functional::cross_entropy(
          out(feed), tgt_out[t], torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
      loss = t == 0 ? l : loss + l;
    }
    (loss / static_cast<double>(T * B)).backward();
    adam->step();
    for (auto& p : params) clear_grad(p);
  };
  nlohmann::json config = {{"batch", B}, {"src_len", S}, {"tgt_len", T}, {"hidden", H}, {"vocab", kVocab},
                           {"attention", "luong_general"}, {"optimizer", "adam"}};
  return {config, static_cast<double>(B) * T, step};
}

// Name -> workload table; the help string lists the flags and their defaults.
// Every workload also takes the thread overrides (see apply_threads).
const std::string kThreadFlags = " [--torch-threads 1 --blas-threads <threads>]";
const std::vector<bench::Workload> kWorkloads = {
    {"tiny_rnn", "vanilla tanh RNN, per-op overhead [--batch 1 --input 16 --hidden 32 --seq 200]" + kThreadFlags,
     with_threads(tiny_rnn)},
    {"lstm_lm",
     "char LM training step: Embedding(96,H), LSTM(H,H,L), Linear(H,96), cross-entropy, Adam "
     "[--batch 32 --seq 64 --hidden 128 --layers 1]" +
         kThreadFlags,
     with_threads(lstm_lm)},
    {"fastrnn",
     "one recurrent layer, forward + backward of sum(outputs) "
     "[--seq 100 --batch 64 --input 512 --hidden 512 --variant nn_lstm|cell_lstm|cell_gru|nn_gru]" +
         kThreadFlags,
     with_threads(fastrnn)},
    {"attention",
     "MultiheadAttention self-attention, forward + backward of sum(output) [--seq 64 --batch 16 --embed 256 "
     "--heads 4]" +
         kThreadFlags,
     with_threads(attention)},
    {"seq2seq",
     "translation training step: BiGRU(H) encoder, GRUCell(3H, 2H) decoder with Luong attention and input "
     "feeding, cross-entropy, Adam [--batch 32 --src-len 40 --tgt-len 40 --hidden 128]" +
         kThreadFlags,
     with_threads(seq2seq)},
};

// Only records the core count: the pools are sized in apply_threads, which
// can read the workload's override flags (this callback sees only N).
void set_threads(int n) { g_cores = n; }

}  // namespace

int main(int argc, char** argv) { return bench::run_main(argc, argv, kImpl, kWorkloads, set_threads); }
