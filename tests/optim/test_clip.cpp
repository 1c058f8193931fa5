// Gradient clipping against PyTorch (tests/fixtures/optim.json) for p = 1, 2, 3.5 and inf; gradients shared
// with another handle are not written through; error texts.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include <unroll/optim/optim.hpp>

#include "../support/fixtures.hpp"

using namespace unroll;
using nlohmann::json;
using test_support::to_tensor;
using test_support::tolerance_ratio;

namespace {
constexpr Dtype f64 = Dtype::float64;

const json& fixture() {
  static const json j = test_support::load_fixture("optim.json");
  return j;
}

// Leaf parameters (zeros) whose gradients are exactly `grads`: d sum(p * g) / dp = g.
std::vector<Tensor> with_grads(const std::vector<Tensor>& grads) {
  std::vector<Tensor> params;
  Tensor loss;
  for (const Tensor& g : grads) {
    params.push_back(zeros(g.shape(), g.dtype()).requires_grad_());
    Tensor li = sum(params.back() * g);
    loss = loss.defined() ? loss + li : li;
  }
  loss.backward();
  return params;
}

std::vector<Tensor> fixture_grads(Dtype dtype) {
  std::vector<Tensor> grads;
  for (const json& g : fixture().at("clip").at("grads")) grads.push_back(to_tensor(g, dtype));
  return grads;
}
}  // namespace

TEST_SUITE("optim/clip") {
  TEST_CASE("clip_grad_norm_ matches PyTorch for p = 1, 2, 3.5 and inf") {
    for (const Dtype dtype : {f64, Dtype::float32}) {
      const double tol = dtype == f64 ? 1e-12 : 1e-6;
      for (const json& c : fixture().at("clip").at("norm")) {
        const double norm_type = c.at("norm_type").is_string() ? INFINITY : c.at("norm_type").get<double>();
        const double max_norm = c.at("max_norm");
        CAPTURE(norm_type);
        CAPTURE(max_norm);
        const std::vector<Tensor> params = with_grads(fixture_grads(dtype));
        const double total = optim::clip_grad_norm_(params, max_norm, norm_type);
        CHECK(total == doctest::Approx(c.at("total_norm").get<double>()).epsilon(tol));
        for (std::size_t i = 0; i < params.size(); ++i)
          CHECK(tolerance_ratio(params[i].grad(), to_tensor(c.at("grads")[i]), tol, tol) <= 1);
      }
    }
  }

  TEST_CASE("clip_grad_value_ matches PyTorch") {
    for (const json& c : fixture().at("clip").at("value")) {
      const std::vector<Tensor> params = with_grads(fixture_grads(f64));
      optim::clip_grad_value_(params, c.at("clip_value").get<double>());
      for (std::size_t i = 0; i < params.size(); ++i)
        CHECK(params[i].grad().to_vector() == to_tensor(c.at("grads")[i]).to_vector());  // exact
    }
  }

  TEST_CASE("infinity norm, skipped parameters and the unclipped case") {
    const std::vector<Tensor> params = with_grads({tensor({3, -4}, {2}, f64), tensor({-12}, {1}, f64)});
    const Tensor no_grad = zeros({2}, f64).requires_grad_();  // requires grad, no gradient yet
    const Tensor frozen = ones({3}, f64);                     // does not require grad
    std::vector<Tensor> all = params;
    all.push_back(no_grad);
    all.push_back(frozen);
    CHECK(optim::clip_grad_norm_(all, 1e6, INFINITY) == 12);  // no clipping: coefficient > 1
    CHECK(params[0].grad().to_vector() == std::vector<double>{3, -4});
    CHECK(optim::clip_grad_norm_(all, 6, INFINITY) == 12);
    const double coef = 6 / (12 + 1e-6);
    CHECK(params[0].grad().to_vector() == std::vector<double>{3 * coef, -4 * coef});
    CHECK(params[1].grad().to_vector() == std::vector<double>{-12 * coef});
    CHECK_FALSE(no_grad.grad().defined());
    CHECK(optim::clip_grad_norm_({no_grad, frozen}, 1.0) == 0);  // nothing to clip
    CHECK(optim::clip_grad_norm_(with_grads({tensor({3, 4}, {2}, f64)}), 1e3) == 5);
  }

  TEST_CASE("a gradient shared with another handle is not written through") {
    const std::vector<Tensor> params = with_grads({tensor({3, -4}, {2}, f64)});
    const Tensor held = params[0].grad();  // the user keeps the gradient
    CHECK(optim::clip_grad_norm_(params, 1.0) == 5);
    CHECK(held.to_vector() == std::vector<double>{3, -4});  // unchanged
    const auto clipped = params[0].grad().to_vector();
    CHECK(clipped[0] == doctest::Approx(0.6));
    CHECK_FALSE(params[0].grad().shares_storage(held));

    optim::clip_grad_value_(params, 0.5);
    CHECK(held.to_vector() == std::vector<double>{3, -4});
    CHECK(params[0].grad().to_vector() == std::vector<double>{0.5, -0.5});

    // Unshared: clipped in place, no new buffer.
    const std::vector<Tensor> own = with_grads({tensor({3, -4}, {2}, f64)});
    const void* buffer = own[0].grad().raw();
    optim::clip_grad_value_(own, 1.0);
    CHECK(own[0].grad().raw() == buffer);
    CHECK(own[0].grad().to_vector() == std::vector<double>{1, -1});
  }

  TEST_CASE("clip errors") {
    const std::vector<Tensor> params = with_grads({tensor({1, 2}, {2}, f64)});
    CHECK_THROWS_WITH_AS(optim::clip_grad_norm_(params, -1.0),
                         "clip_grad_norm_: invalid max_norm; got -1, expected max_norm >= 0", ValueError);
    CHECK_THROWS_WITH_AS(optim::clip_grad_norm_(params, 1.0, 0.0),
                         "clip_grad_norm_: invalid norm_type; got 0, expected norm_type > 0 (or INFINITY)", ValueError);
    CHECK_THROWS_WITH_AS(optim::clip_grad_norm_(params, 1.0, NAN),
                         "clip_grad_norm_: invalid norm_type; got nan, expected norm_type > 0 (or INFINITY)",
                         ValueError);
    CHECK_THROWS_WITH_AS(optim::clip_grad_norm_({params[0], Tensor()}, 1.0),
                         "clip_grad_norm_: parameter 1 is undefined; got an undefined tensor, expected a parameter",
                         ValueError);
    CHECK_THROWS_WITH_AS(optim::clip_grad_value_(params, -0.5),
                         "clip_grad_value_: invalid clip_value; got -0.5, expected clip_value >= 0", ValueError);
    CHECK(params[0].grad().to_vector() == std::vector<double>{1, 2});  // untouched by the failed calls
  }

}  // TEST_SUITE
