// dist/: the MPI world's collectives, failure agreement, and data-parallel training equal to one process.
// Run on 1, 2 and 3 ranks (ctest); every rank runs every case, in the same order.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include <unroll/dist/checkpoint.hpp>
#include <unroll/dist/data_parallel.hpp>
#include <unroll/unroll.hpp>

#include "dist_support.hpp"

using namespace unroll;
using dist_support::ctx;

namespace {
constexpr Dtype f64 = Dtype::float64;

// The same checksum on every rank?
bool same_on_all_ranks(std::span<const Tensor> tensors) {
  const auto all = ctx().all_gather(dist::checksum(tensors));
  for (std::uint64_t c : all)
    if (c != all[0]) return false;
  return true;
}

// A character language model in miniature: embedding, LSTM (dropout between layers), linear head.
struct TinyLM {
  static constexpr std::int64_t V = 11, E = 5, H = 6;
  nn::Embedding embed;
  nn::LSTM lstm;
  nn::Linear head;
  TinyLM(Dtype dtype, double dropout)
      : embed(V, E, std::nullopt, dtype),
        lstm({.input_size = E, .hidden_size = H, .num_layers = 2, .dropout = dropout, .dtype = dtype}),
        head(H, V, true, dtype) {}
  std::vector<Tensor> parameters() const {
    std::vector<Tensor> p = embed.parameters();
    for (const auto* m : std::initializer_list<const nn::Module*>{&lstm, &head})
      for (const Tensor& t : m->parameters()) p.push_back(t);
    return p;
  }
  StateDict state_dict() const {
    StateDict d;
    d.merge(embed.state_dict(), "embed.");
    d.merge(lstm.state_dict(), "lstm.");
    d.merge(head.state_dict(), "head.");
    return d;
  }
  void load_state_dict(const StateDict& d) {
    embed.load_state_dict(d.sub("embed."));
    lstm.load_state_dict(d.sub("lstm."));
    head.load_state_dict(d.sub("head."));
  }
  // Mean cross-entropy of columns [begin, end) of x, y [T, B].
  Tensor loss(const Tensor& x, const Tensor& y, std::int64_t begin, std::int64_t rows) const {
    const Tensor xs = narrow(x, 1, begin, rows), ys = narrow(y, 1, begin, rows);
    const Tensor logits = head(lstm(embed(xs)).output);
    return cross_entropy(reshape(logits, {-1, V}), reshape(ys, {-1}));
  }
};

std::vector<std::vector<double>> grads_of(const std::vector<Tensor>& params) {
  std::vector<std::vector<double>> g;
  for (const Tensor& p : params) g.push_back(p.grad().defined() ? p.grad().to_vector<double>() : std::vector<double>{});
  return g;
}

// Largest |a - b| / (1e-300 + max |b|) over all gradients.
double max_rel_diff(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b) {
  double worst = 0, scale = 0;
  for (const auto& v : b)
    for (double x : v) scale = std::max(scale, std::abs(x));
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size()) return INFINITY;  // (no REQUIRE: the other ranks would wait in the next collective)
    for (std::size_t k = 0; k < a[i].size(); ++k) worst = std::max(worst, std::abs(a[i][k] - b[i][k]));
  }
  return worst / (1e-300 + scale);
}
}  // namespace

TEST_SUITE("dist/context") {
  TEST_CASE("rank and world size; a barrier") {
    CHECK(ctx().world_size() >= 1);
    CHECK(ctx().rank() >= 0);
    CHECK(ctx().rank() < ctx().world_size());
    CHECK(ctx().is_root() == (ctx().rank() == 0));
    ctx().barrier();
  }

  TEST_CASE("broadcast_: every rank takes the root's values, for each dtype") {
    const double r = ctx().rank();
    std::vector<Tensor> t = {full({2, 3}, 1.5 + r, Dtype::float32), full({4}, 0.25 - r, f64),
                             full({3}, 7 + r, Dtype::int64)};
    const int root = ctx().world_size() - 1;
    ctx().broadcast_(t, root);
    CHECK(t[0].to_vector<double>() == std::vector<double>(6, 1.5 + root));
    CHECK(t[1].to_vector<double>() == std::vector<double>(4, 0.25 - root));
    CHECK(t[2].to_vector<double>() == std::vector<double>(3, 7.0 + root));
  }

  TEST_CASE("all_reduce_: sum, mean, max, min; deterministic equals the sum in rank order, bit for bit") {
    const int n = ctx().world_size();
    // Values whose float sum depends on the order: rank r holds 0.1 * (r + 1) + 1e-9 * r in every element.
    auto value = [](int r) { return 0.1f * static_cast<float>(r + 1) + 1e-9f * static_cast<float>(r); };
    float want = value(0);
    for (int r = 1; r < n; ++r) want += value(r);
    for (bool deterministic : {true, false}) {
      std::vector<Tensor> t = {full({1001}, value(ctx().rank()), Dtype::float32), full({5}, ctx().rank(), f64)};
      ctx().all_reduce_(t, {.op = dist::ReduceOp::sum, .deterministic = deterministic});
      if (deterministic) CHECK(t[0].to_vector<float>() == std::vector<float>(1001, want));
      if (deterministic) CHECK(same_on_all_ranks(std::span<const Tensor>(t.data(), 1)));
      CHECK(t[1].to_vector<double>() == std::vector<double>(5, n * (n - 1) / 2.0));
    }
    std::vector<Tensor> m = {full({3}, ctx().rank(), f64)};
    ctx().all_reduce_(m, {.op = dist::ReduceOp::mean});
    CHECK(m[0].to_vector<double>() == std::vector<double>(3, (n - 1) / 2.0));
    std::vector<Tensor> hi = {full({2}, ctx().rank(), Dtype::int64)}, lo = {full({2}, ctx().rank(), Dtype::int64)};
    ctx().all_reduce_(hi, {.op = dist::ReduceOp::max});
    ctx().all_reduce_(lo, {.op = dist::ReduceOp::min});
    CHECK(hi[0].to_vector<double>() == std::vector<double>(2, n - 1));
    CHECK(lo[0].to_vector<double>() == std::vector<double>(2, 0));
  }

  TEST_CASE("bad input: mismatched shapes across ranks, mean of integers, no such root") {
    if (ctx().world_size() > 1) {
      std::vector<Tensor> t = {zeros({ctx().rank() == 1 ? 3 : 2}, f64)};
      CHECK_THROWS_WITH_AS(ctx().all_reduce_(t),
                           "all_reduce_: the ranks' tensors differ; got rank 1's shapes or dtypes different from rank "
                           "0's (1 tensors here), expected the same tensors on every rank",
                           ShapeError);
      CHECK_THROWS_AS(ctx().broadcast_(t, 0), ShapeError);
    }
    std::vector<Tensor> i = {zeros({2}, Dtype::int64)};
    CHECK_THROWS_WITH_AS(ctx().all_reduce_(i, {.op = dist::ReduceOp::mean}),
                         "all_reduce_: mean needs a floating dtype; got int64, expected float32 or float64", DtypeError);
    CHECK_THROWS_AS(ctx().broadcast_(i, ctx().world_size()), ValueError);
  }

  TEST_CASE("agree: a rank that throws stops every rank with its message") {
    const int n = ctx().world_size();
    const int bad = n - 1;
    try {
      ctx().agree([&] {
        if (ctx().rank() == bad) throw ValueError("cannot read part-" + std::to_string(bad) + ".txt");
      });
      FAIL("agree returned");
    } catch (const dist::RankError& e) {
      CHECK(std::string(e.what()) ==
            "rank " + std::to_string(bad) + " of " + std::to_string(n) + ": cannot read part-" + std::to_string(bad) + ".txt");
      CHECK(e.failed_rank() == bad);
      CHECK((e.original() != nullptr) == (ctx().rank() == bad));
      if (ctx().rank() == bad) CHECK_THROWS_AS(std::rethrow_exception(e.original()), ValueError);
    }
    // Two ranks failing: the lowest is named, the other counted.
    if (n >= 2) {
      try {
        ctx().agree([&] {
          if (ctx().rank() >= n - 2) throw StateError("rank " + std::to_string(ctx().rank()) + " broke");
        });
        FAIL("agree returned");
      } catch (const dist::RankError& e) {
        CHECK(std::string(e.what()) == fmt::format("rank {} of {}: rank {} broke (and 1 more rank(s) failed)", n - 2, n, n - 2));
      }
    }
    ctx().agree([] {});  // nobody fails: returns on every rank
  }

  TEST_CASE("broadcast_state_dict: names, shapes, dtypes and values of the root's dict") {
    StateDict d;
    if (ctx().is_root()) {
      d.insert("state.0.exp_avg", full({2, 3}, 0.5, f64));
      d.insert("state.0.step", full({}, 7, Dtype::int64));
      d.insert("param_groups.0.lr", full({}, 1e-3, Dtype::float32));
    } else {
      d.insert("stale", zeros({1}));
    }
    dist::broadcast_state_dict(ctx(), d);
    REQUIRE(d.size() == 3);
    CHECK(d.at("state.0.exp_avg").shape() == Shape{2, 3});
    CHECK(d.at("state.0.exp_avg").to_vector<double>() == std::vector<double>(6, 0.5));
    CHECK(d.at("state.0.step").dtype() == Dtype::int64);
    CHECK(d.at("state.0.step").item() == 7);
    CHECK(d.at("param_groups.0.lr").item() == doctest::Approx(1e-3));
    CHECK_FALSE(d.contains("stale"));
  }
}

TEST_SUITE("dist/data_parallel") {
  TEST_CASE("start-up: every rank holds rank 0's parameters") {
    manual_seed(100 + static_cast<std::uint64_t>(ctx().rank()));  // a different initialisation on every rank
    TinyLM m(Dtype::float32, 0.0);
    const std::vector<Tensor> params = m.parameters();
    if (ctx().world_size() > 1) CHECK_FALSE(same_on_all_ranks(params));
    dist::DataParallel dp(ctx(), params);
    CHECK(same_on_all_ranks(params));
    manual_seed(100);
    TinyLM rank0(Dtype::float32, 0.0);
    CHECK(dist::checksum(rank0.parameters()) == dist::checksum(params));
  }

  TEST_CASE("the LSTM language model's gradients equal one process's (float64, to round-off)") {
    manual_seed(7);
    TinyLM m(f64, 0.0);
    const std::int64_t T = 5, B = 7;
    Generator data(11);
    const Tensor x = randint({T, B}, 0, TinyLM::V, data), y = randint({T, B}, 0, TinyLM::V, data);
    const std::vector<Tensor> params = m.parameters();
    m.loss(x, y, 0, B).backward();  // the whole batch in this process
    const auto want = grads_of(params);
    for (Tensor p : params) p.zero_grad();

    for (int shards : {1, 2}) {
      dist::DataParallel dp(ctx(), params, {.shards = shards, .bucket_bytes = 256});  // several buckets
      const double loss = dp.backward(B, [&](const autograd::Shard& s) { return m.loss(x, y, s.begin, s.size()); });
      CHECK(max_rel_diff(grads_of(params), want) < 1e-13);
      CHECK(same_on_all_ranks(std::span<const Tensor>(params)));
      CHECK(loss == doctest::Approx(m.loss(x, y, 0, B).item()).epsilon(1e-13));
      CHECK(dp.last_stats().buckets >= (ctx().world_size() > 1 ? 2 : 0));
      std::vector<Tensor> g;
      for (const Tensor& p : params) g.push_back(p.grad());
      CHECK(same_on_all_ranks(g));
      for (Tensor p : params) p.zero_grad();
    }
  }

  TEST_CASE("a custom cell through run_cell: gradients equal one process's") {
    manual_seed(8);
    const std::int64_t T = 6, B = 5, I = 3, H = 4;
    Tensor w = uniform({H, I + H}, -0.5, 0.5, f64).requires_grad_();
    Tensor b = uniform({H}, -0.5, 0.5, f64).requires_grad_();
    Generator data(3);
    const Tensor x = randn({T, B, I}, f64, data);
    auto step = [&](const Tensor& x_t, const Tensor& h) {  // a minimal gated unit
      const Tensor f = sigmoid(linear(cat({x_t, h}, 1), w, b));
      return add(mul(f, h), mul(1.0 - f, tanh(narrow(x_t, 1, 0, 1))));
    };
    auto loss = [&](std::int64_t begin, std::int64_t rows) {
      const Tensor xs = narrow(x, 1, begin, rows);
      return mean(mul(nn::run_cell(xs, zeros({rows, H}, f64), step).output, 1.0));
    };
    loss(0, B).backward();
    const auto want = grads_of({w, b});
    w.zero_grad(), b.zero_grad();
    dist::DataParallel dp(ctx(), {w, b});
    dp.backward(B, [&](const autograd::Shard& s) { return loss(s.begin, s.size()); });
    CHECK(max_rel_diff(grads_of({w, b}), want) < 1e-13);
  }

  TEST_CASE("N ranks of k shards compute what one process of N*k shards does, dropout included, bit for bit") {
    const int n = ctx().world_size();
    manual_seed(9);
    TinyLM m(Dtype::float32, 0.3);
    const std::int64_t T = 4, B = 6;
    Generator data(5);
    const Tensor x = randint({T, B}, 0, TinyLM::V, data), y = randint({T, B}, 0, TinyLM::V, data);
    const std::vector<Tensor> params = m.parameters();
    // One process: n shards (one per rank's slice; the slices are what DataParallel makes).
    std::vector<std::int64_t> sizes;
    for (int r = 0; r < n; ++r) sizes.push_back(B / n + (r < B % n ? 1 : 0));
    const double want_loss = autograd::sharded_backward(
        B, [&](const autograd::Shard& s) { return m.loss(x, y, s.begin, s.size()); }, {.sizes = sizes, .seed = 123});
    const auto want = grads_of(params);
    for (Tensor p : params) p.zero_grad();
    dist::DataParallel dp(ctx(), params, {.shards = 1});
    const double loss = dp.backward(B, [&](const autograd::Shard& s) { return m.loss(x, y, s.begin, s.size()); }, 123);
    CHECK(grads_of(params) == want);
    CHECK(loss == want_loss);
    for (Tensor p : params) p.zero_grad();
  }

  TEST_CASE("N ranks of 2 shards: the rows and dropout streams of one process of 2N shards (float64, to round-off)") {
    const int n = ctx().world_size();
    manual_seed(19);
    TinyLM m(f64, 0.4);
    const std::int64_t T = 3, B = 4 * n + 1;  // not a multiple of the shard count: shard sizes differ
    Generator data(6);
    const Tensor x = randint({T, B}, 0, TinyLM::V, data), y = randint({T, B}, 0, TinyLM::V, data);
    const std::vector<Tensor> params = m.parameters();
    const double want_loss = autograd::sharded_backward(
        B, [&](const autograd::Shard& s) { return m.loss(x, y, s.begin, s.size()); }, {.shards = 2 * n, .seed = 77});
    const auto want = grads_of(params);
    for (Tensor p : params) p.zero_grad();
    dist::DataParallel dp(ctx(), params, {.shards = 2});
    const double loss = dp.backward(B, [&](const autograd::Shard& s) { return m.loss(x, y, s.begin, s.size()); }, 77);
    CHECK(max_rel_diff(grads_of(params), want) < 1e-13);
    CHECK(loss == doctest::Approx(want_loss).epsilon(1e-13));
    for (Tensor p : params) p.zero_grad();
  }

  TEST_CASE("a parameter listed twice (tied weights) is reduced once") {
    manual_seed(23);
    Tensor w = uniform({3}, -1, 1, f64).requires_grad_();
    const Tensor x = randn({8, 3}, f64);
    sum(mul(narrow(x, 0, 0, 8), w)).backward();
    const auto want = grads_of({w});
    w.zero_grad();
    dist::DataParallel dp(ctx(), {w, w}, {.shards = 1});
    dp.backward(8, [&](const autograd::Shard& s) { return mean(sum(mul(narrow(x, 0, s.begin, s.size()), w), {1})) * 8.0; });
    CHECK(max_rel_diff(grads_of({w}), want) < 1e-13);
  }

  TEST_CASE("20 Adam steps: bit-identical parameters on every rank, and from run to run") {
    auto run = [] {
      manual_seed(21);
      TinyLM m(Dtype::float32, 0.2);
      const std::vector<Tensor> params = m.parameters();
      dist::DataParallel dp(ctx(), params, {.shards = 2, .check_every = 5});
      optim::Adam opt(params, {.lr = 0.01});
      Generator data(2);
      for (int step = 0; step < 20; ++step) {
        const Tensor x = randint({4, 8}, 0, TinyLM::V, data), y = randint({4, 8}, 0, TinyLM::V, data);
        dp.backward(8, [&](const autograd::Shard& s) { return m.loss(x, y, s.begin, s.size()); });
        opt.step();
        opt.zero_grad();
      }
      CHECK(same_on_all_ranks(params));
      return dist::checksum(params);
    };
    const std::uint64_t first = run();
    CHECK(run() == first);
  }

  TEST_CASE("check_replicas names the rank that drifted") {
    manual_seed(4);
    TinyLM m(f64, 0.0);
    const std::vector<Tensor> params = m.parameters();
    dist::DataParallel dp(ctx(), params);
    dp.check_replicas();  // all equal after the start-up broadcast
    if (ctx().world_size() == 1) return;
    if (ctx().rank() == 1) params[0].data<double>()[0] += 1e-12;
    CHECK_THROWS_WITH_AS(dp.check_replicas(), doctest::Contains("got rank(s) 1 different from rank 0"), StateError);
  }

  TEST_CASE("a rank whose loss_fn throws stops every rank, naming it; no gradient touched") {
    manual_seed(5);
    TinyLM m(f64, 0.0);
    const std::vector<Tensor> params = m.parameters();
    dist::DataParallel dp(ctx(), params, {.shards = 1});
    const Tensor x = zeros({3, 4}, Dtype::int64), y = zeros({3, 4}, Dtype::int64);
    const int bad = ctx().world_size() - 1;
    CHECK_THROWS_WITH_AS(dp.backward(4,
                                     [&](const autograd::Shard& s) -> Tensor {
                                       if (ctx().rank() == bad) throw NonFiniteError("exp: non-finite output");
                                       return m.loss(x, y, s.begin, s.size());
                                     }),
                         fmt::format("rank {} of {}: exp: non-finite output", bad, ctx().world_size()).c_str(),
                         dist::RankError);
    for (const Tensor& p : params) CHECK_FALSE(p.grad().defined());
    CHECK_THROWS_AS(dp.backward(ctx().world_size() - 1, [&](const autograd::Shard& s) { return m.loss(x, y, s.begin, s.size()); }),
                    ValueError);
  }

  TEST_CASE("resume: rank 0 writes, every rank loads; the resumed run equals the uninterrupted one, bit for bit") {
    // One path for all ranks: rank 0's process id names it.
    const std::uint64_t id = ctx().all_gather(static_cast<std::uint64_t>(::getpid()))[0];
    const std::string path = (std::filesystem::temp_directory_path() / fmt::format("unroll_dist_resume_{}.ckpt", id)).string();
    auto train = [&](TinyLM& m, optim::Adam& opt, dist::DataParallel& dp, int from, int to) {
      for (int step = from; step < to; ++step) {
        Generator data(1000 + static_cast<std::uint64_t>(step));  // the data order: a function of the step
        const Tensor x = randint({4, 6}, 0, TinyLM::V, data), y = randint({4, 6}, 0, TinyLM::V, data);
        dp.backward(6, [&](const autograd::Shard& s) { return m.loss(x, y, s.begin, s.size()); });
        opt.step();
        opt.zero_grad();
      }
    };
    manual_seed(31);
    TinyLM whole(Dtype::float32, 0.2);
    optim::Adam whole_opt(whole.parameters(), {.lr = 0.02});
    dist::DataParallel whole_dp(ctx(), whole.parameters(), {.shards = 1});
    train(whole, whole_opt, whole_dp, 0, 6);

    manual_seed(31);
    TinyLM first(Dtype::float32, 0.2);
    optim::Adam first_opt(first.parameters(), {.lr = 0.02});
    dist::DataParallel first_dp(ctx(), first.parameters(), {.shards = 1});
    train(first, first_opt, first_dp, 0, 3);
    dist::save_checkpoint(ctx(), path,
                          {.model = first.state_dict(), .optimizer = first_opt.state_dict(), .scheduler = {}, .step = 3,
                           .rng = default_generator().state(), .extra = {}, .extra_tensors = {}});

    manual_seed(99);  // a different start, replaced by the checkpoint
    TinyLM resumed(Dtype::float32, 0.2);
    optim::Adam resumed_opt(resumed.parameters(), {.lr = 0.02});
    dist::DataParallel resumed_dp(ctx(), resumed.parameters(), {.shards = 1});
    // Only rank 0 reads the file (the others are given a path that does not exist) and sends it to the others.
    const Checkpoint c = dist::load_checkpoint(ctx(), ctx().is_root() ? path : "/nonexistent/elsewhere.ckpt");
    CHECK(c.step == 3);
    CHECK(c.extra.at("dist.world_size") == std::to_string(ctx().world_size()));
    resumed.load_state_dict(c.model);
    resumed_opt.load_state_dict(c.optimizer);
    default_generator().set_state(c.rng);
    train(resumed, resumed_opt, resumed_dp, 3, 6);
    CHECK(dist::checksum(resumed.parameters()) == dist::checksum(whole.parameters()));
    CHECK(same_on_all_ranks(resumed.parameters()));
    ctx().barrier();
    if (ctx().is_root()) std::filesystem::remove(path);
    // A file that cannot be read stops every rank, naming the rank and the file.
    CHECK_THROWS_WITH_AS(dist::load_checkpoint(ctx(), path + ".missing"), doctest::Contains("rank 0 of"), dist::RankError);
  }
}
