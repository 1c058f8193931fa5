// The tape engine: accumulation, misuse errors, long unrolls, no-grad, detach / truncated BPTT, nested
// tapes, shared inputs and memory reuse.
#include <doctest/doctest.h>

#include <cmath>
#include <thread>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;
using autograd::Tape;

namespace {
constexpr Dtype f64 = Dtype::float64;

std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol = 1e-12) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("element " << i << ": got " << got[i] << ", want " << want[i]);
    CHECK(std::abs(got[i] - want[i]) <= tol * std::max(1.0, std::abs(want[i])));
  }
}
}  // namespace

TEST_SUITE("autograd/tape") {
  TEST_CASE("gradients accumulate across backward passes until zero_grad") {
    Tensor w = tensor({2.0, -1.0}, {2}, f64).requires_grad_();
    sum(w * w * 3.0).backward();  // d/dw = 6w
    check_close(vals(w.grad()), {12.0, -6.0});
    sum(w * w * 3.0).backward();
    check_close(vals(w.grad()), {24.0, -12.0});
    w.zero_grad();
    CHECK_FALSE(w.grad().defined());
    sum(w * 5.0).backward();
    check_close(vals(w.grad()), {5.0, 5.0});
  }

  TEST_CASE("backward twice on the same loss is a StateError") {
    Tensor w = tensor({1.5}, {1}, f64).requires_grad_();
    Tensor loss = sum(unroll::tanh(w) * 2.0);
    loss.backward();
    CHECK_THROWS_WITH_AS(
        loss.backward(),
        "backward: the graph of this tensor has been freed; got a tensor recorded before the last "
        "backward() or clear() (or on another tape), expected one recorded since (call detach() on state "
        "carried across steps)",
        StateError);
  }

  TEST_CASE("backward frees the whole tape: a second loss recorded before it must be summed in first") {
    Tensor w = tensor({1.5}, {1}, f64).requires_grad_();
    Tensor loss_a = sum(w * 2.0);
    Tensor loss_b = sum(w * 3.0);
    loss_a.backward();
    CHECK_THROWS_WITH_AS(
        loss_b.backward(),
        "backward: the graph of this tensor has been freed; got a tensor recorded before the last "
        "backward() or clear() (or on another tape), expected one recorded since (call detach() on state "
        "carried across steps)",
        StateError);
    w.zero_grad();
    (sum(w * 2.0) + sum(w * 3.0)).backward();
    check_close(vals(w.grad()), {5.0});
  }

  TEST_CASE("backward from a non-scalar needs a seed") {
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    Tensor y = x * x;
    CHECK_THROWS_WITH_AS(y.backward(),
                         "backward: gradient can be implicitly created only for a scalar; got shape [2], expected one "
                         "element or a seed gradient of that shape",
                         StateError);
    Tape::current().clear();
  }

  TEST_CASE("backward from a tensor without history is a StateError") {
    Tensor x = tensor({1, 2}, {2}, f64);
    CHECK_THROWS_WITH_AS(sum(x).backward(),
                         "backward: tensor does not require grad; got a tensor of shape [] with no recorded history, "
                         "expected the result of ops on tensors with requires_grad",
                         StateError);
  }

  TEST_CASE("a seed of the wrong shape is a ShapeError and leaves the graph usable") {
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    Tensor y = x * x;
    CHECK_THROWS_WITH_AS(y.backward(ones({3}, f64)),
                         "backward: seed gradient shape does not match the tensor; got [3], expected [2]", ShapeError);
    y.backward(tensor({1, 1}, {2}, f64));
    check_close(vals(x.grad()), {2.0, 4.0});
  }

  TEST_CASE("a seed of the wrong dtype is a DtypeError") {
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    Tensor y = x * x;
    CHECK_THROWS_WITH_AS(y.backward(ones({2}, Dtype::float32)),
                         "backward: seed gradient dtype does not match the tensor; got float32, expected float64",
                         DtypeError);
    Tape::current().clear();
  }

  TEST_CASE("backward with a non-scalar seed weights the gradient") {
    Tensor x = tensor({1, 2, 3}, {3}, f64).requires_grad_();
    Tensor y = x * x;  // dy/dx = 2x
    y.backward(tensor({1, -2, 0.5}, {3}, f64));
    check_close(vals(x.grad()), {2.0, -8.0, 3.0});
  }

  TEST_CASE("backward from a leaf adds the seed to its gradient") {
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    x.backward(tensor({3, 4}, {2}, f64));
    check_close(vals(x.grad()), {3.0, 4.0});
  }

  TEST_CASE("a 10,000-step unroll backpropagates and matches a hand-written BPTT loop") {
    constexpr int T = 10000, H = 4;
    std::vector<double> w(H * H), xs(static_cast<std::size_t>(T) * H);
    for (int i = 0; i < H * H; ++i) w[static_cast<std::size_t>(i)] = 0.45 * std::sin(1.0 + i);
    for (int t = 0; t < T; ++t)
      for (int j = 0; j < H; ++j) xs[static_cast<std::size_t>(t * H + j)] = 0.5 * std::sin(0.01 * t + j);
    const std::vector<double> c = {1.0, -2.0, 0.5, 3.0};

    Tensor W = tensor(w, {H, H}, f64).requires_grad_();
    Tensor X = tensor(xs, {T, 1, H}, f64).requires_grad_();
    Tensor h = zeros({1, H}, f64);
    for (int t = 0; t < T; ++t) h = unroll::tanh(matmul(h, W) + X[t]);
    Tensor loss = sum(h * tensor(c, {1, H}, f64));
    loss.backward();
    CHECK(Tape::current().size() == 0);

    // Reference: forward storing every h, then the BPTT recursion in plain doubles.
    std::vector<std::vector<double>> hs(T + 1, std::vector<double>(H, 0.0));
    for (int t = 1; t <= T; ++t)
      for (int j = 0; j < H; ++j) {
        double a = xs[static_cast<std::size_t>((t - 1) * H + j)];
        for (int i = 0; i < H; ++i) a += hs[t - 1][i] * w[static_cast<std::size_t>(i * H + j)];
        hs[t][j] = std::tanh(a);
      }
    check_close(vals(h), hs[T], 1e-12);
    std::vector<double> dh = c, dW(H * H, 0.0), dX(static_cast<std::size_t>(T) * H, 0.0);
    for (int t = T; t >= 1; --t) {
      std::vector<double> da(H);
      for (int j = 0; j < H; ++j) da[j] = dh[j] * (1 - hs[t][j] * hs[t][j]);
      for (int i = 0; i < H; ++i)
        for (int j = 0; j < H; ++j) dW[static_cast<std::size_t>(i * H + j)] += hs[t - 1][i] * da[j];
      for (int j = 0; j < H; ++j) dX[static_cast<std::size_t>((t - 1) * H + j)] = da[j];
      for (int i = 0; i < H; ++i) {
        double s = 0;
        for (int j = 0; j < H; ++j) s += w[static_cast<std::size_t>(i * H + j)] * da[j];
        dh[i] = s;
      }
    }
    check_close(vals(W.grad()), dW, 1e-10);
    check_close(vals(X.grad()), dX, 1e-10);
    // The comparison is not vacuous: the last step's input gradient is O(1).
    CHECK(std::abs(dX[static_cast<std::size_t>((T - 1) * H + 3)]) > 0.1);
  }

  TEST_CASE("NoGradGuard records nothing and restores grad mode") {
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    const std::size_t before = Tape::current().size();
    REQUIRE(autograd::grad_enabled());
    {
      autograd::NoGradGuard guard;
      CHECK_FALSE(autograd::grad_enabled());
      Tensor y = unroll::tanh(x * x) + 1.0;
      CHECK_FALSE(y.requires_grad());
      CHECK(Tape::current().size() == before);
      {
        autograd::NoGradGuard inner;
        CHECK_FALSE(autograd::grad_enabled());
      }
      CHECK_FALSE(autograd::grad_enabled());  // the inner guard restores the outer state, not "on"
    }
    CHECK(autograd::grad_enabled());
    Tensor z = x * x;
    CHECK(z.requires_grad());
    CHECK(Tape::current().size() == before + 1);
    Tape::current().clear();
  }

  TEST_CASE("detach shares storage and stops the gradient") {
    Tensor x = tensor({1, 2, 3}, {3}, f64).requires_grad_();
    Tensor y = x * 2.0;
    Tensor d = y.detach();
    CHECK(d.same_data(y));
    CHECK_FALSE(d.requires_grad());
    CHECK(d.is_leaf());
    CHECK(vals(d) == std::vector<double>{2, 4, 6});
    // loss = sum(x * detach(x)): the gradient is x, not 2x.
    sum(x * x.detach()).backward();
    check_close(vals(x.grad()), {1.0, 2.0, 3.0});
  }

  TEST_CASE("truncated BPTT: h = h.detach() carries state across backward calls") {
    Tensor W = tensor({0.5, -0.3, 0.2, 0.8}, {2, 2}, f64).requires_grad_();
    Tensor x = tensor({0.1, -0.4}, {1, 2}, f64);
    Tensor h = zeros({1, 2}, f64);
    h = unroll::tanh(matmul(h, W) + x);
    sum(h).backward();
    const std::vector<double> h1 = vals(h);
    W.zero_grad();
    h = h.detach();
    h = unroll::tanh(matmul(h, W) + x);
    sum(h).backward();
    // Second step alone: dW[i][j] = h1[i] (1 - h2[j]^2).
    const std::vector<double> h2 = vals(h);
    check_close(vals(W.grad()), {h1[0] * (1 - h2[0] * h2[0]), h1[0] * (1 - h2[1] * h2[1]), h1[1] * (1 - h2[0] * h2[0]),
                                 h1[1] * (1 - h2[1] * h2[1])});
  }

  TEST_CASE("without detach, backward into the freed graph is a StateError naming detach()") {
    Tensor W = tensor({0.5, -0.3, 0.2, 0.8}, {2, 2}, f64).requires_grad_();
    Tensor x = tensor({0.1, -0.4}, {1, 2}, f64);
    Tensor h = zeros({1, 2}, f64);
    h = unroll::tanh(matmul(h, W) + x);
    sum(h).backward();
    h = unroll::tanh(matmul(h, W) + x);  // h still names the freed step-1 graph
    CHECK_THROWS_WITH_AS(sum(h).backward(),
                         "backward: input 0 of 'matmul' belongs to a graph that has been freed; got a tensor recorded "
                         "before the last backward() (or on another tape), expected detach() on state carried across "
                         "steps",
                         StateError);
    CHECK(Tape::current().size() == 0);  // a failed backward frees the tape
  }

  TEST_CASE("requires_grad_ is for floating leaves only") {
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    Tensor y = x * 2.0;
    CHECK_THROWS_WITH_AS(
        y.requires_grad_(),
        "requires_grad_: only leaf tensors can be marked; got the output of an op, expected a leaf (use "
        "detach() first)",
        StateError);
    CHECK_THROWS_WITH_AS(
        arange(3, Dtype::int64).requires_grad_(),
        "requires_grad_: only floating-point tensors can require gradients; got int64, expected float32 "
        "or float64",
        DtypeError);
    CHECK_THROWS_WITH_AS(Tensor().requires_grad_(),
                         "requires_grad_: tensor is undefined; got an undefined tensor, expected a leaf", StateError);
    Tensor z = y.detach().requires_grad_();
    CHECK(z.requires_grad());
    CHECK(z.is_leaf());
    z.requires_grad_(false);
    CHECK_FALSE(z.requires_grad());
    Tape::current().clear();
  }

  TEST_CASE("a tensor used twice gets the sum of both gradients") {
    SUBCASE("x * x") {
      Tensor x = tensor({3, -1}, {2}, f64).requires_grad_();
      sum(x * x).backward();
      check_close(vals(x.grad()), {6.0, -2.0});
    }
    SUBCASE("a + a on a leaf") {
      Tensor a = tensor({3, -1}, {2}, f64).requires_grad_();
      sum(a + a).backward();
      check_close(vals(a.grad()), {2.0, 2.0});
    }
    SUBCASE("a + a on an op output (one slot receives two gradients)") {
      Tensor x = tensor({3, -1}, {2}, f64).requires_grad_();
      Tensor a = x * 3.0;
      sum((a + a) * tensor({1, 2}, {2}, f64)).backward();
      check_close(vals(x.grad()), {6.0, 12.0});
    }
    SUBCASE("matmul(W, W) accumulates both operand gradients into one buffer") {
      Tensor W = tensor({1, 2, 3, 4}, {2, 2}, f64).requires_grad_();
      sum(matmul(W, W)).backward();
      // dW[i][j] = sum_k W[j][k] + sum_k W[k][i] (row j sum + column i sum); row sums [3, 7], column sums [4, 6].
      check_close(vals(W.grad()), {3 + 4, 7 + 4, 3 + 6, 7 + 6});
    }
  }

  TEST_CASE("a diamond graph sums both paths") {
    Tensor x = tensor({0.3, -0.7}, {2}, f64).requires_grad_();
    Tensor a = x * 2.0;
    Tensor b = unroll::tanh(a);
    Tensor c = sigmoid(a);
    Tensor d = b + c;
    sum(d).backward();
    std::vector<double> want;
    for (double v : {0.3, -0.7}) {
      const double t = std::tanh(2 * v), s = 1 / (1 + std::exp(-2 * v));
      want.push_back(2 * ((1 - t * t) + s * (1 - s)));
    }
    check_close(vals(x.grad()), want);
  }

  TEST_CASE("a nested Tape scope records and backpropagates locally, then the default tape is active again") {
    Tape& outer = Tape::current();
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    Tensor outer_loss = sum(x * x);  // recorded on the default tape
    const std::size_t outer_size = outer.size();
    REQUIRE(outer_size > 0);
    {
      Tape local;
      CHECK(&Tape::current() == &local);
      Tensor y = tensor({5, 7}, {2}, f64).requires_grad_();
      Tensor loss = sum(y * 3.0);
      CHECK(local.size() == 2);
      CHECK(outer.size() == outer_size);
      loss.backward();
      CHECK(local.size() == 0);
      check_close(vals(y.grad()), {3.0, 3.0});
      CHECK_FALSE(x.grad().defined());
    }
    CHECK(&Tape::current() == &outer);
    CHECK(outer.size() == outer_size);
    outer_loss.backward();
    check_close(vals(x.grad()), {2.0, 4.0});
  }

  TEST_CASE("a tensor from another tape cannot be backpropagated through without detach") {
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    Tensor y = x * 2.0;  // on the default tape
    {
      Tape local;
      Tensor z = sum(y * 3.0);
      CHECK_THROWS_WITH_AS(z.backward(),
                           "backward: input 0 of 'mul' belongs to a graph that has been freed; got a tensor recorded "
                           "before the last backward() (or on another tape), expected detach() on state carried across "
                           "steps",
                           StateError);
    }
    Tape::current().clear();
  }

  TEST_CASE("each thread has its own default tape") {
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    Tensor y = x * x;  // recorded on this thread's tape
    const std::size_t main_size = Tape::current().size();
    std::vector<double> other_grad;
    std::size_t other_size_before = 99;
    std::thread worker([&] {
      other_size_before = Tape::current().size();
      Tensor w = tensor({3}, {1}, f64).requires_grad_();
      sum(w * w * w).backward();
      other_grad = w.grad().to_vector<double>();
    });
    worker.join();
    CHECK(other_size_before == 0);
    check_close(other_grad, {27.0});
    CHECK(Tape::current().size() == main_size);
    sum(y).backward();
    check_close(vals(x.grad()), {2.0, 4.0});
  }

  TEST_CASE("the engine checks the shape of a gradient an op hands back") {
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    Tensor y = copy_of(x);
    autograd::record("bad_shape", y, {&x}, [](autograd::GradSink& sink) { sink.add(0, zeros({3}, Dtype::float64)); });
    CHECK_THROWS_WITH_AS(sum(y).backward(),
                         "backward: gradient for input 0 of 'bad_shape' has the wrong shape; got [3], expected [2]",
                         ShapeError);
    CHECK(Tape::current().size() == 0);
  }

  TEST_CASE("backward closures run with grad mode off") {
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    Tensor y = copy_of(x);
    bool mode_inside = true;
    autograd::record("probe", y, {&x}, [&mode_inside](autograd::GradSink& sink) {
      mode_inside = autograd::grad_enabled();
      sink.add(0, sink.grad_output());
    });
    sum(y).backward();
    CHECK_FALSE(mode_inside);
    CHECK(autograd::grad_enabled());
    check_close(vals(x.grad()), {1.0, 1.0});
  }

  TEST_CASE("a multi-output node sees zeros for an output that no gradient reached") {
    Tensor x = tensor({1, 2}, {2}, f64).requires_grad_();
    Tensor p = copy_of(x), q = copy_of(x);
    std::vector<double> seen_q;
    Tensor* outs[] = {&p, &q};
    const Tensor* ins[] = {&x};
    autograd::record("two_out", std::span<Tensor* const>(outs), std::span<const Tensor* const>(ins),
                     [&seen_q](autograd::GradSink& sink) {
                       seen_q = sink.grad_output(1).to_vector<double>();
                       Tensor g = copy_of(sink.grad_output(0));
                       sink.add(0, g);
                     });
    sum(p * 4.0).backward();  // q unused
    CHECK(seen_q == std::vector<double>{0.0, 0.0});
    check_close(vals(x.grad()), {4.0, 4.0});
  }

  TEST_CASE("the tape is cleared after backward and an identical step reuses cached memory") {
    Tensor W = randn({8, 8}, f64).requires_grad_();
    Tensor x = randn({4, 8}, f64);
    auto step = [&] {
      Tensor h = zeros({4, 8}, f64);
      for (int t = 0; t < 5; ++t) h = unroll::tanh(matmul(h, W) + x);
      Tensor loss = mean(h * h);
      loss.backward();
      CHECK(Tape::current().size() == 0);
      W.zero_grad();
    };
    step();
    step();
    const AllocatorStats before = allocator_stats();
    step();
    const AllocatorStats after = allocator_stats();
    CHECK(after.cache_misses == before.cache_misses);
    CHECK(after.cache_hits > before.cache_hits);
  }

  TEST_CASE("a saved tensor that shares a leaf's .grad is not changed by accumulation into that .grad") {
    Tensor w = tensor({1, 2, 3}, {3}, f64).requires_grad_();
    sum(mul(w, w)).backward();  // w.grad = 2w
    Tensor g = w.grad();        // held by the user and saved by mul below
    sum(mul(g, w) + mul(w, 3.0)).backward();
    // d/dw [g.w + 3 sum(w)] = g + 3 = 2w + 3, added to the earlier 2w
    CHECK(w.grad().to_vector() == std::vector<double>{7, 11, 15});
    CHECK(g.to_vector() == std::vector<double>{2, 4, 6});  // the user's handle was not written through
  }

  TEST_CASE("tape scopes may end out of order") {
    Tensor w = tensor({0.5}, {1}, f64).requires_grad_();
    auto outer = std::make_unique<Tape>();
    auto inner = std::make_unique<Tape>();
    outer.reset();  // the older scope ends first
    inner.reset();
    Tensor y = unroll::tanh(w);  // records on the default tape, not on freed memory
    y.backward();
    CHECK(w.grad().item() == doctest::Approx(1 - std::tanh(0.5) * std::tanh(0.5)));
  }

  // Weight gradients over few rows (linear, matmul, the fused steps) are deferred to the end of backward and
  // summed in one GEMM per leaf (GradSink::add_rows_product). The result must be what immediate accumulation
  // gives, with the same accumulation and sharing rules.
  TEST_CASE("deferred weight gradients: one GEMM per leaf at the end, same values, same accumulation rules") {
    Generator gen(5);
    const std::int64_t T = 6, B = 2, I = 3, O = 4;
    Tensor W = randn({O, I}, f64, gen).requires_grad_();
    Tensor U = randn({I, O}, f64, gen).requires_grad_();
    const Tensor x = randn({T, B, I}, f64, gen);
    const auto loss_of = [&] {
      Tensor loss = sum(W * W);  // an elementwise use of W besides the deferred ones
      for (std::int64_t t = 0; t < T; ++t) {
        Tensor y = linear(x[t], W, {});                   // [B, O]: dW deferred
        loss = loss + sum(y * y) + sum(matmul(x[t], U));  // dU deferred (matmul's weight operand)
      }
      return loss;
    };
    // Reference by hand: d/dW [sum (x W^T)^2 + sum W^2] = 2 Y^T X + 2 W; d/dU sum(X U) = X^T 1.
    Tensor X = reshape(x, {T * B, I});
    Tensor Y = matmul(X, transpose(W.detach(), 0, 1));
    Tensor dW = 2.0 * matmul(transpose(Y, 0, 1), X) + 2.0 * W.detach();
    Tensor dU = matmul(transpose(X, 0, 1), ones({T * B, O}, f64));
    loss_of().backward();
    check_close(vals(W.grad()), vals(dW));
    check_close(vals(U.grad()), vals(dU));
    // A second backward adds; a .grad handle the user holds is never written through.
    const Tensor held = W.grad();
    loss_of().backward();
    check_close(vals(held), vals(dW));
    check_close(vals(W.grad()), vals(2.0 * dW));
    check_close(vals(U.grad()), vals(2.0 * dU));
    // With a tiny memory bound the deferred products run early, mid-backward: same values.
    W.zero_grad();
    U.zero_grad();
    const std::size_t limit = detail::kDeferredBytesLimit;
    detail::kDeferredBytesLimit = 100;
    loss_of().backward();
    detail::kDeferredBytesLimit = limit;
    check_close(vals(W.grad()), vals(dW));
    check_close(vals(U.grad()), vals(dU));
    // A long unroll: the deferred rows grow (by doubling) to a full chunk of 2048, whose product then runs
    // mid-backward before filling again. Same values as one product over all rows.
    {
      W.zero_grad();
      const std::int64_t steps = 1500;  // 3000 rows of B = 2
      const Tensor xs = randn({steps, B, I}, f64, gen);
      Tensor loss = zeros({}, f64);
      for (std::int64_t t = 0; t < steps; ++t) loss = loss + sum(linear(xs[t], W, {}));
      loss.backward();
      check_close(vals(W.grad()), vals(matmul(ones({O, steps * B}, f64), reshape(xs, {steps * B, I}))));
    }
    // Many rows: computed at once, same values.
    W.zero_grad();
    const Tensor big = randn({600, I}, f64, gen);
    sum(linear(big, W, {})).backward();
    check_close(vals(W.grad()), vals(matmul(ones({O, 600}, f64), big)));
  }

  TEST_CASE("deferred weight gradients are dropped, not applied, when backward fails") {
    Generator gen(6);
    Tensor W = randn({2, 3}, f64, gen).requires_grad_();
    Tensor a = tensor({1, 2, 3}, {1, 3}, f64).requires_grad_();
    Tensor y = copy_of(a);
    autograd::record("fails", y, {&a}, [](autograd::GradSink&) { throw ValueError("fails: on purpose"); });
    Tensor out = linear(y, W, {});  // runs first in backward, deferring dW; then 'fails' throws
    CHECK_THROWS_WITH_AS(sum(out).backward(), "fails: on purpose", ValueError);
    CHECK_FALSE(W.grad().defined());
    CHECK(Tape::current().size() == 0);
    sum(linear(tensor({1, 1, 1}, {1, 3}, f64), W, {})).backward();  // the tape works afterwards
    check_close(vals(W.grad()), {1, 1, 1, 1, 1, 1});
  }
}
