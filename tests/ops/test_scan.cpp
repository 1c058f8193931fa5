// linear_scan and log_linear_scan (ops/scan.cpp): against the same recurrence composed from primitive ops in a
// loop (float64, outputs and every gradient), for every broadcast form of a, with h0, resets, lengths and in
// reverse, in both the sequential and the chunked mode; float64 gradchecks; the log-space form against the
// log of the linear one and far outside float range; error texts. PyTorch cases: tests/fixtures/ops.json.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <limits>

#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;

namespace {
constexpr Dtype f64 = Dtype::float64;

// [T, B] 0/1 float64 mask: 1 where t < lengths[b].
Tensor length_mask(const std::vector<std::int64_t>& lengths, std::int64_t T) {
  const std::int64_t B = static_cast<std::int64_t>(lengths.size());
  std::vector<double> m(static_cast<std::size_t>(T * B));
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < lengths[static_cast<std::size_t>(b)]; ++t) m[static_cast<std::size_t>(t * B + b)] = 1;
  return tensor(m, {T, B}, f64);
}

// The reference: one step of ops per time step.
Tensor composed_scan(const Tensor& a, const Tensor& b, const Tensor& h0, const ScanOptions& o) {
  const std::int64_t T = b.size(0), B = b.size(1), H = b.size(2);
  Tensor h = h0.defined() ? h0 : zeros({B, H}, b.dtype());
  const Tensor mask = o.lengths.empty() ? Tensor() : length_mask(o.lengths, T);
  std::vector<Tensor> outs(static_cast<std::size_t>(T));
  for (std::int64_t i = 0; i < T; ++i) {
    const std::int64_t t = o.reverse ? T - 1 - i : i;
    const Tensor at = a.dim() == 1 ? a : a[a.size(0) == 1 ? 0 : t];
    Tensor hn = at * h + b[t];
    if (o.resets.defined()) hn = where(reshape(o.resets[t], {B, 1}), b[t], hn);
    if (mask.defined()) hn = where(reshape(mask[t], {B, 1}), hn, h);  // past the end: hold
    outs[static_cast<std::size_t>(t)] = mask.defined() ? hn * reshape(mask[t], {B, 1}) : hn;
    h = hn;
  }
  return stack(outs, 0);
}

// Gradients of sum(f(inputs) ⊙ w) for each defined input.
std::vector<Tensor> grads_of(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& in,
                             const Tensor& w) {
  std::vector<Tensor> leaves;
  for (const Tensor& t : in) leaves.push_back(t.defined() ? copy_of(t).requires_grad_() : Tensor());
  sum(f(leaves) * w).backward();
  std::vector<Tensor> g;
  for (const Tensor& t : leaves) g.push_back(t.defined() ? t.grad() : Tensor());
  return g;
}

void check_close(const Tensor& a, const Tensor& b, double tol = 1e-12) {
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  CHECK(test_support::tolerance_ratio(a, b, tol, tol) <= 1.0);
}

// Options with one field set (a designated initializer that skips leading fields trips -Wmissing-field-initializers).
ScanOptions with_mode(ScanMode m) {
  ScanOptions o;
  o.mode = m;
  return o;
}
ScanOptions with_resets(const Tensor& r) {
  ScanOptions o;
  o.resets = r;
  return o;
}
ScanOptions with_lengths(std::vector<std::int64_t> l) {
  ScanOptions o;
  o.lengths = std::move(l);
  return o;
}

struct Case {
  const char* name;
  Shape a_shape;
  bool h0, reverse, resets, lengths;
};
}  // namespace

TEST_SUITE("ops/scan") {
  TEST_CASE("linear_scan equals the composed recurrence in values and gradients (every a form, options, mode)") {
    Generator gen(31);
    const std::int64_t T = 37, B = 3, H = 5;  // 37 steps: uneven chunks
    const std::vector<Case> cases = {
        {"full", {T, B, H}, false, false, false, false},
        {"full h0", {T, B, H}, true, false, false, false},
        {"per-step", {T, 1, H}, true, false, false, false},
        {"const", {1, 1, H}, true, false, false, false},
        {"[H]", {H}, true, false, false, false},
        {"reverse", {T, B, H}, true, true, false, false},
        {"resets", {T, B, H}, true, false, true, false},
        {"lengths", {T, B, H}, true, false, false, true},
        {"all", {T, 1, H}, true, true, true, true},
        {"lengths reverse", {T, B, H}, true, true, false, true},
    };
    const Tensor w = randn({T, B, H}, f64, gen);
    std::vector<double> r(static_cast<std::size_t>(T * B));
    for (std::size_t i = 0; i < r.size(); ++i) r[i] = (i % 7 == 3 || i == 1) ? 1.0 : 0.0;  // a reset at t = 0 too
    const Tensor resets = tensor(r, {T, B}, f64);
    for (const Case& c : cases)
      for (ScanMode mode : {ScanMode::sequential, ScanMode::chunked}) {
        CAPTURE(c.name);
        CAPTURE(static_cast<int>(mode));
        ScanOptions o{.reverse = c.reverse,
                      .resets = c.resets ? resets : Tensor(),
                      .lengths = c.lengths ? std::vector<std::int64_t>{T, 9, 1} : std::vector<std::int64_t>{},
                      .mode = mode};
        const std::vector<Tensor> in = {uniform(c.a_shape, -1.1, 1.1, f64, gen), randn({T, B, H}, f64, gen),
                                        c.h0 ? randn({B, H}, f64, gen) : Tensor()};
        auto fused = [&](const std::vector<Tensor>& p) { return linear_scan(p[0], p[1], p[2], o); };
        auto composed = [&](const std::vector<Tensor>& p) { return composed_scan(p[0], p[1], p[2], o); };
        check_close(fused(in), composed(in));
        const auto gf = grads_of(fused, in, w), gc = grads_of(composed, in, w);
        for (std::size_t i = 0; i < in.size(); ++i)
          if (in[i].defined()) check_close(gf[i], gc[i]);
      }
  }

  TEST_CASE("linear_scan: float64 gradcheck through the one node (h0, resets, lengths, reverse, chunked)") {
    Generator gen(32);
    const std::int64_t T = 9, B = 2, H = 3;
    const Tensor resets = tensor({0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {T, B}, f64);
    for (bool reverse : {false, true})
      for (ScanMode mode : {ScanMode::sequential, ScanMode::chunked}) {
        ScanOptions o{.reverse = reverse, .resets = resets, .lengths = {9, 6}, .mode = mode};
        std::vector<Tensor> in = {uniform({T, 1, H}, -1, 1, f64, gen).requires_grad_(),
                                  randn({T, B, H}, f64, gen).requires_grad_(),
                                  randn({B, H}, f64, gen).requires_grad_()};
        auto r = autograd::gradcheck(
            "linear_scan", [&](const std::vector<Tensor>& p) { return linear_scan(p[0], p[1], p[2], o); }, in);
        CHECK_MESSAGE(r.ok, r.message);
      }
  }

  TEST_CASE("linear_scan: chunked equals sequential on long sequences, also float32") {
    Generator gen(33);
    for (Dtype dt : {Dtype::float64, Dtype::float32}) {
      const Tensor a = uniform({3000, 2, 64}, 0.9, 1.0, dt, gen), b = randn({3000, 2, 64}, dt, gen);
      const Tensor h0 = randn({2, 64}, dt, gen);
      const Tensor s = linear_scan(a, b, h0, with_mode(ScanMode::sequential));
      const Tensor c = linear_scan(a, b, h0, with_mode(ScanMode::chunked));
      const double tol = dt == Dtype::float64 ? 1e-10 : 2e-4;
      CHECK(test_support::tolerance_ratio(convert(c, f64), convert(s, f64), tol, tol) <= 1.0);
    }
  }

  TEST_CASE("log_linear_scan: the log of linear_scan for positive inputs; gradcheck; stable far outside float range") {
    Generator gen(34);
    const std::int64_t T = 11, B = 2, H = 3;
    const Tensor a = uniform({T, B, H}, 0.2, 1.0, f64, gen), b = uniform({T, B, H}, 0.1, 2.0, f64, gen);
    const Tensor h0 = uniform({B, H}, 0.5, 1.5, f64, gen);
    const Tensor resets = tensor({0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {T, B}, f64);
    for (bool reverse : {false, true}) {
      ScanOptions o{.reverse = reverse, .resets = resets, .lengths = {11, 7}, .mode = ScanMode::automatic};
      const Tensor lin = linear_scan(a, b, h0, o);
      const Tensor logs = log_linear_scan(log(a), log(b), log(h0), o);
      // Past a row's end both are 0 (padding): compare the log of the rest.
      const Tensor valid = reshape(length_mask({11, 7}, T), {T, B, 1});
      check_close(where(valid, logs, zeros({1}, f64)),
                  where(valid, log(where(valid, lin, ones({1}, f64))), zeros({1}, f64)));
      std::vector<Tensor> in = {log(a).requires_grad_(), log(b).requires_grad_(), log(h0).requires_grad_()};
      auto r = autograd::gradcheck(
          "log_linear_scan", [&](const std::vector<Tensor>& p) { return log_linear_scan(p[0], p[1], p[2], o); }, in);
      CHECK_MESSAGE(r.ok, r.message);
    }
    // No h0 (h0 = 0, log -inf): the first step is log b.
    const Tensor first = log_linear_scan(log(a), log(b))[0];
    check_close(first, log(b[0]));
    // Magnitudes no float holds: a = e^-2000 and b = e^3000 in log space, finite results and gradients.
    const Tensor la = full({T, B, H}, -2000.0, Dtype::float32).requires_grad_();
    const Tensor lb = full({T, B, H}, 3000.0, Dtype::float32).requires_grad_();
    const Tensor y = log_linear_scan(la, lb);
    for (double v : y.to_vector()) CHECK(v == doctest::Approx(3000.0));
    sum(y).backward();
    for (double v : la.grad().to_vector()) CHECK(std::isfinite(v));
    for (double v : lb.grad().to_vector()) CHECK(std::isfinite(v));
  }

  TEST_CASE("linear_scan and log_linear_scan: error texts") {
    const Tensor b = zeros({4, 2, 3}), a = zeros({4, 2, 3});
    CHECK_THROWS_WITH_AS(linear_scan(a, zeros({4, 3})), "linear_scan: b must be [T, B, H]; got b=[4, 3]", ShapeError);
    CHECK_THROWS_WITH_AS(
        linear_scan(zeros({4, 3}), b),
        "linear_scan: a does not broadcast over b; got a=[4, 3] and b=[4, 2, 3], expected a of [T, B, H], "
        "[T, 1, H], [1, 1, H] or [H] with [T, B, H] = [4, 2, 3]",
        ShapeError);
    CHECK_THROWS_AS(linear_scan(zeros({2}), b), ShapeError);
    CHECK_THROWS_AS(linear_scan(zeros({4, 2, 3}, f64), b), DtypeError);
    CHECK_THROWS_WITH_AS(
        linear_scan(a, b, zeros({3})),
        "linear_scan: the initial state must be [B, H]; got h0=[3] and b=[4, 2, 3], expected h0=[2, 3]", ShapeError);
    CHECK_THROWS_AS(linear_scan(a, b, zeros({2, 3}, f64)), DtypeError);
    CHECK_THROWS_WITH_AS(
        linear_scan(a, b, {}, with_resets(zeros({2, 4}))),
        "linear_scan: resets must be [T, B]; got resets=[2, 4] and b=[4, 2, 3], expected resets=[4, 2]", ShapeError);
    CHECK_THROWS_WITH_AS(linear_scan(a, b, {}, with_lengths({4})),
                         "linear_scan: one length per batch row; got 1 lengths and b=[4, 2, 3], expected 2",
                         ShapeError);
    CHECK_THROWS_WITH_AS(linear_scan(a, b, {}, with_lengths({4, 5})),
                         "linear_scan: sequence length out of range; got lengths[1]=5, expected 1 <= length <= 4",
                         ValueError);
    CHECK_THROWS_AS(linear_scan(a, b, {}, with_lengths({0, 4})), ValueError);
    CHECK_THROWS_WITH_AS(log_linear_scan(zeros({5, 2, 3}), b),
                         "log_linear_scan: a does not broadcast over b; got a=[5, 2, 3] and b=[4, 2, 3], expected a of "
                         "[T, B, H], [T, 1, H], [1, 1, H] or [H] with [T, B, H] = [4, 2, 3]",
                         ShapeError);
    CHECK_THROWS_AS(linear_scan(a, index_tensor({1, 2})), DtypeError);
    CHECK_THROWS_AS(linear_scan(Tensor(), b), StateError);
  }
}
