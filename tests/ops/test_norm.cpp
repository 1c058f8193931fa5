// layer_norm (ops/norm.cpp): values, float64 gradchecks over one and two trailing dims, with and without
// the affine step, and error texts. Against PyTorch: the layer_norm cases in tests/ops/test_reference.cpp.
#include <doctest/doctest.h>

#include <cmath>

#include <unroll/unroll.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;
using test_support::random_leaf;

TEST_SUITE("ops/norm") {
  TEST_CASE("layer_norm: values, float64 gradcheck over one and two trailing dims") {
    Tensor x = tensor({1, 2, 3, 4}, {1, 4}, Dtype::float64);
    auto y = layer_norm(x, 1, {}, {}, 0.0).to_vector();
    const double s = std::sqrt(1.25);
    CHECK(y[0] == doctest::Approx(-1.5 / s).epsilon(1e-14));
    CHECK(y[3] == doctest::Approx(1.5 / s).epsilon(1e-14));
    Generator gen(2);
    for (int dims : {1, 2}) {
      Shape ps = dims == 1 ? Shape({5}) : Shape({3, 5});
      std::vector<Tensor> in = {random_leaf({2, 3, 5}, gen, 1.0), random_leaf(ps, gen), random_leaf(ps, gen)};
      auto r = autograd::gradcheck(
          "layer_norm", [&](const std::vector<Tensor>& p) { return layer_norm(p[0], dims, p[1], p[2]); }, in);
      CHECK_MESSAGE(r.ok, r.message);
      auto r2 = autograd::gradcheck("layer_norm/no_affine",
                                    [&](const std::vector<Tensor>& p) { return layer_norm(p[0], dims); }, {in[0]});
      CHECK_MESSAGE(r2.ok, r2.message);
    }
    CHECK_THROWS_WITH_AS(layer_norm(zeros({2, 3}), 1, zeros({4})),
                         "layer_norm: weight does not match the normalised shape; got [4], expected [3]", ShapeError);
    CHECK_THROWS_AS(layer_norm(zeros({2, 3}), 3), ShapeError);
  }
}
