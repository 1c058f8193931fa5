// The GEMM wrapper (inline kernel and OpenBLAS) against a plain triple loop, over shapes that hit every
// path: K = 1 outer products, rows narrower and wider than a register block, all transpose flags, beta
// 0 / 1 / other, float and double.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <unroll/core/blas.hpp>
#include <unroll/core/random.hpp>

namespace {
template <class T>
double worst_error(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha, T beta) {
  unroll::Generator gen(M * 131 + N * 17 + K);
  auto fill = [&](std::int64_t n) {
    std::vector<T> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = static_cast<T>(gen.uniform() - 0.5);
    return v;
  };
  const std::vector<T> A = fill(M * K), B = fill(K * N);
  std::vector<T> C = fill(M * N), ref = C;
  const std::int64_t lda = ta ? M : K, ldb = tb ? K : N;
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (std::int64_t k = 0; k < K; ++k)
        acc += static_cast<double>(ta ? A[k * lda + i] : A[i * lda + k]) * static_cast<double>(tb ? B[j * ldb + k] : B[k * ldb + j]);
      ref[i * N + j] = static_cast<T>(alpha * acc + (beta == T(0) ? 0.0 : beta * static_cast<double>(ref[i * N + j])));
    }
  unroll::detail::gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), N);
  double worst = 0;
  for (std::size_t i = 0; i < C.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(C[i]) - ref[i]));
  return worst;
}
}  // namespace

TEST_SUITE("core/blas") {
TEST_CASE("gemm matches a plain triple loop on every path") {
  const std::int64_t shapes[][3] = {{1, 32, 32}, {1, 5, 3},  {32, 32, 1}, {16, 37, 1}, {3, 4, 5},   {7, 70, 9},
                                    {2, 33, 1},  {64, 64, 64}, {5, 200, 100}, {100, 3, 50}, {1, 512, 64}};
  for (const auto& s : shapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (double beta : {0.0, 1.0, 0.5}) {
          const std::int64_t M = s[0], N = s[1], K = s[2];
          CAPTURE(M);
          CAPTURE(N);
          CAPTURE(K);
          CAPTURE(ta);
          CAPTURE(tb);
          CAPTURE(beta);
          CHECK(worst_error<double>(ta, tb, M, N, K, 1.5, beta) < 1e-12);
          CHECK(worst_error<float>(ta, tb, M, N, K, 1.5f, static_cast<float>(beta)) < 1e-4);
        }
}
}
