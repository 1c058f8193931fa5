// linear (ops/linear.cpp): values, float64 gradchecks (2-D and 3-D input, with and without bias), zero input
// features, and error texts. Against PyTorch: the linear cases in tests/ops/test_reference.cpp.
#include <doctest/doctest.h>

#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;
using test_support::random_leaf;

TEST_SUITE("ops/linear") {
  TEST_CASE("linear: values, float64 gradcheck (2-D and 3-D input, with and without bias)") {
    Generator gen(1);
    Tensor x = tensor({1, 2, 3, 4, 5, 6}, {2, 3}, Dtype::float64),
           w = tensor({1, 0, -1, 2, 1, 0}, {2, 3}, Dtype::float64);
    Tensor b = tensor({0.5, -0.5}, {2}, Dtype::float64);
    CHECK(linear(x, w, b).to_vector() == std::vector<double>{-1.5, 3.5, -1.5, 12.5});
    CHECK(linear(x, w).to_vector() == std::vector<double>{-2, 4, -2, 13});
    for (bool bias : {true, false})
      for (Shape xs : {Shape({4, 3}), Shape({2, 3, 3}), Shape({1, 3})}) {
        std::vector<Tensor> in = {random_leaf(xs, gen), random_leaf({5, 3}, gen)};
        if (bias) in.push_back(random_leaf({5}, gen));
        auto r = autograd::gradcheck(
            "linear", [&](const std::vector<Tensor>& p) { return linear(p[0], p[1], bias ? p[2] : Tensor()); }, in);
        CHECK_MESSAGE(r.ok, r.message);
      }
  }

  TEST_CASE("linear: error texts") {
    Tensor x = zeros({2, 3}), w = zeros({4, 5});
    CHECK_THROWS_WITH_AS(
        linear(x, w),
        "linear: input features differ from the weight's; got x=[2, 3] and weight=[4, 5], expected x=[..., 5]",
        ShapeError);
    CHECK_THROWS_WITH_AS(linear(x, zeros({4, 3}), zeros({3})),
                         "linear: bias does not match the weight; got bias=[3] and weight=[4, 3], expected bias=[4]",
                         ShapeError);
    CHECK_THROWS_AS(linear(x, zeros({4, 3}, Dtype::float64)), DtypeError);
  }

  TEST_CASE("linear with zero input features gives zeros (or the bias)") {
    CHECK(linear(zeros({3, 0}), zeros({2, 0})).to_vector() == std::vector<double>(6, 0.0));
    CHECK(linear(zeros({1, 0}), zeros({2, 0}), tensor({1, 2}, {2})).to_vector() == std::vector<double>{1, 2});
  }
}
