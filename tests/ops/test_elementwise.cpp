// The in-place updates add_ and mul_ (ops/elementwise.cpp): values, same storage, and the StateError for a
// tensor that requires grad while grad mode is on. The recorded elementwise ops are checked against PyTorch
// in tests/ops/test_reference.cpp and for their error texts in tests/ops/test_errors.cpp.
#include <doctest/doctest.h>

#include <unroll/unroll.hpp>

using namespace unroll;

TEST_SUITE("ops/elementwise") {
TEST_CASE("add_ and mul_ update in place, and refuse a tensor that requires grad while grad mode is on") {
  Tensor x = tensor({1, 2, 3}, {3}, Dtype::float64);
  const auto* storage = x.storage();
  add_(x, tensor({1, 1, 2}, {3}, Dtype::float64), -0.5);
  mul_(x, 2.0);
  CHECK(x.to_vector() == std::vector<double>{1, 3, 4});
  CHECK(x.storage() == storage);
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
}
