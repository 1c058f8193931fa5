// Batch sharding: sharded gradients equal the unsharded step (float64, to round-off) for an LSTM language
// model and a custom cell, for several shard layouts; failures leave every gradient and parameter as it was;
// dropout streams are reproducible; BLAS and elementwise loops stay single-threaded inside shards; storage
// allocated in a shard and freed by the caller goes back to the thread that allocated it.
#include <doctest/doctest.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include <unroll/autograd/shard.hpp>
#include <unroll/core/blas.hpp>
#include <unroll/unroll.hpp>

using namespace unroll;
using autograd::Shard;
using autograd::sharded_backward;
using autograd::ShardOptions;

namespace {
constexpr Dtype f64 = Dtype::float64;

// Embedding -> (dropout) -> LSTM -> Linear over tokens [T, B], next-token cross-entropy (mean over T*B).
struct LanguageModel : nn::Module {
  static constexpr std::int64_t V = 11, E = 5, H = 6;
  nn::Embedding embed{V, E, std::nullopt, f64};
  nn::Dropout drop;
  nn::LSTM lstm{{.input_size = E, .hidden_size = H, .dtype = f64}};
  nn::Linear head{H, V, true, f64};
  explicit LanguageModel(double p = 0.0) : drop(p) {
    register_module("embed", embed);
    register_module("drop", drop);
    register_module("lstm", lstm);
    register_module("head", head);
  }
  // tokens and targets [T, b] -> mean loss over T*b
  Tensor loss(const Tensor& tokens, const Tensor& targets) const {
    const std::int64_t T = tokens.size(0), b = tokens.size(1);
    Tensor out = lstm(drop(embed(tokens))).output;  // [T, b, H]
    return cross_entropy(reshape(head(out), {T * b, V}), reshape(targets, {T * b}));
  }
};

struct Batch {
  Tensor tokens, targets;  // [T, B] int64
};
Batch make_batch(std::int64_t T, std::int64_t B, std::uint64_t seed) {
  Generator gen(seed);
  return {randint({T, B}, 0, LanguageModel::V, gen), randint({T, B}, 0, LanguageModel::V, gen)};
}
Tensor rows(const Tensor& x, const Shard& s) { return narrow(x, 1, s.begin, s.size()); }

// Each parameter's gradient, copied out (so later steps cannot change what we compare).
std::vector<Tensor> grads_of(const std::vector<Tensor>& params) {
  std::vector<Tensor> out;
  for (const Tensor& p : params) out.push_back(p.grad().defined() ? copy_of(p.grad()) : Tensor());
  return out;
}
void zero_grads(std::vector<Tensor>& params) {
  for (Tensor& p : params) p.zero_grad();
}
double max_abs_diff(const Tensor& a, const Tensor& b) {
  const auto va = a.to_vector(), vb = b.to_vector();
  REQUIRE(va.size() == vb.size());
  double worst = 0;
  for (std::size_t i = 0; i < va.size(); ++i) worst = std::max(worst, std::abs(va[i] - vb[i]));
  return worst;
}
bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), static_cast<std::size_t>(a.numel()) * 8) == 0;
}
void check_close(const std::vector<Tensor>& got, const std::vector<Tensor>& want, double tol = 1e-12) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    REQUIRE(got[i].defined() == want[i].defined());
    if (!want[i].defined()) continue;
    CHECK(got[i].shape() == want[i].shape());
    CHECK_MESSAGE(max_abs_diff(got[i], want[i]) <= tol, "parameter ", i,
                  ": max |diff| = ", max_abs_diff(got[i], want[i]));
  }
}
}  // namespace

TEST_SUITE("autograd/shard") {
  TEST_CASE("make_shards: near-equal contiguous ranges, explicit sizes, more shards than rows") {
    auto sizes = [](const std::vector<Shard>& s) {
      std::vector<std::int64_t> out;
      for (const Shard& x : s) out.push_back(x.size());
      return out;
    };
    const auto s = autograd::make_shards(7, {.shards = 3});
    REQUIRE(s.size() == 3);
    CHECK(sizes(s) == std::vector<std::int64_t>{3, 2, 2});
    CHECK(s[1].begin == 3);
    CHECK(s[1].end == 5);
    CHECK(s[2].index == 2);
    CHECK(s[2].count == 3);
    CHECK(sizes(autograd::make_shards(4, {.shards = 9})) == std::vector<std::int64_t>{1, 1, 1, 1});
    CHECK(sizes(autograd::make_shards(7, {.sizes = {1, 6}})) == std::vector<std::int64_t>{1, 6});
    CHECK(autograd::make_shards(1000, {}).size() == static_cast<std::size_t>(num_threads()));
  }

  TEST_CASE("LSTM language model: sharded gradients equal the unsharded step") {
    LanguageModel model;
    std::vector<Tensor> params = model.parameters();
    const std::int64_t T = 4, B = 7;
    const Batch batch = make_batch(T, B, 11);

    Tensor full_loss = model.loss(batch.tokens, batch.targets);
    const double want_loss = full_loss.item();
    full_loss.backward();
    const std::vector<Tensor> want = grads_of(params);
    zero_grads(params);

    const std::vector<ShardOptions> layouts = {{.shards = 1},     {.shards = 2},        {.shards = 3},  // 3 + 2 + 2
                                               {.sizes = {1, 6}}, {.sizes = {2, 1, 4}}, {.shards = 12}};
    for (const ShardOptions& opt : layouts) {
      CAPTURE(opt.shards);
      CAPTURE(opt.sizes.size());
      const double loss = sharded_backward(
          B, [&](const Shard& s) { return model.loss(rows(batch.tokens, s), rows(batch.targets, s)); }, opt);
      CHECK(loss == doctest::Approx(want_loss).epsilon(1e-14));
      check_close(grads_of(params), want);
      zero_grads(params);
    }
  }

  TEST_CASE("custom cell through run_cell, with an input that requires grad: sharded equals unsharded") {
    // A minimal gated unit from Linear modules; every leaf that gets a gradient is reduced, inputs included.
    struct MGU : nn::Module {
      nn::Linear f{3 + 4, 4, true, f64}, c{3 + 4, 4, true, f64}, out{4, 2, true, f64};
      MGU() {
        register_module("f", f);
        register_module("c", c);
        register_module("out", out);
      }
      Tensor step(const Tensor& x, const Tensor& h) const {
        Tensor gate = sigmoid(f(cat({x, h}, 1)));
        Tensor cand = unroll::tanh(c(cat({x, gate * h}, 1)));
        return (1.0 - gate) * h + gate * cand;
      }
    } cell;
    Generator gen(5);
    const std::int64_t T = 5, B = 5;
    Tensor x = randn({T, B, 3}, f64, gen).requires_grad_();
    const Tensor y = randn({T, B, 2}, f64, gen);
    std::vector<Tensor> leaves = cell.parameters();
    leaves.push_back(x);
    auto loss_of = [&](const Tensor& xs, const Tensor& ys) {
      auto [outputs, h] = nn::run_cell(xs, zeros({xs.size(1), 4}, f64),
                                       [&](const Tensor& x_t, const Tensor& h_t) { return cell.step(x_t, h_t); });
      return mse_loss(cell.out(outputs), ys);
    };
    Tensor full = loss_of(x, y);
    const double want_loss = full.item();
    full.backward();
    const std::vector<Tensor> want = grads_of(leaves);
    zero_grads(leaves);

    for (const ShardOptions& opt :
         {ShardOptions{.shards = 2}, ShardOptions{.shards = 3}, ShardOptions{.sizes = {4, 1}}}) {
      const double loss = sharded_backward(
          B, [&](const Shard& s) { return loss_of(rows(x, s), rows(y, s)); }, opt);
      CHECK(loss == doctest::Approx(want_loss).epsilon(1e-14));
      check_close(grads_of(leaves), want);
      zero_grads(leaves);
    }
  }

  TEST_CASE("sum_loss: shards return sums, the gradient is the batch sum's (fastrnn's forward + backward)") {
    nn::LSTMCell cell(3, 4, true, f64);
    std::vector<Tensor> params = cell.parameters();
    Generator gen(12);
    const std::int64_t T = 4, B = 5;
    const Tensor x = randn({T, B, 3}, f64, gen);
    auto sum_of_outputs = [&](const Tensor& xs) {
      auto run = nn::run_cell(
          xs, std::pair<Tensor, Tensor>(zeros({xs.size(1), 4}, f64), zeros({xs.size(1), 4}, f64)),
          [&](const Tensor& x_t, const std::pair<Tensor, Tensor>& hc) { return cell(x_t, hc.first, hc.second); });
      return sum(run.output);
    };
    Tensor full = sum_of_outputs(x);
    const double want_loss = full.item();
    full.backward();
    const std::vector<Tensor> want = grads_of(params);
    zero_grads(params);
    const double loss = sharded_backward(B, [&](const Shard& s) { return sum_of_outputs(rows(x, s)); },
                                         {.shards = 2, .sum_loss = true});
    CHECK(loss == doctest::Approx(want_loss).epsilon(1e-14));
    check_close(grads_of(params), want);
  }

  TEST_CASE("gradients accumulate onto existing .grad like backward(), and repeated runs are bit-identical") {
    LanguageModel model;
    std::vector<Tensor> params = model.parameters();
    const Batch batch = make_batch(3, 6, 2);
    auto loss_fn = [&](const Shard& s) { return model.loss(rows(batch.tokens, s), rows(batch.targets, s)); };

    Tensor l1 = model.loss(batch.tokens, batch.targets);
    l1.backward();
    Tensor l2 = model.loss(batch.tokens, batch.targets);
    l2.backward();
    const std::vector<Tensor> twice = grads_of(params);
    zero_grads(params);

    sharded_backward(6, loss_fn, {.shards = 3});
    const std::vector<Tensor> once = grads_of(params);
    sharded_backward(6, loss_fn, {.shards = 3});
    check_close(grads_of(params), twice);

    for (int run = 0; run < 3; ++run) {
      zero_grads(params);
      sharded_backward(6, loss_fn, {.shards = 3});
      const std::vector<Tensor> again = grads_of(params);
      for (std::size_t i = 0; i < params.size(); ++i) CHECK(bit_equal(again[i], once[i]));
    }
  }

  TEST_CASE("a shard that throws: the first failing shard's exception reaches the caller, nothing is touched") {
    LanguageModel model;
    std::vector<Tensor> params = model.parameters();
    const Batch batch = make_batch(3, 6, 4);
    Tensor warm = model.loss(batch.tokens, batch.targets);
    warm.backward();  // existing gradients, which a failed step must leave alone
    const std::vector<Tensor> grads_before = grads_of(params);
    std::vector<Tensor> values_before;
    for (const Tensor& p : params) values_before.push_back(copy_of(p));

    auto check_untouched = [&] {
      for (std::size_t i = 0; i < params.size(); ++i) {
        CHECK(bit_equal(params[i].grad(), grads_before[i]));
        CHECK(bit_equal(params[i], values_before[i]));
      }
    };
    for (int run = 0; run < 4; ++run) {  // shards 1 and 2 both fail; shard 1's error wins whatever the timing
      CHECK_THROWS_WITH_AS(sharded_backward(6,
                                            [&](const Shard& s) {
                                              Tensor loss = model.loss(rows(batch.tokens, s), rows(batch.targets, s));
                                              if (s.index == 1)
                                                throw std::runtime_error("data loader failed in shard 1");
                                              if (s.index == 2) throw ValueError("shard 2 failed too");
                                              return loss;
                                            },
                                            {.shards = 3}),
                           "data loader failed in shard 1", std::runtime_error);
      check_untouched();
    }
    // An error raised by the library inside a shard keeps its type and text.
    CHECK_THROWS_WITH_AS(sharded_backward(6,
                                          [&](const Shard& s) {
                                            Tensor loss = model.loss(rows(batch.tokens, s), rows(batch.targets, s));
                                            return s.index == 0 ? loss : add(loss, ones({2}, f64)) * zeros({3}, f64);
                                          },
                                          {.shards = 2}),
                         "mul: shapes are not broadcastable; got a=[2] and b=[3], expected equal sizes or 1 in each "
                         "dimension",
                         ShapeError);
    check_untouched();
  }

  TEST_CASE("argument and loss errors") {
    LanguageModel model;
    const Batch batch = make_batch(2, 4, 1);
    auto good = [&](const Shard& s) { return model.loss(rows(batch.tokens, s), rows(batch.targets, s)); };
    CHECK_THROWS_WITH_AS(sharded_backward(0, good),
                         "sharded_backward: empty batch; got batch=0, expected at least one row", ValueError);
    CHECK_THROWS_WITH_AS(sharded_backward(4, good, {.shards = -1}),
                         "sharded_backward: negative shard count; got shards=-1, expected >= 0 (0: one per thread)",
                         ValueError);
    CHECK_THROWS_WITH_AS(sharded_backward(4, good, {.sizes = {2, 0, 2}}),
                         "sharded_backward: shard sizes must be positive; got sizes=[2, 0, 2], expected each >= 1",
                         ValueError);
    CHECK_THROWS_WITH_AS(sharded_backward(4, good, {.sizes = {2, 1}}),
                         "sharded_backward: shard sizes do not add up to the batch; got sizes=[2, 1] summing to 3, "
                         "expected 4",
                         ValueError);
    CHECK_THROWS_WITH_AS(autograd::make_shards(-3), "make_shards: empty batch; got batch=-3, expected at least one row",
                         ValueError);
    CHECK_THROWS_WITH_AS(
        sharded_backward(4,
                         [&](const Shard& s) {
                           Tensor tokens = rows(batch.tokens, s);
                           return model.head(model.lstm(model.embed(tokens)).output);  // per-token logits
                         },
                         {.shards = 2}),
        "sharded_backward: loss_fn must return the shard's loss; got shape [2, 2, 11] for shard 0 "
        "(rows [0, 2)), expected one element",
        ShapeError);
    CHECK_THROWS_WITH_AS(
        sharded_backward(4, [](const Shard&) { return zeros({}, f64); }, {.shards = 2}),
        "sharded_backward: the loss of shard 0 has no recorded history; got a constant, expected a loss "
        "computed from tensors that require grad",
        StateError);
    NoGradGuard no_grad;
    CHECK_THROWS_WITH_AS(
        sharded_backward(4, good),
        "sharded_backward: gradients are disabled; got a call inside a NoGradGuard, expected grad mode on", StateError);
  }

  TEST_CASE("dropout: each shard has its own stream, reproducible for a seed and shard count") {
    LanguageModel model(0.5);
    std::vector<Tensor> params = model.parameters();
    const Batch batch = make_batch(3, 6, 9);
    auto loss_fn = [&](const Shard& s) { return model.loss(rows(batch.tokens, s), rows(batch.targets, s)); };
    auto run = [&](const ShardOptions& opt) {
      zero_grads(params);
      sharded_backward(6, loss_fn, opt);
      return grads_of(params);
    };
    auto same = [](const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
      for (std::size_t i = 0; i < a.size(); ++i)
        if (!bit_equal(a[i], b[i])) return false;
      return true;
    };
    const Generator::State caller_state = default_generator().state();
    const auto a = run({.shards = 3, .seed = 42});
    CHECK(default_generator().state().s == caller_state.s);  // an explicit seed leaves the caller's stream alone
    CHECK(same(run({.shards = 3, .seed = 42}), a));
    CHECK_FALSE(same(run({.shards = 3, .seed = 43}), a));
    // Without a seed, each step draws one from the caller's generator: different steps, same run after manual_seed.
    manual_seed(7);
    const auto b1 = run({.shards = 3});
    const auto b2 = run({.shards = 3});
    CHECK_FALSE(same(b1, b2));
    manual_seed(7);
    CHECK(same(run({.shards = 3}), b1));
    CHECK(same(run({.shards = 3}), b2));
  }

  TEST_CASE("threading inside shards: BLAS on one thread, elementwise loops serial; restored afterwards") {
    LanguageModel model;
    const Batch batch = make_batch(2, 4, 3);
    const int blas_before = detail::blas_num_threads();
    std::atomic<int> blas_inside{0}, serial_inside{0};
    sharded_backward(4,
                     [&](const Shard& s) {
                       blas_inside.fetch_add(detail::blas_num_threads() == 1 ? 1 : 100);
                       serial_inside.fetch_add(detail::in_serial_region() ? 1 : 100);
                       return model.loss(rows(batch.tokens, s), rows(batch.targets, s));
                     },
                     {.shards = 2});
    CHECK(blas_inside.load() == 2);
    CHECK(serial_inside.load() == 2);
    CHECK(detail::blas_num_threads() == blas_before);
    CHECK_FALSE(detail::in_serial_region());
    // One shard has the machine to itself: no limits.
    sharded_backward(4,
                     [&](const Shard& s) {
                       CHECK_FALSE(detail::in_serial_region());
                       return model.loss(rows(batch.tokens, s), rows(batch.targets, s));
                     },
                     {.shards = 1});
  }

  TEST_CASE("storage freed on another thread goes back to the thread that allocated it") {
    Tensor handed_over;
    std::atomic<int> phase{0};
    std::size_t misses_before = 0, misses_after = 0;
    std::thread owner([&] {
      handed_over = Tensor::empty({12345}, f64);
      misses_before = allocator_stats().cache_misses;
      phase = 1;
      while (phase.load() != 2) std::this_thread::yield();
      Tensor again = Tensor::empty({12345}, f64);  // reuses the block the main thread freed
      misses_after = allocator_stats().cache_misses;
    });
    while (phase.load() != 1) std::this_thread::yield();
    handed_over = Tensor();  // freed here: returns to the owner's cache, not this thread's
    phase = 2;
    owner.join();
    CHECK(misses_after == misses_before);
  }

  TEST_CASE("sharded training reaches a steady state: no memory drifts between threads' caches") {
    // The gradient of W (128 KiB) is allocated in each shard, on whichever thread runs it, and freed here by
    // zero_grad(). Blocks that stayed with the freeing thread would make the allocating threads take new
    // memory from the system on every step.
    Generator gen(8);
    Tensor W = randn({128, 128}, f64, gen).requires_grad_();
    const Tensor x = randn({8, 128}, f64, gen);
    const std::size_t grad_bytes = 128 * 128 * 8;
    auto step = [&] {
      W.zero_grad();
      sharded_backward(8,
                       [&](const Shard& s) { return mean(unroll::tanh(matmul(narrow(x, 0, s.begin, s.size()), W))); },
                       {.shards = 4});
    };
    for (int i = 0; i < 5; ++i) step();
    const std::size_t settled = allocator_stats().system_bytes;
    for (int i = 0; i < 30; ++i) step();
    // At most every thread holding every shard's gradient at once: well under 16 gradients' worth of growth.
    CHECK(allocator_stats().system_bytes <= settled + 16 * grad_bytes);
  }
}
