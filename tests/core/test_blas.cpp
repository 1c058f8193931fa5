// The GEMM wrapper (inline kernel and OpenBLAS) against a plain triple loop, over shapes that hit every
// path: K = 1 outer products, rows narrower and wider than a register block, all transpose flags, beta
// 0 / 1 / other, float and double; and the packed-operand product (gemm_packed) against gemm.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include <unroll/core/blas.hpp>
#include <unroll/core/random.hpp>

namespace {
// n values uniform in [-0.5, 0.5).
template <class T>
std::vector<T> random_values(unroll::Generator& gen, std::int64_t n) {
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<T>(gen.uniform() - 0.5);
  return v;
}

// The largest |got[i] - want[i]|.
template <class T, class U>
double worst_difference(const std::vector<T>& got, const std::vector<U>& want) {
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - static_cast<double>(want[i])));
  return worst;
}

template <class T>
double worst_error(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha, T beta) {
  unroll::Generator gen(M * 131 + N * 17 + K);
  auto fill = [&](std::int64_t n) { return random_values<T>(gen, n); };
  const std::vector<T> A = fill(M * K), B = fill(K * N);
  std::vector<T> C = fill(M * N), ref = C;
  const std::int64_t lda = ta ? M : K, ldb = tb ? K : N;
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j) {
      double acc = 0;
      for (std::int64_t k = 0; k < K; ++k)
        acc += static_cast<double>(ta ? A[k * lda + i] : A[i * lda + k]) *
               static_cast<double>(tb ? B[j * ldb + k] : B[k * ldb + j]);
      ref[i * N + j] = static_cast<T>(alpha * acc + (beta == T(0) ? 0.0 : beta * static_cast<double>(ref[i * N + j])));
    }
  unroll::detail::gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), N);
  return worst_difference(C, ref);
}
}  // namespace

TEST_SUITE("core/blas") {
  TEST_CASE("gemm matches a plain triple loop on every path") {
    const std::int64_t shapes[][3] = {{1, 32, 32}, {1, 5, 3},    {32, 32, 1},   {16, 37, 1},  {3, 4, 5},   {7, 70, 9},
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

namespace {
// gemm_packed against the same product through gemm: C = A·op(B) + (C_in) + (bias), with C_in a separate
// matrix, C itself (accumulate) or absent.
template <class T>
double packed_error(bool trans, std::int64_t M, std::int64_t N, std::int64_t K, int init, bool bias) {
  unroll::Generator gen(M * 7 + N * 131 + K * 3 + init);
  auto fill = [&](std::int64_t n) { return random_values<T>(gen, n); };
  const std::vector<T> A = fill(M * K), B = fill(K * N), C_in = fill(M * N), b = fill(N);
  std::vector<T> ref = init == 0 ? std::vector<T>(static_cast<std::size_t>(M * N), T(0)) : C_in;
  if (bias)
    for (std::int64_t i = 0; i < M; ++i)
      for (std::int64_t j = 0; j < N; ++j) ref[static_cast<std::size_t>(i * N + j)] += b[static_cast<std::size_t>(j)];
  const std::int64_t ldb = trans ? K : N;
  unroll::detail::gemm(false, trans, M, N, K, T(1), A.data(), K, B.data(), ldb, T(1), ref.data(), N);
  const unroll::detail::PackedMatrix<T> P(trans, K, N, B.data(), ldb);
  std::vector<T> C = init == 2 ? C_in : fill(M * N);  // init 2: accumulate into C; else C is write-only
  const T* in = init == 1 ? C_in.data() : init == 2 ? C.data() : nullptr;
  unroll::detail::gemm_packed<T>(M, A.data(), K, P, in, N, bias ? b.data() : nullptr, C.data(), N);
  return worst_difference(C, ref);
}
}  // namespace

TEST_SUITE("core/blas") {
  TEST_CASE(
      "gemm_packed matches gemm: every row tiling, narrow last panels, K blocks, C_in separate / aliased / absent, bias") {
    // M covers 6- and 5-row tiles and the small leftovers; N covers a single, a partial and several panels.
    for (std::int64_t M : {1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 19, 20, 32, 33})
      for (std::int64_t N : {1, 7, 8, 16, 17, 40})
        for (std::int64_t K : {0, 1, 5, 64, 257})  // 0: C = C_in + bias; 257: two K blocks
          for (bool trans : {false, true})
            for (int init : {0, 1, 2})
              for (bool bias : {false, true}) {
                CAPTURE(M);
                CAPTURE(N);
                CAPTURE(K);
                CAPTURE(trans);
                CAPTURE(init);
                CAPTURE(bias);
                CHECK(packed_error<double>(trans, M, N, K, init, bias) < 1e-13);
                CHECK(packed_error<float>(trans, M, N, K, init, bias) < 1e-5);
              }
    // A recurrent layer's shapes: [32, 128] · [128, 512] and [32, 512] · [512, 128].
    CHECK(packed_error<float>(true, 32, 512, 128, 0, true) < 1e-4);
    CHECK(packed_error<float>(false, 32, 128, 512, 2, false) < 1e-4);
    CHECK(packed_error<double>(true, 64, 80, 300, 1, true) < 1e-12);
  }

  TEST_CASE("gemm_packed: the packed copy starts on a cache line and pads its last panel with zeros") {
    const std::vector<float> B(3 * 20, 1.0f);
    const unroll::detail::PackedMatrix<float> P(false, 3, 20, B.data(), 20);
    CHECK(P.rows() == 3);
    CHECK(P.cols() == 20);
    CHECK(P.panels() == 2);
    CHECK(reinterpret_cast<std::uintptr_t>(P.panel(0, 0)) % 64 == 0);
    const float* last = P.panel(0, 1);  // columns 16..19 valid, 20..31 padding
    for (int k = 0; k < 3; ++k)
      for (int q = 0; q < 16; ++q) CHECK(last[k * 16 + q] == (q < 4 ? 1.0f : 0.0f));
  }
}
