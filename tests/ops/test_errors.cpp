// Error text for each kind of bad input per op family, empty tensors where they are legal, dropout and the
// differentiable cast.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
constexpr Dtype f32 = Dtype::float32;
constexpr Dtype f64 = Dtype::float64;
}  // namespace

TEST_SUITE("ops/errors") {
  TEST_CASE("broadcasting mismatch") {
    CHECK_THROWS_WITH_AS(add(ones({2, 3}), ones({4})),
                         "add: shapes are not broadcastable; got a=[2, 3] and b=[4], expected equal sizes or 1 in each "
                         "dimension",
                         ShapeError);
    CHECK_THROWS_WITH_AS(
        mul(ones({2, 3}), ones({3, 3})),
        "mul: shapes are not broadcastable; got a=[2, 3] and b=[3, 3], expected equal sizes or 1 in each "
        "dimension",
        ShapeError);
    CHECK_THROWS_WITH_AS(where(ones({2, 3}), ones({3}), ones({2})),
                         "where: shapes are not broadcastable; got a=[3] and b=[2], expected equal sizes or 1 in each "
                         "dimension",
                         ShapeError);
    CHECK_THROWS_WITH_AS(
        where(ones({4}), ones({2, 3}), ones({2, 3})),
        "where: condition does not broadcast with the values; got cond=[4] and values of shape [2, 3], "
        "expected equal sizes or 1 in each dimension",
        ShapeError);
    CHECK_THROWS_WITH_AS(
        masked_fill(ones({3}), ones({2, 3}), 0.0),
        "masked_fill: mask does not broadcast to the input; got mask=[2, 3] and x=[3], expected a mask "
        "broadcastable to x",
        ShapeError);
  }

  TEST_CASE("dtype mismatch and int64 into float ops") {
    CHECK_THROWS_WITH_AS(add(ones({2}, f32), ones({2}, f64)),
                         "add: dtypes differ; got a=float32 and b=float64, expected the same dtype", DtypeError);
    CHECK_THROWS_WITH_AS(matmul(ones({2, 2}, f64), ones({2, 2}, f32)),
                         "matmul: dtypes differ; got a=float64 and b=float32, expected the same dtype", DtypeError);
    CHECK_THROWS_WITH_AS(unroll::tanh(arange(3, Dtype::int64)),
                         "tanh: expected a floating-point tensor; got int64, expected float32 or float64", DtypeError);
    CHECK_THROWS_WITH_AS(add(arange(3, Dtype::int64), arange(3, Dtype::int64)),
                         "add: expected a floating-point tensor; got int64, expected float32 or float64", DtypeError);
    CHECK_THROWS_WITH_AS(sum(arange(3, Dtype::int64)),
                         "sum: expected a floating-point tensor; got int64, expected float32 or float64", DtypeError);
  }

  TEST_CASE("matmul shapes") {
    CHECK_THROWS_WITH_AS(matmul(ones({2, 3}), ones({4, 5})),
                         "matmul: inner dimensions differ; got a=[2, 3] and b=[4, 5]", ShapeError);
    CHECK_THROWS_WITH_AS(
        matmul(ones({3}), ones({3, 2})),
        "matmul: unsupported ranks; got a=[3] and b=[3, 2], expected 2-D x 2-D, 3-D x 3-D or 3-D x 2-D", ShapeError);
    CHECK_THROWS_WITH_AS(matmul(ones({2, 3, 4}), ones({3, 4, 5})),
                         "matmul: batch sizes differ; got a=[2, 3, 4] and b=[3, 4, 5]", ShapeError);
  }

  TEST_CASE("reshape and permute") {
    CHECK_THROWS_WITH_AS(
        reshape(ones({2, 3}), {4, 2}),
        "reshape: element count differs; got [4, 2] (8 elements) for input [2, 3], expected 6 elements", ShapeError);
    CHECK_THROWS_WITH_AS(reshape(ones({2, 3}), {-1, -1}),
                         "reshape: more than one -1; got [-1, -1], expected at most one inferred size", ShapeError);
    CHECK_THROWS_WITH_AS(reshape(ones({2, 3}), {4, -1}),
                         "reshape: cannot infer the -1 size; got shape [4, -1] for 6 elements, expected a divisor",
                         ShapeError);
    CHECK_THROWS_WITH_AS(permute(ones({2, 3}), {0, 0}),
                         "permute: repeated dim; got [0, 0], expected a permutation of 0..1", ValueError);
    CHECK_THROWS_WITH_AS(permute(ones({2, 3}), {0}),
                         "permute: number of dims differs; got 1 dims for input [2, 3], expected 2", ShapeError);
  }

  TEST_CASE("narrow, select and dims out of range") {
    CHECK_THROWS_WITH_AS(
        narrow(ones({4, 3}), 0, 3, 2),
        "narrow: range out of bounds; got start=3 length=2 on dim 0 of [4, 3], expected start + length "
        "<= 4",
        IndexError);
    // A negative start is reported against a bound it satisfies (-1 + 1 <= 4); PyTorch would accept it.
    CHECK_THROWS_WITH_AS(
        narrow(ones({4, 3}), 0, -1, 1),
        "narrow: range out of bounds; got start=-1 length=1 on dim 0 of [4, 3], expected start + length "
        "<= 4",
        IndexError);
    CHECK_THROWS_WITH_AS(select(ones({2, 3}), 1, 3),
                         "select: index out of range; got 3 for dim 1 of [2, 3], expected in [-3, 2]", IndexError);
    CHECK_THROWS_WITH_AS(ones({2, 3})[5], "select: index out of range; got 5 for dim 0 of [2, 3], expected in [-2, 1]",
                         IndexError);
    CHECK_THROWS_WITH_AS(sum(ones({2, 3}), {2}), "sum: dimension out of range; got 2, expected in [-2, 1]", IndexError);
    CHECK_THROWS_WITH_AS(transpose(ones({2, 3}), 0, -3),
                         "transpose: dimension out of range; got -3, expected in [-2, 1]", IndexError);
    CHECK_THROWS_WITH_AS(softmax(ones({2, 3}), 2), "softmax: dimension out of range; got 2, expected in [-2, 1]",
                         IndexError);
    // A 0-d tensor has no valid dim; the range printed is empty.
    CHECK_THROWS_WITH_AS(zeros({}).size(0), "size: dimension out of range; got 0, expected in [0, -1]", IndexError);
  }

  TEST_CASE("cat and stack") {
    CHECK_THROWS_WITH_AS(
        cat({ones({2, 3}), ones({2, 4})}, 0),
        "cat: shapes differ outside dim 0; got [2, 4] at position 1, expected [2, 3] except along dim 0", ShapeError);
    CHECK_THROWS_WITH_AS(cat(std::vector<Tensor>{}, 0), "cat: no tensors to join; got 0, expected at least 1",
                         ValueError);
    CHECK_THROWS_WITH_AS(cat({ones({2}, f32), ones({2}, f64)}, 0),
                         "cat: dtypes differ; got float64 at position 1, expected float32", DtypeError);
    CHECK_THROWS_WITH_AS(stack({ones({2, 3}), ones({3, 2})}, 0),
                         "stack: shapes differ; got [3, 2] at position 1, expected [2, 3]", ShapeError);
  }

  TEST_CASE("index_select and embedding") {
    CHECK_THROWS_WITH_AS(index_select(ones({4, 2}), 0, index_tensor({0, 4})),
                         "index_select: index out of range; got 4 at position 1, expected in [0, 4)", IndexError);
    CHECK_THROWS_WITH_AS(index_select(ones({4, 2}), 0, tensor({0, 1}, {2})),
                         "index_select: indices must be int64; got float32, expected int64", DtypeError);
    CHECK_THROWS_WITH_AS(embedding(ones({5, 3}), index_tensor({1, 5})),
                         "embedding: index out of range; got 5 at position 1, expected in [0, 5)", IndexError);
    CHECK_THROWS_WITH_AS(embedding(ones({2, 3, 4}), index_tensor({0})),
                         "embedding: weight must be 2-D; got [2, 3, 4], expected [V, D]", ShapeError);
  }

  TEST_CASE("embedding padding_idx out of range") {
    CHECK_THROWS_WITH_AS(embedding(ones({5, 3}), index_tensor({0}), -10),
                         "embedding: padding_idx out of range; got -10, expected in [-5, 5)", IndexError);
    CHECK_THROWS_WITH_AS(embedding(ones({5, 3}), index_tensor({0}), 5),
                         "embedding: padding_idx out of range; got 5, expected in [-5, 5)", IndexError);
  }

  TEST_CASE("losses") {
    CHECK_THROWS_WITH_AS(
        cross_entropy(zeros({2, 3}), index_tensor({0, 3})),
        "cross_entropy: target out of range; got 3 at position 1, expected in [0, 3) or ignore_index -100", IndexError);
    CHECK_THROWS_WITH_AS(nll_loss(zeros({2, 3}), index_tensor({-1, 0})),
                         "nll_loss: target out of range; got -1 at position 0, expected in [0, 3) or ignore_index -100",
                         IndexError);
    CHECK_THROWS_WITH_AS(nll_loss(zeros({2, 3}), tensor({0, 1}, {2})),
                         "nll_loss: target must be int64 class indices; got float32, expected int64", DtypeError);
    CHECK_THROWS_WITH_AS(
        cross_entropy(zeros({2, 3}), index_tensor({0, 1, 2})),
        "cross_entropy: target shape does not match the input; got target=[3] for input=[2, 3], expected [2]",
        ShapeError);
    CHECK_THROWS_WITH_AS(cross_entropy(zeros({3}), index_tensor({0})),
                         "cross_entropy: input must be [N, C]; got [3], expected 2 dims", ShapeError);
    CHECK_THROWS_WITH_AS(parse_reduction("avg"), "reduction: unknown name; got 'avg', expected none, mean or sum",
                         ValueError);
    CHECK(parse_reduction("sum") == Reduction::sum);
    CHECK_THROWS_WITH_AS(mse_loss(ones({2, 3}), ones({3})),
                         "mse_loss: shapes differ; got a=[2, 3] and b=[3], expected equal shapes", ShapeError);
  }

  TEST_CASE("argument values") {
    CHECK_THROWS_WITH_AS(dropout(ones({4}), 1.5, true),
                         "dropout: probability out of range; got p=1.5, expected in [0, 1]", ValueError);
    CHECK_THROWS_WITH_AS(dropout(ones({4}), -0.1, false),
                         "dropout: probability out of range; got p=-0.1, expected in [0, 1]", ValueError);
    CHECK_THROWS_WITH_AS(clamp(ones({4}), 2.0, 1.0), "clamp: empty range; got min=2 and max=1, expected min <= max",
                         ValueError);
    CHECK_THROWS_WITH_AS(split(ones({4}), 0), "split: split_size must be positive; got 0, expected >= 1", ValueError);
    CHECK_THROWS_WITH_AS(chunk(ones({4}), 0), "chunk: number of chunks must be positive; got 0, expected >= 1",
                         ValueError);
    CHECK_THROWS_WITH_AS(slice(ones({4}), 0, 0, 4, 0), "slice: step must be positive; got 0, expected >= 1",
                         ValueError);
  }

  TEST_CASE("logsigmoid, silu, gelu and logaddexp") {
    CHECK_THROWS_WITH_AS(logsigmoid(arange(3, Dtype::int64)),
                         "logsigmoid: expected a floating-point tensor; got int64, expected float32 or float64",
                         DtypeError);
    CHECK_THROWS_WITH_AS(silu(arange(3, Dtype::int64)),
                         "silu: expected a floating-point tensor; got int64, expected float32 or float64", DtypeError);
    CHECK_THROWS_WITH_AS(gelu(arange(3, Dtype::int64), GeluApproximation::tanh),
                         "gelu: expected a floating-point tensor; got int64, expected float32 or float64", DtypeError);
    CHECK_THROWS_WITH_AS(gelu(ones({2}), static_cast<GeluApproximation>(7)),
                         "gelu: unknown approximation; got 7, expected GeluApproximation::none or ::tanh", ValueError);
    CHECK_THROWS_WITH_AS(
        logaddexp(ones({2, 3}), ones({4})),
        "logaddexp: shapes are not broadcastable; got a=[2, 3] and b=[4], expected equal sizes or 1 in each dimension",
        ShapeError);
    CHECK_THROWS_WITH_AS(logaddexp(ones({2}, f32), ones({2}, f64)),
                         "logaddexp: dtypes differ; got a=float32 and b=float64, expected the same dtype", DtypeError);
  }

  TEST_CASE("cumsum and logcumsumexp") {
    CHECK_THROWS_WITH_AS(cumsum(ones({2, 3}), 2), "cumsum: dimension out of range; got 2, expected in [-2, 1]",
                         IndexError);
    CHECK_THROWS_WITH_AS(logcumsumexp(ones({2, 3}), -3),
                         "logcumsumexp: dimension out of range; got -3, expected in [-2, 1]", IndexError);
    CHECK_THROWS_WITH_AS(cumsum(zeros({}), 1), "cumsum: dimension out of range; got 1, expected in [-1, 0]",
                         IndexError);
    CHECK_THROWS_WITH_AS(logcumsumexp(arange(3, Dtype::int64), 0),
                         "logcumsumexp: expected a floating-point tensor; got int64, expected float32 or float64",
                         DtypeError);
  }

  TEST_CASE("conv1d") {
    CHECK_THROWS_WITH_AS(conv1d(ones({4, 3}), ones({3, 2})),
                         "conv1d: input must be [T, B, C]; got [4, 3], expected 3 dims", ShapeError);
    CHECK_THROWS_WITH_AS(
        conv1d(ones({4, 2, 3}), ones({2, 2})),
        "conv1d: weight does not match the channels; got weight=[2, 2] for x=[4, 2, 3], expected [3, K]", ShapeError);
    CHECK_THROWS_WITH_AS(conv1d(ones({4, 2, 3}), ones({3, 1, 2})),
                         "conv1d: weight does not match the channels; got weight=[3, 1, 2] for x=[4, 2, 3], expected "
                         "[3, K]",
                         ShapeError);
    CHECK_THROWS_WITH_AS(conv1d(ones({4, 2, 3}), ones({3, 0})),
                         "conv1d: kernel size must be positive; got weight=[3, 0], expected K >= 1", ValueError);
    CHECK_THROWS_WITH_AS(conv1d(ones({4, 2, 3}), ones({3, 2}), ones({2})),
                         "conv1d: bias does not match the channels; got bias=[2] for x=[4, 2, 3], expected [3]",
                         ShapeError);
    CHECK_THROWS_WITH_AS(conv1d(ones({4, 2, 3}, f64), ones({3, 2}, f32)),
                         "conv1d: dtypes differ; got x=float64 and weight=float32, expected the same dtype",
                         DtypeError);
    CHECK_THROWS_WITH_AS(conv1d(ones({4, 2, 3}), ones({3, 2}), ones({3}, f64)),
                         "conv1d: dtypes differ; got x=float32 and bias=float64, expected the same dtype", DtypeError);
    CHECK_THROWS_WITH_AS(conv1d(zeros({4, 2, 3}, Dtype::int64), zeros({3, 2}, Dtype::int64)),
                         "conv1d: expected a floating-point tensor; got int64, expected float32 or float64",
                         DtypeError);
    CHECK_THROWS_WITH_AS(conv1d(ones({4, 2, 3}), Tensor()),
                         "conv1d: weight is undefined; got an undefined tensor, expected [3, K]", StateError);
  }

  TEST_CASE("reductions of empty tensors") {
    CHECK_THROWS_WITH_AS(unroll::max(zeros({0})), "max: empty tensor; got [0], expected at least one element",
                         ShapeError);
    CHECK_THROWS_WITH_AS(unroll::max(zeros({2, 0}), 1),
                         "max: reduction over an empty dim; got [2, 0] on dim 1, expected size > 0", ShapeError);
  }

  TEST_CASE("mean of zero elements is nan, as PyTorch") {
    CHECK(std::isnan(mean(zeros({0, 3})).item()));
    CHECK(mean(zeros({0, 3}), {1}).shape() == Shape{0});  // non-empty reduced dim: an empty result
    const auto m = mean(zeros({2, 0}), {1}).to_vector();
    REQUIRE(m.size() == 2);
    CHECK(std::isnan(m[0]));
    CHECK(std::isnan(m[1]));
  }

  // ---- empty tensors where they are legal ----
  TEST_CASE("add of two [0, 3] tensors is [0, 3]") {
    Tensor r = add(zeros({0, 3}), zeros({0, 3}));
    CHECK(r.shape() == Shape{0, 3});
    Tensor b = add(zeros({0, 3}), ones({3}));  // broadcast against an empty dim
    CHECK(b.shape() == Shape{0, 3});
  }

  TEST_CASE("sum of an empty tensor is 0") {
    CHECK(sum(zeros({0, 3})).item() == 0.0);
    CHECK(sum(full({0}, 5.0)).item() == 0.0);
    Tensor s = sum(zeros({2, 0}), {1});
    CHECK(s.shape() == Shape{2});
    CHECK(s.to_vector() == std::vector<double>{0, 0});
  }

  TEST_CASE("cat with a zero-length piece") {
    Tensor a = tensor({1, 2, 3, 4, 5, 6}, {2, 3}, f64).requires_grad_();
    Tensor e = zeros({0, 3}, f64).requires_grad_();
    Tensor r = cat({a, e, a}, 0);
    CHECK(r.shape() == Shape{4, 3});
    CHECK(r.to_vector() == std::vector<double>{1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6});
    sum(r * 2.0).backward();
    CHECK(a.grad().to_vector() == std::vector<double>(6, 4.0));
    CHECK(e.grad().shape() == Shape{0, 3});
    Tensor c1 = cat({ones({2, 0}), ones({2, 2})}, 1);
    CHECK(c1.shape() == Shape{2, 2});
  }

  // ---- dropout ----
  TEST_CASE("dropout in eval mode returns the input unchanged") {
    Tensor x = tensor({1, 2, 3}, {3});
    Tensor y = dropout(x, 0.5, /*training=*/false);
    CHECK(y.shares_storage(x));
    CHECK(y.to_vector() == x.to_vector());
    CHECK(dropout(x, 0.0, true).same_data(x));
  }

  TEST_CASE("dropout with a seeded generator is reproducible") {
    Tensor x = ones({1000});
    Generator g1(42), g2(42), g3(43);
    const auto a = dropout(x, 0.3, true, g1).to_vector();
    CHECK(a == dropout(x, 0.3, true, g2).to_vector());
    CHECK(a != dropout(x, 0.3, true, g3).to_vector());
    CHECK(a != dropout(x, 0.3, true, g1).to_vector());  // the generator advanced
  }

  TEST_CASE("dropout keeps about 1 - p of the elements, scaled by 1 / (1 - p)") {
    constexpr std::int64_t n = 200000;
    constexpr double p = 0.3;
    Generator gen(11);
    const auto y = dropout(ones({n}), p, true, gen).to_vector();
    std::int64_t kept = 0;
    bool scaled = true;
    for (double v : y) {
      if (v != 0.0) {
        ++kept;
        scaled = scaled && std::abs(v - 1.0 / (1.0 - p)) < 1e-6;
      }
    }
    const double frac = static_cast<double>(kept) / n;
    const double sd = std::sqrt(p * (1 - p) / n);  // ~0.001
    CHECK(std::abs(frac - (1 - p)) < 5 * sd);
    CHECK(scaled);
  }

  TEST_CASE("dropout's gradient is the mask scaling") {
    Generator gen(9);
    Tensor x = tensor({1, 2, 3, 4, 5, 6, 7, 8}, {8}, f64).requires_grad_();
    Tensor y = dropout(x, 0.5, true, gen);
    sum(y).backward();
    const auto yv = y.to_vector(), xv = x.to_vector(), gv = x.grad().to_vector();
    int zeros_seen = 0;
    for (std::size_t i = 0; i < yv.size(); ++i) {
      CHECK(gv[i] == doctest::Approx(yv[i] / xv[i]));
      CHECK((gv[i] == 0.0 || gv[i] == doctest::Approx(2.0)));
      zeros_seen += gv[i] == 0.0;
    }
    CHECK(zeros_seen > 0);
    CHECK(zeros_seen < 8);
  }

  TEST_CASE("dropout with p = 1 zeroes everything") {
    Generator gen(1);
    Tensor x = ones({5}, f64).requires_grad_();
    Tensor y = dropout(x, 1.0, true, gen);
    CHECK(y.to_vector() == std::vector<double>(5, 0.0));
    sum(y).backward();
    CHECK(x.grad().to_vector() == std::vector<double>(5, 0.0));
  }

  // ---- differentiable cast ----
  TEST_CASE("to(): float32 -> float64 -> sum backward gives a float32 gradient") {
    Tensor x = tensor({1.5, -2, 3}, {3}, f32).requires_grad_();
    Tensor y = to(x, f64);
    CHECK(y.dtype() == f64);
    CHECK(y.requires_grad());
    sum(y * y).backward();
    REQUIRE(x.grad().defined());
    CHECK(x.grad().dtype() == f32);
    CHECK(x.grad().to_vector() == std::vector<double>{3, -4, 6});
    CHECK(to(x, f32).same_data(x));  // same dtype: no copy
  }

  TEST_CASE("sizes and ranges that would overflow are refused, not wrapped") {
    CHECK_THROWS_AS(ones({std::int64_t{1} << 62}), ShapeError);
    CHECK_THROWS_AS(zeros({std::int64_t{1} << 32, std::int64_t{1} << 32}), ShapeError);
    Tensor x = arange(4);
    CHECK_THROWS_AS(narrow(x, 0, 1, INT64_MAX), IndexError);
    CHECK(slice(x, 0, 0, 5, INT64_MAX).to_vector() == std::vector<double>{0});
    CHECK(slice(x, 0, 1, 4, 2).to_vector() == std::vector<double>{1, 3});
  }

  TEST_CASE("max of a tensor whose maximum is NaN sends the gradient to the NaNs") {
    Tensor x = tensor({1.0, NAN, 2.0, NAN}, {4}, Dtype::float64).requires_grad_();
    unroll::max(x).backward();
    CHECK(x.grad().to_vector() == std::vector<double>{0, 0.5, 0, 0.5});
  }
}
