#include <doctest/doctest.h>

#include <unroll/unroll.hpp>

using namespace unroll;

TEST_SUITE("core/tensor") {
  TEST_CASE("factories, shape and values") {
    Tensor t = tensor({1, 2, 3, 4, 5, 6}, {2, 3});
    CHECK(t.shape() == Shape{2, 3});
    CHECK(t.dim() == 2);
    CHECK(t.size(-1) == 3);
    CHECK(t.numel() == 6);
    CHECK(t.dtype() == Dtype::float32);
    CHECK(t.to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6});
    CHECK(zeros({2, 2}).to_vector() == std::vector<double>{0, 0, 0, 0});
    CHECK(full({2}, 7.5, Dtype::float64).to_vector() == std::vector<double>{7.5, 7.5});
    CHECK(arange(3, Dtype::int64).to_vector<std::int64_t>() == std::vector<std::int64_t>{0, 1, 2});
    CHECK(tensor({3.5}, {}).item() == 3.5);
  }

  TEST_CASE("views along the leading dim share storage") {
    Tensor x = arange(24).view_as_shape({4, 2, 3});
    Tensor x2 = x[2];
    CHECK(x2.shape() == Shape{2, 3});
    CHECK(x2.shares_storage(x));
    CHECK(x2.to_vector() == std::vector<double>{12, 13, 14, 15, 16, 17});
  }

  TEST_CASE("formatting") {
    CHECK(fmt::format("{}", Shape{2, 3}) == "[2, 3]");
    CHECK(fmt::format("{}", tensor({1, 2, 3, 4}, {2, 2})) == "tensor([[1, 2], [3, 4]], dtype=float32)");
    CHECK(fmt::format("{}", Dtype::int64) == "int64");
  }

  TEST_CASE("errors name the operation and both sides") {
    CHECK_THROWS_WITH_AS(tensor({1, 2, 3}, {2, 2}),
                         "tensor: value count does not match the shape; got 3 values, expected 4 for shape [2, 2]",
                         ValueError);
    CHECK_THROWS_WITH_AS(tensor({1, 2}, {2}).item(),
                         "item: tensor has more than one element; got shape [2], expected one element", ShapeError);
    CHECK_THROWS_WITH_AS(tensor({1, 2}, {2}).data<double>(),
                         "Tensor::data: element type differs; got float64, expected float32", DtypeError);
    CHECK_THROWS_AS(Shape({-1}), ShapeError);
  }
}
