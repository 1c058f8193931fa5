// bench/unroll_bench.cpp — the benchmark workloads on unroll. Same flags, timing and JSON output as
// torch_bench.cpp (both use harness.hpp), so one run compares the two.
//
// Adding a workload: one `bench::Prepared NAME(bench::Args&)` function that builds parameters and data
// outside the timed region and returns the step closure, plus one row in kWorkloads.
#include <unroll/autograd/shard.hpp>
#include <unroll/core/blas.hpp>
#include <unroll/unroll.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "harness.hpp"
#include "tiny_rnn_loops.hpp"

#ifdef UNROLL_BENCH_MPI
#include <cstdio>
#include <cstdlib>

#include <unroll/dist/data_parallel.hpp>
#endif

namespace {
constexpr std::uint64_t kSeed = 42;

#ifdef UNROLL_BENCH_MPI
// Started by mpirun with several processes: the ranks of a data-parallel job (lstm_lm), rank 0 prints.
std::unique_ptr<unroll::dist::Context> g_mpi;
#endif

// --shards K (default: --threads): with K > 1 a training step splits its batch into K shards that run
// forward and backward on their own threads (autograd::sharded_backward); 1 runs the plain step, which
// still lets BLAS and elementwise loops use every thread.
int shard_count(bench::Args& args) { return args.get_int("shards", args.threads, 1); }

unroll::Tensor make_param(const unroll::Shape& shape, unroll::Generator& gen) {
  return unroll::uniform(shape, -0.1, 0.1, unroll::Dtype::float32, gen).requires_grad_();
}

// A fused cell over a sequence by nn::run_cell: all steps as one tape node (its default output), or with
// --nodes step one node per step (run_cell given its own output_of, the first state tensor).
bool per_step_nodes(bench::Args& args) {
  const std::string nodes = args.get_str("nodes", "sequence");
  if (nodes != "sequence" && nodes != "step")
    throw bench::UsageError("flag --nodes expects sequence or step, got '" + nodes + "'");
  return nodes == "step";
}
template <class State, class Step>
unroll::nn::SequenceOutput<State> run_fused(bool per_step, const unroll::Tensor& x, const State& s0, Step& step) {
  if (per_step)
    return unroll::nn::run_cell(x, s0, step, [](const State& s) { return unroll::nn::detail::first_tensor(s); });
  return unroll::nn::run_cell(x, s0, step);
}

// tiny_rnn: h = tanh(x_t W + h U + b) for T steps, loss = sum(h_T), backward. So small that the
// arithmetic is negligible: the time is the engine's per-op cost (recording, allocation, backward walk).
// --fused 1 (default): the step written as a cell and run fused by nn::run_cell (one tape node for the
// sequence; --nodes step: one per step);
// --fused 0: the same ops op by op in a plain loop (five nodes per step), as torch-bench runs them.
struct TinyCell {
  unroll::Tensor W, U, b;
  unroll::Tensor operator()(const unroll::Tensor& x, const unroll::Tensor& h) const {
    return unroll::tanh(unroll::matmul(x, W) + unroll::matmul(h, U) + b);
  }
};
bench::Prepared tiny_rnn(bench::Args& args) {
  const int B = args.get_int("batch", 1, 1);
  const int I = args.get_int("input", 16, 1);
  const int H = args.get_int("hidden", 32, 1);
  const int T = args.get_int("seq", 200, 1);
  const bool fused = args.get_int("fused", 1, 0) != 0;
  const bool per_step = per_step_nodes(args);
  unroll::Generator gen(kSeed);
  unroll::Tensor W = make_param({I, H}, gen), U = make_param({H, H}, gen), b = make_param({H}, gen);
  const unroll::Tensor x = unroll::rand({T, B, I}, unroll::Dtype::float32, gen);
  const unroll::Tensor h0 = unroll::zeros({B, H});
  auto cell = std::make_shared<TinyCell>(TinyCell{W, U, b});
  auto step_fn = std::make_shared<unroll::nn::FusedStep<TinyCell>>(*cell);
  auto step = [W, U, b, x, h0, T, fused, per_step, cell, step_fn]() mutable {
    if (fused) {
      unroll::sum(run_fused(per_step, x, h0, *step_fn).state).backward();
    } else {
      unroll::Tensor h = h0;
      for (int t = 0; t < T; ++t) h = unroll::tanh(unroll::matmul(x[t], W) + unroll::matmul(h, U) + b);
      unroll::sum(h).backward();
    }
    W.zero_grad();
    U.zero_grad();
    b.zero_grad();
  };
  nlohmann::json config = {{"batch", B}, {"input", I}, {"hidden", H}, {"seq", T}, {"fused", fused}};
  if (fused) config["nodes"] = per_step ? "step" : "sequence";
  return {config, static_cast<double>(B) * T, step};
}

// tiny_rnn_loops: tiny_rnn's floor — the same forward and backward (all weight gradients) hand-written as
// plain loops over arrays, -O3 -march=native -ffast-math (bench/tiny_rnn_loops.cpp), subnormals flushed.
bench::Prepared tiny_rnn_loops(bench::Args& args) {
  const int B = args.get_int("batch", 1, 1);
  const int I = args.get_int("input", 16, 1);
  const int H = args.get_int("hidden", 32, 1);
  const int T = args.get_int("seq", 200, 1);
  unroll::Generator gen(kSeed);
  struct Buffers {
    std::vector<float> x, W, U, b, hs, dh, da, dW, dU, db;
  };
  auto buf = std::make_shared<Buffers>();
  auto fill = [&](std::vector<float>& v, std::size_t n, double lo, double hi) {
    v = unroll::uniform({static_cast<std::int64_t>(n)}, lo, hi, unroll::Dtype::float32, gen).to_vector<float>();
  };
  const auto sz = [](long n) { return static_cast<std::size_t>(n); };
  fill(buf->x, sz(static_cast<long>(T) * B * I), 0.0, 1.0);
  fill(buf->W, sz(I * H), -0.1, 0.1);
  fill(buf->U, sz(H * H), -0.1, 0.1);
  fill(buf->b, sz(H), -0.1, 0.1);
  buf->hs.assign(sz(static_cast<long>(T + 1) * B * H), 0.0f);
  buf->dh.assign(sz(B * H), 0.0f);
  buf->da.assign(sz(B * H), 0.0f);
  buf->dW.assign(sz(I * H), 0.0f);
  buf->dU.assign(sz(H * H), 0.0f);
  buf->db.assign(sz(H), 0.0f);
  // --sized 1: the same loops with I = 16 and H = 32 compile-time constants (the default sizes only).
  const bool sized = args.get_int("sized", 0, 0) != 0;
  if (sized && (I != 16 || H != 32))
    throw bench::UsageError("--sized 1 is written for the default sizes only (--input 16 --hidden 32)");
  auto step = [buf, T, B, I, H, sized] {
    // Subnormals flushed, as unroll's backward runs (core/denormal.hpp): the gradient through 200 tanh steps
    // decays into the subnormal range, where x86 arithmetic takes a slow path 10x slower.
    const unroll::detail::DenormalScope denormals;
    Buffers& q = *buf;
    if (sized)
      bench_loops::tiny_rnn_step_sized(q.x.data(), q.W.data(), q.U.data(), q.b.data(), q.hs.data(), q.dh.data(),
                                       q.da.data(), q.dW.data(), q.dU.data(), q.db.data(), T, B, I, H);
    else
      bench_loops::tiny_rnn_step(q.x.data(), q.W.data(), q.U.data(), q.b.data(), q.hs.data(), q.dh.data(),
                                 q.da.data(), q.dW.data(), q.dU.data(), q.db.data(), T, B, I, H);
  };
  return {{{"batch", B}, {"input", I}, {"hidden", H}, {"seq", T}, {"sized", sized}}, static_cast<double>(B) * T, step};
}

// Two prepared workloads run alternately, one of each per timed step, each half timed on its own. On a shared
// host the speed of the machine moves by 2x between runs a few seconds apart; two halves run back to back see
// the same machine, so the median of their per-pair ratio b / a measures what a comparison of separate runs
// cannot. Reports both halves' medians and that ratio under "extra" (a_ms_median, b_ms_median, ratio_b_over_a).
bench::Prepared paired(const bench::Args& args, bench::Prepared a, bench::Prepared b, nlohmann::json config) {
  struct Halves {
    std::vector<double> a_ms, b_ms;
  };
  auto halves = std::make_shared<Halves>();
  auto step = [halves, fa = std::move(a.step), fb = std::move(b.step)] {
    halves->a_ms.push_back(bench::time_ms(fa));
    halves->b_ms.push_back(bench::time_ms(fb));
  };
  auto extra = [halves, warmup = static_cast<std::size_t>(args.warmup)] {
    // The harness's warm-up steps ran first and were recorded here too: leave them out.
    const auto skip = static_cast<std::ptrdiff_t>(std::min(warmup, halves->a_ms.size()));
    const std::vector<double> ta(halves->a_ms.begin() + skip, halves->a_ms.end());
    const std::vector<double> tb(halves->b_ms.begin() + skip, halves->b_ms.end());
    std::vector<double> ratio;
    for (std::size_t i = 0; i < ta.size(); ++i) ratio.push_back(tb[i] / ta[i]);
    const auto round4 = [](double v) { return bench::detail::round_to(v, 4); };
    return nlohmann::json{{"a_ms_median", round4(bench::median(ta))},
                          {"b_ms_median", round4(bench::median(tb))},
                          {"ratio_b_over_a", round4(bench::median(ratio))},
                          {"pairs", ratio.size()}};
  };
  return {std::move(config), a.tokens_per_step + b.tokens_per_step, step, extra};
}

// tiny_rnn_paired: a = the floor (tiny_rnn_loops, --sized 1 for its size-specialised form), b = tiny_rnn
// (fused unless --fused 0): ratio_b_over_a is the fused step's distance from the hand-written loops.
bench::Prepared tiny_rnn_paired(bench::Args& args) {
  bench::Prepared floor = tiny_rnn_loops(args), engine = tiny_rnn(args);
  nlohmann::json config = engine.config;
  config["a"] = floor.config.value("sized", false) ? "tiny_rnn_loops sized" : "tiny_rnn_loops";
  config["b"] = "tiny_rnn";
  return paired(args, std::move(floor), std::move(engine), config);
}

// elementwise: y = tanh(a + b) on n floats, no autograd; run at --threads 1 and 2 to see where splitting
// the loop across threads starts to pay (this sets kElementwiseGrain in core/parallel.hpp).
bench::Prepared elementwise(bench::Args& args) {
  const int n = args.get_int("n", 1 << 16, 1);
  unroll::detail::kElementwiseGrain = args.get_int("grain", static_cast<int>(unroll::detail::kElementwiseGrain), 1);
  unroll::Generator gen(kSeed);
  const unroll::Tensor a = unroll::rand({n}, unroll::Dtype::float32, gen),
                       b = unroll::rand({n}, unroll::Dtype::float32, gen);
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
  const unroll::Tensor a = unroll::rand({m, k}, unroll::Dtype::float32, gen),
                       b = unroll::rand({k, n}, unroll::Dtype::float32, gen);
  auto step = [a, b] {
    for (int r = 0; r < 100; ++r) unroll::matmul(a, b);
  };
  return {{{"m", m},
           {"n", n},
           {"k", k},
           {"small_work", unroll::detail::kSmallGemmWork},
           {"small_rows", unroll::detail::kSmallGemmRows},
           {"repeat", 100}},
          100.0 * m,
          step};
}

// step_gemm: the two per-step products of a recurrent layer over T steps, no autograd: h_t·W_hhᵀ plus the
// bias into a fresh gate buffer per step (as the steps write), then dG_t·W_hh into a fresh dh per step.
// --packed 1 (default): W_hh packed once per sequence and multiplied with gemm_packed, as the layers do;
// --packed 0: gemm, i.e. OpenBLAS re-packing W_hh in every call. Isolates those GEMMs of lstm_lm/fastrnn.
bench::Prepared step_gemm(bench::Args& args) {
  const std::int64_t B = args.get_int("batch", 32, 1), H = args.get_int("hidden", 128, 1),
                     T = args.get_int("seq", 64, 1);
  const std::int64_t n = args.get_int("gates", 4, 1) * H;
  const bool packed = args.get_int("packed", 1, 0) != 0;
  struct State {
    std::vector<float> w, bias, h, gates, dg, dh;
  };
  auto s = std::make_shared<State>();
  unroll::Generator gen(kSeed);
  auto fill = [&](std::int64_t count, double scale) {
    std::vector<float> v(static_cast<std::size_t>(count));
    for (float& x : v) x = static_cast<float>((gen.uniform() - 0.5) * scale);
    return v;
  };
  s->w = fill(n * H, 0.1), s->bias = fill(n, 0.1), s->h = fill(B * H, 1.0), s->dg = fill(B * n, 1.0);
  s->gates.resize(static_cast<std::size_t>(T * B * n)), s->dh.resize(static_cast<std::size_t>(T * B * H));
  auto step = [s, B, H, T, n, packed] {
    using unroll::detail::PackedMatrix;
    std::optional<PackedMatrix<float>> fwd, bwd;
    if (packed) fwd.emplace(true, H, n, s->w.data(), H), bwd.emplace(false, n, H, s->w.data(), H);
    for (std::int64_t t = 0; t < T; ++t) {
      float* g = s->gates.data() + t * B * n;
      if (packed) {
        unroll::detail::gemm_packed<float>(B, s->h.data(), H, *fwd, nullptr, 0, s->bias.data(), g, n);
      } else {
        for (std::int64_t b = 0; b < B; ++b) std::copy(s->bias.begin(), s->bias.end(), g + b * n);
        unroll::detail::gemm(false, true, B, n, H, 1.0f, s->h.data(), H, s->w.data(), H, 1.0f, g, n);
      }
      for (std::int64_t i = 0; i < B * H; ++i)
        s->h[static_cast<std::size_t>(i)] = 1e-3f * g[i];  // the next step reads h
    }
    for (std::int64_t t = 0; t < T; ++t) {
      float* dh = s->dh.data() + t * B * H;
      if (packed)
        unroll::detail::gemm_packed<float>(B, s->dg.data(), n, *bwd, nullptr, 0, nullptr, dh, H);
      else
        unroll::detail::gemm(false, false, B, H, n, 1.0f, s->dg.data(), n, s->w.data(), H, 0.0f, dh, H);
      for (std::int64_t i = 0; i < B * H; ++i)
        s->dg[static_cast<std::size_t>(i)] = 0.5f * dh[i];  // the next step reads dG
    }
  };
  return {{{"batch", B}, {"hidden", H}, {"gates", n / H}, {"seq", T}, {"packed", packed ? 1 : 0}},
          static_cast<double>(B) * T,
          step};
}

// lstm_lm: one training step of a character language model, the workload a user actually runs.
// Embedding(96, H) -> LSTM(H, H, L) -> Linear(H, 96), cross-entropy over all T*B positions, backward,
// Adam(1e-3), zero_grad. Default initialisation (as PyTorch); input [T, B]; zero initial state each step.
// --cell mingru|minlstm: the same step with L layers of nn::MinGRU / nn::MinLSTM (plain mode) in place of the LSTM.
// --lr sets Adam's rate, --prelude N runs N untimed steps first, --flush 0 turns off unroll's flushing of subnormals
// (core/denormal.hpp); `denormal` is this workload diverging (lr 1 after a prelude of 40 steps).
struct LmDefaults {
  double lr = 1e-3;
  int prelude = 0;
};
bench::Prepared lm_step(bench::Args& args, LmDefaults defaults) {
  const int B = args.get_int("batch", 32, 1);
  const int T = args.get_int("seq", 64, 1);
  const int H = args.get_int("hidden", 128, 1);
  const int L = args.get_int("layers", 1, 1);
  const std::string cell = args.get_str("cell", "lstm");
  if (cell != "lstm" && cell != "mingru" && cell != "minlstm")
    throw bench::UsageError("flag --cell expects lstm, mingru or minlstm, got '" + cell + "'");
  constexpr int kVocab = 96;
  const double kLr = args.get_double("lr", defaults.lr);
  const int prelude = args.get_int("prelude", defaults.prelude, 0);
  const bool flush = args.get_int("flush", 1, 0) != 0;
  unroll::set_flush_denormal(flush);
  unroll::manual_seed(kSeed);
  struct Model : unroll::nn::Module {
    unroll::nn::Embedding embed;
    std::unique_ptr<unroll::nn::LSTM> lstm;
    std::vector<std::unique_ptr<unroll::nn::MinGRU>> mingru;
    std::vector<std::unique_ptr<unroll::nn::MinLSTM>> minlstm;
    unroll::nn::Linear head;
    Model(int H, int L, const std::string& cell) : embed(kVocab, H), head(H, kVocab) {
      register_module("embed", embed);
      if (cell == "lstm") {
        lstm = std::make_unique<unroll::nn::LSTM>(
            unroll::nn::RecurrentOptions{.input_size = H, .hidden_size = H, .num_layers = L});
        register_module("lstm", *lstm);
      }
      for (int l = 0; l < L && cell == "mingru"; ++l)
        register_module(std::to_string(l), *mingru.emplace_back(std::make_unique<unroll::nn::MinGRU>(H, H)));
      for (int l = 0; l < L && cell == "minlstm"; ++l)
        register_module(std::to_string(l), *minlstm.emplace_back(std::make_unique<unroll::nn::MinLSTM>(H, H)));
      register_module("head", head);
    }
    unroll::Tensor rnn(unroll::Tensor x) const {
      if (lstm) return (*lstm)(x).output;
      for (const auto& m : mingru) x = (*m)(x);
      for (const auto& m : minlstm) x = (*m)(x);
      return x;
    }
  };
  auto model = std::make_shared<Model>(H, L, cell);
  auto adam = std::make_shared<unroll::optim::Adam>(model->parameters(), unroll::optim::AdamOptions{.lr = kLr});
  unroll::Generator gen(kSeed);
  const unroll::Tensor tokens = unroll::randint({T, B}, 0, kVocab, gen);
  const unroll::Tensor targets = unroll::randint({T * B}, 0, kVocab, gen);
  const int shards = shard_count(args);
  // tokens [T, b], targets [T * b] (time-major, as the batch's) -> mean cross-entropy
  auto loss_of = [model, H](const unroll::Tensor& tok, const unroll::Tensor& tgt) {
    const std::int64_t rows = tok.size(0) * tok.size(1);
    unroll::Tensor x = model->embed(tok);  // [T, b, H]
    unroll::Tensor out = model->rnn(x);    // [T, b, H]
    return unroll::cross_entropy(model->head(unroll::reshape(out, {rows, H})), tgt);
  };
#ifdef UNROLL_BENCH_MPI
  // Under mpirun: the global batch B split over the ranks (each with --shards shards), gradients summed in
  // buckets of --bucket-kb (dist::DataParallel); extra reports the reduction's share of the step.
  if (g_mpi) {
    const bool deterministic = args.get_int("deterministic", 1, 0) != 0;
    auto dp = std::make_shared<unroll::dist::DataParallel>(
        *g_mpi, model->parameters(),
        unroll::dist::DataParallelOptions{.shards = shards,
                                          .bucket_bytes = std::int64_t{args.get_int("bucket-kb", 4096, 1)} * 1024,
                                          .deterministic = deterministic});
    auto stats = std::make_shared<std::vector<unroll::dist::DataParallelStats>>();
    auto dp_step = [model, adam, tokens, targets, T, B, loss_of, dp, stats] {
      const unroll::Tensor targets_tb = unroll::reshape(targets, {T, B});
      dp->backward(B, [&](const unroll::autograd::Shard& s) {
        const unroll::Tensor tgt = unroll::narrow(targets_tb, 1, s.begin, s.size());
        return loss_of(unroll::narrow(tokens, 1, s.begin, s.size()), unroll::reshape(tgt, {T * s.size()}));
      });
      stats->push_back(dp->last_stats());
      adam->step();
      adam->zero_grad();
    };
    nlohmann::json config = {{"batch", B}, {"seq", T}, {"hidden", H}, {"layers", L}, {"cell", cell},
                             {"ranks", g_mpi->world_size()}, {"shards_per_rank", shards},
                             {"deterministic", deterministic}, {"bucket_kb", args.get_int("bucket-kb", 4096, 1)}};
    auto extra = [stats] {
      std::vector<double> reduce, compute;
      for (const auto& st : *stats) reduce.push_back(st.reduce_seconds * 1e3), compute.push_back(st.compute_seconds * 1e3);
      std::sort(reduce.begin(), reduce.end());
      std::sort(compute.begin(), compute.end());
      const auto med = [](const std::vector<double>& v) { return v.empty() ? NAN : v[v.size() / 2]; };
      return nlohmann::json{{"reduce_ms_median", med(reduce)},
                            {"compute_ms_median", med(compute)},
                            {"bytes_reduced_per_step", stats->empty() ? 0 : stats->back().bytes_reduced},
                            {"buckets_per_step", stats->empty() ? 0 : stats->back().buckets}};
    };
    return {config, static_cast<double>(B) * T, dp_step, extra};
  }
#endif
  auto step = [model, adam, tokens, targets, T, B, shards, loss_of] {
    if (shards > 1) {
      const unroll::Tensor targets_tb = unroll::reshape(targets, {T, B});
      unroll::autograd::sharded_backward(B,
                                         [&](const unroll::autograd::Shard& s) {
                                           const unroll::Tensor tgt = unroll::narrow(targets_tb, 1, s.begin, s.size());
                                           return loss_of(unroll::narrow(tokens, 1, s.begin, s.size()),
                                                          unroll::reshape(tgt, {T * s.size()}));
                                         },
                                         {.shards = shards});
    } else {
      loss_of(tokens, targets).backward();
    }
    adam->step();
    adam->zero_grad();
  };
  for (int i = 0; i < prelude; ++i) step();
  double loss_after_prelude = NAN;
  {
    unroll::NoGradGuard no_grad;
    loss_after_prelude = loss_of(tokens, targets).item();
  }
  nlohmann::json config = {{"batch", B},
                           {"seq", T},
                           {"hidden", H},
                           {"layers", L},
                           {"cell", cell},
                           {"embed", H},
                           {"vocab", kVocab},
                           {"lr", kLr},
                           {"optimizer", "adam"},
                           {"shards", shards},
                           {"flush_denormal", flush},
                           {"prelude", prelude},
                           {"loss_after_prelude", loss_after_prelude}};
  return {config, static_cast<double>(B) * T, step};
}
bench::Prepared lstm_lm(bench::Args& args) { return lm_step(args, {}); }
bench::Prepared denormal(bench::Args& args) { return lm_step(args, {.lr = 1.0, .prelude = 40}); }

// fastrnn: one layer over T=100, B=64, input 512, hidden 512, forward and backward of the sum of all
// outputs. nn_lstm / nn_gru: the library layer (input projection for all steps in one GEMM, fused step
// ops); cell_lstm / cell_gru: the cell composed from primitive ops in a loop (what a custom cell costs).
// Parameters U(-1/sqrt(H), 1/sqrt(H)); input and initial state N(0, 1), not requiring grad.
// stream: the machine's memory bandwidth, STREAM's triad a = b + s c over n floats (3 x 4n bytes moved per
// pass), ten passes per step; the yardstick for the scan's bytes per second.
bench::Prepared stream(bench::Args& args) {
  const int n = args.get_int("n", 1 << 24, 1);
  unroll::Generator gen(kSeed);
  auto a = std::make_shared<std::vector<float>>(static_cast<std::size_t>(n));
  const unroll::Tensor b = unroll::rand({n}, unroll::Dtype::float32, gen),
                       c = unroll::rand({n}, unroll::Dtype::float32, gen);
  auto step = [a, b, c, n] {
    const float* pb = b.data<float>();
    const float* pc = c.data<float>();
    float* pa = a->data();
    for (int r = 0; r < 10; ++r)
      unroll::detail::parallel_for(n, 1 << 16, [&](std::int64_t s, std::int64_t e) {
        for (std::int64_t i = s; i < e; ++i) pa[i] = pb[i] + 3.0f * pc[i];
      });
  };
  return {{{"n", n}, {"bytes_per_step", 10.0 * 3.0 * 4.0 * n}}, 10.0 * n, step};
}

// scan: h_t = a_t h_{t-1} + b_t over [T, B, H] (float32), forward and (--backward 1) backward from the seed
// gradient w (h.backward(w): no loss op around the scan, so the step times the scan's own two passes):
// linear_scan in its sequential or chunked mode, or the same recurrence composed per step from ops.
// bytes_per_step counts the data the fused scan must move at least: forward reads a, b and writes h
// (3 T B H floats); backward reads g, a, h and writes dh (the adjoint, also db) and da (5 T B H).
bench::Prepared scan(bench::Args& args) {
  using unroll::Tensor;
  const int T = args.get_int("seq", 4096, 1), B = args.get_int("batch", 32, 1), H = args.get_int("hidden", 512, 1);
  const std::string mode = args.get_str("mode", "sequential");
  const bool backward = args.get_int("backward", 1, 0) != 0;
  if (mode != "sequential" && mode != "chunked" && mode != "composed" && mode != "automatic")
    throw bench::UsageError("flag --mode expects sequential, chunked, automatic or composed, got '" + mode + "'");
  unroll::Generator gen(kSeed);
  Tensor a = unroll::uniform({T, B, H}, 0.9, 1.0, unroll::Dtype::float32, gen).requires_grad_();
  Tensor b = unroll::randn({T, B, H}, unroll::Dtype::float32, gen).requires_grad_();
  const Tensor w = unroll::randn({T, B, H}, unroll::Dtype::float32, gen);
  unroll::ScanOptions o;
  o.mode = mode == "chunked"     ? unroll::ScanMode::chunked
           : mode == "automatic" ? unroll::ScanMode::automatic
                                 : unroll::ScanMode::sequential;
  auto step = [a, b, w, o, mode, backward, T, B, H]() mutable {
    Tensor h;
    if (mode == "composed") {
      std::vector<Tensor> hs;
      Tensor prev = unroll::zeros({B, H});
      for (int t = 0; t < T; ++t) hs.push_back(prev = a[t] * prev + b[t]);
      h = unroll::stack(hs, 0);
    } else {
      h = unroll::linear_scan(a, b, {}, o);
    }
    if (backward) {
      h.backward(w);
      a.zero_grad();
      b.zero_grad();
    } else {
      unroll::autograd::Tape::current().clear();
    }
  };
  const double elems = static_cast<double>(T) * B * H;
  return {{{"seq", T},
           {"batch", B},
           {"hidden", H},
           {"mode", mode},
           {"backward", backward},
           {"bytes_per_step", (backward ? 8.0 : 3.0) * 4.0 * elems}},
          static_cast<double>(T) * B,
          step};
}

// The cells fastrnn's cell_lstm / cell_gru compose from primitive ops (PyTorch's formulas and gate orders).
struct ComposedLSTM {
  unroll::Tensor w_ih, w_hh, b_ih, b_hh;
  std::pair<unroll::Tensor, unroll::Tensor> operator()(const unroll::Tensor& x,
                                                       const std::pair<unroll::Tensor, unroll::Tensor>& s) const {
    auto g = unroll::chunk(unroll::linear(x, w_ih, b_ih) + unroll::linear(s.first, w_hh, b_hh), 4, 1);  // i, f, g, o
    unroll::Tensor c = unroll::sigmoid(g[1]) * s.second + unroll::sigmoid(g[0]) * unroll::tanh(g[2]);
    return {unroll::sigmoid(g[3]) * unroll::tanh(c), c};
  }
};
struct ComposedGRU {
  unroll::Tensor w_ih, w_hh, b_ih, b_hh;
  unroll::Tensor operator()(const unroll::Tensor& x, const unroll::Tensor& h) const {
    auto gi = unroll::chunk(unroll::linear(x, w_ih, b_ih), 3, 1);  // r, z, n
    auto gh = unroll::chunk(unroll::linear(h, w_hh, b_hh), 3, 1);
    unroll::Tensor r = unroll::sigmoid(gi[0] + gh[0]), z = unroll::sigmoid(gi[1] + gh[1]);
    unroll::Tensor n = unroll::tanh(gi[2] + r * gh[2]);
    return (1.0 - z) * n + z * h;
  }
};

// The minimal gated unit of examples/char_lm (--cell custom): f = σ([x, h] W_fᵀ + b_f),
// h' = h + f ⊙ (tanh([x, f ⊙ h] W_cᵀ + b_c) − h).
struct ComposedMGU {
  unroll::Tensor w_f, b_f, w_c, b_c;
  unroll::Tensor operator()(const unroll::Tensor& x, const unroll::Tensor& h) const {
    const unroll::Tensor f = unroll::sigmoid(unroll::linear(unroll::cat({x, h}, 1), w_f, b_f));
    return h + f * (unroll::tanh(unroll::linear(unroll::cat({x, f * h}, 1), w_c, b_c)) - h);
  }
};

bench::Prepared fastrnn(bench::Args& args) {
  using unroll::Tensor;
  const int T = args.get_int("seq", 100, 1);
  const int B = args.get_int("batch", 64, 1);
  const int I = args.get_int("input", 512, 1);
  const int H = args.get_int("hidden", 512, 1);
  const std::string variant = args.get_str("variant", "nn_lstm");
  const bool is_lstm = variant == "nn_lstm" || variant == "cell_lstm";
  const bool is_min = variant == "mingru" || variant == "minlstm";
  const bool fused = args.get_int("fused", 1, 0) != 0;  // cell_lstm / cell_gru / cell_mgu only
  const bool per_step = per_step_nodes(args);             // the same
  unroll::detail::kOpsFirstBytes =
      args.get_int("ops-first-bytes", static_cast<int>(unroll::detail::kOpsFirstBytes), 0);  // fused cells
  if (!is_lstm && !is_min && variant != "nn_gru" && variant != "cell_gru" && variant != "cell_mgu")
    throw bench::UsageError(
        "flag --variant expects nn_lstm, cell_lstm, cell_gru, nn_gru, cell_mgu, mingru or minlstm, got '" + variant +
        "'");
  unroll::manual_seed(kSeed);
  unroll::Generator gen(kSeed);
  const Tensor x = unroll::randn({T, B, I}, unroll::Dtype::float32, gen);
  const Tensor h0 = unroll::randn({B, H}, unroll::Dtype::float32, gen);
  const Tensor c0 = unroll::randn({B, H}, unroll::Dtype::float32, gen);
  // sum of all outputs for the rows of x [T, b, I] with initial state h, c [b, H]; `params` to zero
  std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)> forward_sum;
  std::function<void()> zero_grad;
  if (variant == "nn_lstm") {
    auto m = std::make_shared<unroll::nn::LSTM>(unroll::nn::RecurrentOptions{.input_size = I, .hidden_size = H});
    forward_sum = [m](const Tensor& xs, const Tensor& h, const Tensor& c) {
      return unroll::sum(m->forward(xs, unroll::unsqueeze(h, 0), unroll::unsqueeze(c, 0)).output);
    };
    zero_grad = [m] { m->zero_grad(); };
  } else if (is_min) {  // nn::MinGRU / nn::MinLSTM (plain mode): gates of all steps, then one scan node
    std::shared_ptr<unroll::nn::Module> m;
    if (variant == "mingru") {
      auto g = std::make_shared<unroll::nn::MinGRU>(I, H);
      forward_sum = [g](const Tensor& xs, const Tensor& h, const Tensor&) { return unroll::sum((*g)(xs, h)); };
      m = g;
    } else {
      auto l = std::make_shared<unroll::nn::MinLSTM>(I, H);
      forward_sum = [l](const Tensor& xs, const Tensor& h, const Tensor&) { return unroll::sum((*l)(xs, h)); };
      m = l;
    }
    zero_grad = [m] { m->zero_grad(); };
  } else if (variant == "nn_gru") {
    auto m = std::make_shared<unroll::nn::GRU>(unroll::nn::RecurrentOptions{.input_size = I, .hidden_size = H});
    forward_sum = [m](const Tensor& xs, const Tensor& h, const Tensor&) {
      return unroll::sum(m->forward(xs, unroll::unsqueeze(h, 0)).output);
    };
    zero_grad = [m] { m->zero_grad(); };
  } else if (variant == "cell_mgu") {
    const double k = 1.0 / std::sqrt(static_cast<double>(I + H));
    auto param = [&](const unroll::Shape& s) {
      return unroll::uniform(s, -k, k, unroll::Dtype::float32, gen).requires_grad_();
    };
    auto mgu = std::make_shared<ComposedMGU>(ComposedMGU{param({H, I + H}), param({H}), param({H, I + H}), param({H})});
    auto fused_mgu = std::make_shared<unroll::nn::FusedStep<ComposedMGU>>(*mgu);
    forward_sum = [=](const Tensor& xs, const Tensor& h0s, const Tensor&) {
      if (fused) return unroll::sum(run_fused(per_step, xs, h0s, *fused_mgu).output);
      Tensor h = h0s;
      std::vector<Tensor> outs(static_cast<std::size_t>(xs.size(0)));
      for (std::int64_t t = 0; t < xs.size(0); ++t) outs[static_cast<std::size_t>(t)] = h = (*mgu)(xs[t], h);
      return unroll::sum(unroll::stack(outs, 0));
    };
    zero_grad = [mgu] {
      for (Tensor* t : {&mgu->w_f, &mgu->b_f, &mgu->w_c, &mgu->b_c}) t->zero_grad();
    };
  } else {
    const std::int64_t G = (is_lstm ? 4 : 3) * static_cast<std::int64_t>(H);
    const double k = 1.0 / std::sqrt(static_cast<double>(H));
    auto param = [&](const unroll::Shape& s) {
      return unroll::uniform(s, -k, k, unroll::Dtype::float32, gen).requires_grad_();
    };
    auto p = std::make_shared<std::vector<Tensor>>(
        std::vector<Tensor>{param({G, I}), param({G, H}), param({G}), param({G})});
    auto lstm = std::make_shared<ComposedLSTM>(ComposedLSTM{(*p)[0], (*p)[1], (*p)[2], (*p)[3]});
    auto gru = std::make_shared<ComposedGRU>(ComposedGRU{(*p)[0], (*p)[1], (*p)[2], (*p)[3]});
    auto fused_lstm = std::make_shared<unroll::nn::FusedStep<ComposedLSTM>>(*lstm);
    auto fused_gru = std::make_shared<unroll::nn::FusedStep<ComposedGRU>>(*gru);
    forward_sum = [=](const Tensor& xs, const Tensor& h0s, const Tensor& c0s) {
      if (fused)  // the same cells, fused (nn/fuse.hpp)
        return is_lstm ? unroll::sum(run_fused(per_step, xs, std::pair{h0s, c0s}, *fused_lstm).output)
                       : unroll::sum(run_fused(per_step, xs, h0s, *fused_gru).output);
      const std::int64_t steps = xs.size(0);
      std::pair<Tensor, Tensor> s{h0s, c0s};
      std::vector<Tensor> outs(static_cast<std::size_t>(steps));
      for (std::int64_t t = 0; t < steps; ++t) {
        if (is_lstm)
          s = (*lstm)(xs[t], s);
        else
          s.first = (*gru)(xs[t], s.first);
        outs[static_cast<std::size_t>(t)] = s.first;
      }
      return unroll::sum(unroll::stack(outs, 0));
    };
    zero_grad = [p] {
      for (Tensor& t : *p) t.zero_grad();
    };
  }
  const int shards = shard_count(args);
  std::function<void()> step = [=] {
    if (shards > 1) {
      unroll::autograd::sharded_backward(B,
                                         [&](const unroll::autograd::Shard& s) {
                                           return forward_sum(unroll::narrow(x, 1, s.begin, s.size()),
                                                              unroll::narrow(h0, 0, s.begin, s.size()),
                                                              unroll::narrow(c0, 0, s.begin, s.size()));
                                         },
                                         {.shards = shards, .sum_loss = true});
    } else {
      forward_sum(x, h0, c0).backward();
    }
    zero_grad();
  };
  nlohmann::json config = {{"seq", T},    {"batch", B},         {"input", I},      {"hidden", H},
                           {"layers", 1}, {"variant", variant}, {"shards", shards}};
  if (variant.starts_with("cell_")) config["fused"] = fused;
  if (variant.starts_with("cell_") && fused) config["nodes"] = per_step ? "step" : "sequence";
  return {config, static_cast<double>(B) * T, step};
}

// fastrnn_paired: b = a cell composed from ops and fused (--cell lstm|gru|mgu), a = the built-in layer
// (--against builtin, the default for lstm and gru) or the same cell op by op (--against unfused), alternately
// in one process (see paired).
bench::Prepared fastrnn_paired(bench::Args& args) {
  const std::string cell = args.get_str("cell", "lstm");
  const std::string against = args.get_str("against", cell == "mgu" ? "unfused" : "builtin");
  if (cell != "lstm" && cell != "gru" && cell != "mgu")
    throw bench::UsageError("flag --cell expects lstm, gru or mgu, got '" + cell + "'");
  if (against != "builtin" && against != "unfused")
    throw bench::UsageError("flag --against expects builtin or unfused, got '" + against + "'");
  if (cell == "mgu" && against == "builtin") throw bench::UsageError("--cell mgu has no built-in layer: --against unfused");
  if (args.flags.count("variant") || args.flags.count("fused"))
    throw bench::UsageError("fastrnn_paired sets --variant and --fused itself: give --cell and --against");
  auto with = [&](const std::string& variant, int fused) {
    bench::Args v = args;
    v.flags["variant"] = variant;
    v.flags["fused"] = std::to_string(fused);
    return v;
  };
  bench::Args a_args = against == "builtin" ? with("nn_" + cell, 1) : with("cell_" + cell, 0),
              b_args = with("cell_" + cell, 1);
  bench::Prepared a = fastrnn(a_args), b = fastrnn(b_args);
  for (const auto& kv : args.flags) args.get_str(kv.first, "");  // fastrnn read them (or rejects them below)
  for (const std::string& f : b_args.unused_flags())
    if (f != "--cell" && f != "--against") throw bench::UsageError("unknown flag for workload 'fastrnn_paired': " + f);
  nlohmann::json config = b.config;
  config["a"] = a_args.flags["variant"] + (against == "unfused" ? " unfused" : "");
  config["b"] = b_args.flags["variant"] + " fused";
  return paired(args, std::move(a), std::move(b), config);
}

// bptt_memory: one nn::LSTM layer (input = hidden) over a long sequence, forward + mean(output).backward(),
// with checkpointed BPTT every K steps (0: none) or a memory budget; the JSON line's peak_rss_kb is the point
// (run each configuration in its own process: the peak is the process's).
bench::Prepared bptt_memory(bench::Args& args) {
  const int B = args.get_int("batch", 32, 1);
  const int H = args.get_int("hidden", 256, 1);
  const int T = args.get_int("seq", 10000, 1);
  const int K = args.get_int("checkpoint-every", 0, 0);
  const int budget_mb = args.get_int("budget-mb", 0, 0);
  unroll::Generator gen(kSeed);
  auto lstm = std::make_shared<unroll::nn::LSTM>(unroll::nn::RecurrentOptions{
      .input_size = H, .hidden_size = H, .checkpoint_every = K, .memory_budget = std::int64_t{budget_mb} << 20});
  const unroll::Tensor x = unroll::randn({T, B, H}, unroll::Dtype::float32, gen);
  auto step = [lstm, x] {
    unroll::mean(lstm->forward(x).output).backward();
    lstm->zero_grad();
  };
  return {{{"batch", B}, {"hidden", H}, {"seq", T}, {"checkpoint_every", K}, {"budget_mb", budget_mb}},
          static_cast<double>(B) * T,
          step};
}

// attention: nn::MultiheadAttention self-attention, forward and backward of sum(output) (the parameters and the
// input require grad), need_weights off. Input [T, B, E] (sequence first, as LibTorch's module). PyTorch's
// initialisation; x ~ N(0, 1).
bench::Prepared attention(bench::Args& args) {
  const int T = args.get_int("seq", 64, 1);
  const int B = args.get_int("batch", 16, 1);
  const int E = args.get_int("embed", 256, 1);
  const int heads = args.get_int("heads", 4, 1);
  if (E % heads != 0) throw bench::UsageError("flag --embed must be a multiple of --heads");
  unroll::manual_seed(kSeed);
  auto mha = std::make_shared<unroll::nn::MultiheadAttention>(E, heads);
  unroll::Generator gen(kSeed);
  unroll::Tensor x = unroll::randn({T, B, E}, unroll::Dtype::float32, gen).requires_grad_();
  auto step = [mha, x]() mutable {
    unroll::nn::MultiheadAttentionOptions o;
    o.need_weights = false;
    unroll::sum((*mha)(x, x, x, o).output).backward();
    mha->zero_grad();
    x.zero_grad();
  };
  nlohmann::json config = {{"seq", T}, {"batch", B}, {"embed", E}, {"heads", heads}, {"self_attention", true}};
  return {config, static_cast<double>(B) * T, step};
}

// seq2seq: one training step of a character translation model, the shape of examples/translate: Embedding(96, H)
// -> bidirectional GRU(H, H) encoder over S source steps; a GRUCell(H + 2H, 2H) decoder with Luong "general"
// attention (keys projected once per sequence by a [2H, 2H] weight, no bias) and input feeding,
// h~ = tanh(W_c [c; h]), logits = W_o h~ over T target steps (teacher forcing); cross-entropy summed over the
// steps / (T B), backward, Adam(1e-3). Random tokens; no padding.
bench::Prepared seq2seq(bench::Args& args) {
  using unroll::Tensor;
  const int B = args.get_int("batch", 32, 1);
  const int S = args.get_int("src-len", 40, 1);
  const int T = args.get_int("tgt-len", 40, 1);
  const int H = args.get_int("hidden", 128, 1);
  constexpr int kVocab = 96;
  unroll::manual_seed(kSeed);
  struct Model : unroll::nn::Module {
    unroll::nn::Embedding src_embed, tgt_embed;
    unroll::nn::GRU encoder;
    unroll::nn::GRUCell cell;
    unroll::nn::MultiplicativeAttention attn;
    unroll::nn::Linear combine, out;
    explicit Model(int H)
        : src_embed(kVocab, H), tgt_embed(kVocab, H),
          encoder(unroll::nn::RecurrentOptions{.input_size = H, .hidden_size = H, .bidirectional = true}),
          cell(3 * H, 2 * H), attn(2 * H, 2 * H, unroll::nn::LuongScore::general), combine(4 * H, 2 * H),
          out(2 * H, kVocab) {
      register_module("src_embed", src_embed);
      register_module("tgt_embed", tgt_embed);
      register_module("encoder", encoder);
      register_module("cell", cell);
      register_module("attn", attn);
      register_module("combine", combine);
      register_module("out", out);
    }
  };
  auto model = std::make_shared<Model>(H);
  auto adam = std::make_shared<unroll::optim::Adam>(model->parameters(), unroll::optim::AdamOptions{.lr = 1e-3});
  unroll::Generator gen(kSeed);
  const Tensor src = unroll::randint({S, B}, 0, kVocab, gen);
  const Tensor tgt_in = unroll::randint({T, B}, 0, kVocab, gen);
  const Tensor tgt_out = unroll::randint({T, B}, 0, kVocab, gen);
  auto step = [model, adam, src, tgt_in, tgt_out, T, B, H]() {
    const unroll::nn::RecurrentOutput enc = model->encoder(model->src_embed(src));
    const Tensor memory = unroll::transpose(enc.output, 0, 1);  // [B, S, 2H]
    const Tensor keys = model->attn.project_keys(memory);
    Tensor h = unroll::cat({unroll::select(enc.h_n, 0, 0), unroll::select(enc.h_n, 0, 1)}, 1);
    Tensor feed = unroll::zeros({B, 2 * H});
    Tensor loss;
    for (int t = 0; t < T; ++t) {
      h = model->cell(unroll::cat({model->tgt_embed(tgt_in[t]), feed}, 1), h);
      const unroll::nn::AttentionResult a = model->attn.attend(h, keys, memory);
      feed = unroll::tanh(model->combine(unroll::cat({a.context, h}, 1)));
      const Tensor l = unroll::cross_entropy(model->out(feed), tgt_out[t], unroll::Reduction::sum);
      loss = t == 0 ? l : loss + l;
    }
    (loss * (1.0 / (T * B))).backward();
    adam->step();
    adam->zero_grad();
  };
  nlohmann::json config = {{"batch", B}, {"src_len", S}, {"tgt_len", T}, {"hidden", H}, {"vocab", kVocab},
                           {"attention", "luong_general"}, {"optimizer", "adam"}};
  return {config, static_cast<double>(B) * T, step};
}

const std::vector<bench::Workload> kWorkloads = {
    {"tiny_rnn", "vanilla tanh RNN, per-op overhead [--batch 1 --input 16 --hidden 32 --seq 200 --fused 1|0]",
     tiny_rnn},
    {"tiny_rnn_loops",
     "tiny_rnn's floor: plain C++ loops, -O3 -march=native -ffast-math [same flags as tiny_rnn; --sized 1: the "
     "default sizes as compile-time constants]",
     tiny_rnn_loops},
    {"tiny_rnn_paired",
     "the floor (a) and tiny_rnn (b) alternately, each timed: the median per-pair ratio b/a under extra "
     "[tiny_rnn's flags]",
     tiny_rnn_paired},
    {"elementwise", "tanh(a + b) on n floats, x100, no autograd [--n 65536 --grain G]", elementwise},
    {"matmul", "[m,k] x [k,n] product, x100, no autograd [--m 1 --n 32 --k 32 --small-work W --small-rows R]", matmul},
    {"step_gemm",
     "a recurrent layer's per-step products h W_hh^T and dG W_hh over T steps, no autograd "
     "[--batch 32 --hidden 128 --gates 4 --seq 64 --packed 1|0]",
     step_gemm},
    {"lstm_lm",
     "char LM training step: Embedding(96,H), LSTM(H,H,L), Linear(H,96), cross-entropy, Adam "
     "[--batch 32 --seq 64 --hidden 128 --layers 1 --cell lstm|mingru|minlstm --lr 1e-3 --prelude 0 --flush 1|0 "
     "--shards <threads>]",
     lstm_lm},
    {"denormal",
     "lstm_lm diverging: Adam lr 1 after 40 untimed steps (saturated gates, subnormal floats) "
     "[lstm_lm's flags, --flush 1|0 --prelude 40 --lr 1]",
     denormal},
    {"stream", "memory bandwidth: triad a = b + 3c over n floats, x10 [--n 16777216]", stream},
    {"scan",
     "linear recurrence h_t = a_t h_{t-1} + b_t, forward + backward [--seq 4096 --batch 32 --hidden 512 "
     "--mode sequential|chunked|automatic|composed --backward 1|0]",
     scan},
    {"fastrnn",
     "one recurrent layer, forward + backward of sum(outputs) "
     "[--seq 100 --batch 64 --input 512 --hidden 512 --variant nn_lstm|cell_lstm|cell_gru|nn_gru|cell_mgu|mingru|minlstm "
     "--fused 1|0 "
     "--shards <threads>]",
     fastrnn},
    {"bptt_memory",
     "LSTM layer over a long sequence, forward + mean(output).backward(), peak memory "
     "[--seq 10000 --batch 32 --hidden 256 --checkpoint-every K (0: none) --budget-mb M (0: none)]",
     bptt_memory},
    {"fastrnn_paired",
     "the built-in layer or the unfused cell (a) and the fused composed cell (b) alternately, each timed: the "
     "median per-pair ratio b/a under extra [--cell lstm|gru|mgu --against builtin|unfused, fastrnn's size flags]",
     fastrnn_paired},
    {"attention",
     "nn::MultiheadAttention self-attention, forward + backward of sum(output) [--seq 64 --batch 16 --embed 256 "
     "--heads 4]",
     attention},
    {"seq2seq",
     "translation training step: BiGRU(H) encoder, GRUCell(3H, 2H) decoder with Luong attention and input "
     "feeding, cross-entropy, Adam [--batch 32 --src-len 40 --tgt-len 40 --hidden 128]",
     seq2seq},
};
}  // namespace

int main(int argc, char** argv) {
#ifdef UNROLL_BENCH_MPI
  if (const char* n = std::getenv("OMPI_COMM_WORLD_SIZE"); n != nullptr && std::atoi(n) > 1) {
    g_mpi = std::make_unique<unroll::dist::Context>();
    if (!g_mpi->is_root()) (void)std::freopen("/dev/null", "w", stdout);  // one JSON line: rank 0's
  }
#endif
  return bench::run_main(argc, argv, "unroll", kWorkloads, [](int n) { unroll::set_num_threads(n); });
}
