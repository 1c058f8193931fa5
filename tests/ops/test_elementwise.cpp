// The in-place updates add_, mul_, clamp_ and copy_ (ops/elementwise.cpp): values, same storage, and the StateError for
// a tensor that requires grad while grad mode is on; logaddexp, logsigmoid and silu far out (|x| = 1000) and at
// infinities, where a naive formula overflows. The recorded elementwise ops are checked against PyTorch in
// tests/ops/test_reference.cpp and for their error texts in tests/ops/test_errors.cpp.
#include <doctest/doctest.h>

#include <cmath>

#include <unroll/unroll.hpp>

using namespace unroll;

TEST_SUITE("ops/elementwise") {
  TEST_CASE("add_ and mul_ update in place, and refuse a tensor that requires grad while grad mode is on") {
    Tensor x = tensor({1, 2, 3}, {3}, Dtype::float64);
    const Tensor before = x;  // the same elements: an update in place shows through it
    add_(x, tensor({1, 1, 2}, {3}, Dtype::float64), -0.5);
    mul_(x, 2.0);
    CHECK(x.to_vector() == std::vector<double>{1, 3, 4});
    CHECK(x.same_data(before));
    CHECK(before.to_vector() == std::vector<double>{1, 3, 4});
    CHECK_THROWS_WITH_AS(add_(x, zeros({2}, Dtype::float64)),
                         "add_: shapes differ; got x=[3] and y=[2], expected equal shapes", ShapeError);

    // The optimizer's case: a parameter is updated inside a NoGradGuard, as with torch.no_grad().
    Tensor p = ones({2}).requires_grad_();
    CHECK_THROWS_WITH_AS(add_(p, ones({2})),
                         "add_: in-place update of a tensor that requires grad; got one while grad mode is on, "
                         "expected the update inside a NoGradGuard",
                         StateError);
    CHECK_THROWS_AS(mul_(p, 2.0), StateError);
    NoGradGuard no_grad;
    add_(p, ones({2}), 0.5);
    mul_(p, 2.0);
    CHECK(p.to_vector() == std::vector<double>{3, 3});
  }

  // Parameter constraints after an optimizer step (IndRNN bounds |u|): clamp_ and copy_ write in place, under
  // NoGradGuard for a parameter, as add_ does.
  TEST_CASE("clamp_ and copy_ write in place; a parameter needs NoGradGuard; error texts") {
    Tensor u = tensor({-3, -0.5, 0.25, 2}, {4}).requires_grad_();
    const Tensor before = u;
    CHECK_THROWS_WITH_AS(clamp_(u, -1.0, 1.0),
                         "clamp_: in-place update of a tensor that requires grad; got one while grad mode is on, "
                         "expected the update inside a NoGradGuard",
                         StateError);
    CHECK_THROWS_AS(copy_(u, zeros({4})), StateError);
    NoGradGuard no_grad;
    clamp_(u, -1.0, 1.0);
    CHECK(u.to_vector() == std::vector<double>{-1, -0.5, 0.25, 1});
    CHECK(u.same_data(before));
    clamp_(u, std::nullopt, 0.0);
    CHECK(u.to_vector() == std::vector<double>{-1, -0.5, 0, 0});
    clamp_(u, 0.5, std::nullopt);
    CHECK(u.to_vector() == std::vector<double>{0.5, 0.5, 0.5, 0.5});
    CHECK_THROWS_WITH_AS(clamp_(u, 1.0, -1.0), "clamp_: empty range; got min=1 and max=-1, expected min <= max",
                         ValueError);

    copy_(u, tensor({1, 2, 3, 4}, {4}, Dtype::float64));  // float64 -> float32
    CHECK(u.to_vector() == std::vector<double>{1, 2, 3, 4});
    CHECK(u.same_data(before));
    copy_(u, index_tensor({4, 3, 2, 1}));  // int64 -> float32
    CHECK(u.to_vector() == std::vector<double>{4, 3, 2, 1});
    copy_(u, u);  // itself: nothing to do
    CHECK(u.to_vector() == std::vector<double>{4, 3, 2, 1});
    Tensor rows = tensor({1, 2, 3, 4, 5, 6}, {3, 2});
    Tensor last_two = narrow(rows, 0, 1, 2);
    copy_(last_two, narrow(rows, 0, 0, 2));  // overlapping views of one storage: a forward memcpy smears row 0
    CHECK(rows.to_vector() == std::vector<double>{1, 2, 1, 2, 3, 4});
    CHECK_THROWS_WITH_AS(copy_(u, zeros({2, 2})),
                         "copy_: shapes differ; got x=[4] and src=[2, 2], expected equal shapes", ShapeError);
    CHECK_THROWS_WITH_AS(copy_(u, Tensor()), "copy_: shapes differ; got x=[4] and src=undefined, expected equal shapes",
                         ShapeError);
  }

  TEST_CASE("logaddexp, logsigmoid and silu stay finite far out, in float64 and float32") {
    for (Dtype dt : {Dtype::float64, Dtype::float32}) {
      CAPTURE(dt);
      Tensor a = tensor({1000, -1000, 1000, -1000, 0}, {5}, dt).requires_grad_();
      Tensor b = tensor({1000, -1000, -1000, 999, 0}, {5}, dt).requires_grad_();
      Tensor y = logaddexp(a, b);
      sum(y).backward();
      const auto v = y.to_vector(), ga = a.grad().to_vector(), gb = b.grad().to_vector();
      const double ln2 = std::log(2.0);
      CHECK(v[0] == doctest::Approx(1000 + ln2));
      CHECK(v[1] == doctest::Approx(-1000 + ln2));
      CHECK(v[2] == 1000);
      CHECK(v[3] == 999);
      CHECK(v[4] == doctest::Approx(ln2));
      CHECK(ga == std::vector<double>{0.5, 0.5, 1, 0, 0.5});
      CHECK(gb == std::vector<double>{0.5, 0.5, 0, 1, 0.5});

      Tensor x = tensor({-1000, 1000, 0}, {3}, dt).requires_grad_();
      Tensor ls = logsigmoid(x);
      sum(ls).backward();
      const auto lv = ls.to_vector();
      CHECK(lv[0] == -1000);
      CHECK(lv[1] == 0);
      CHECK(lv[2] == doctest::Approx(-ln2));
      CHECK(x.grad().to_vector() == std::vector<double>{1, 0, 0.5});
      Tensor xs = tensor({-1000, 1000}, {2}, dt).requires_grad_();
      Tensor s = silu(xs);
      sum(s).backward();
      CHECK(s.to_vector() == std::vector<double>{0, 1000});
      CHECK(xs.grad().to_vector() == std::vector<double>{0, 1});
    }
    // Equal infinities give themselves (inf - inf would be nan); their gradient is nan, as PyTorch's.
    const double inf = INFINITY;
    Tensor a = tensor({inf, -inf, inf}, {3}).requires_grad_();
    Tensor y = logaddexp(a, tensor({inf, -inf, 1}, {3}));
    CHECK(y.to_vector() == std::vector<double>{inf, -inf, inf});
    sum(y).backward();
    const auto g = a.grad().to_vector();
    CHECK(std::isnan(g[0]));
    CHECK(std::isnan(g[1]));
    CHECK(g[2] == 1);
  }
}
