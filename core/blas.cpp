#include "blas.hpp"

#include <cblas.h>

namespace unroll::detail {
namespace {

// The inline kernel. Loop orders keep the innermost loop contiguous in memory so it vectorises
// (NN/TN: axpy over rows of B; NT: dot products of rows of A and B).
template <class T>
void small_gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha, const T* A,
                std::int64_t lda, const T* B, std::int64_t ldb, T beta, T* C, std::int64_t ldc) {
  for (std::int64_t i = 0; i < M; ++i) {
    T* __restrict c = C + i * ldc;
    if (!tb) {
      if (beta == T(0)) {
        for (std::int64_t j = 0; j < N; ++j) c[j] = T(0);
      } else if (beta != T(1)) {
        for (std::int64_t j = 0; j < N; ++j) c[j] *= beta;
      }
      for (std::int64_t k = 0; k < K; ++k) {
        const T a = alpha * (ta ? A[k * lda + i] : A[i * lda + k]);
        const T* __restrict b = B + k * ldb;
#pragma omp simd
        for (std::int64_t j = 0; j < N; ++j) c[j] += a * b[j];
      }
    } else {
      for (std::int64_t j = 0; j < N; ++j) {
        const T* __restrict b = B + j * ldb;
        T acc = T(0);
        if (!ta) {
          const T* __restrict a = A + i * lda;
#pragma omp simd reduction(+ : acc)
          for (std::int64_t k = 0; k < K; ++k) acc += a[k] * b[k];
        } else {
          for (std::int64_t k = 0; k < K; ++k) acc += A[k * lda + i] * b[k];
        }
        c[j] = (beta == T(0) ? T(0) : beta * c[j]) + alpha * acc;
      }
    }
  }
}

inline CBLAS_TRANSPOSE flag(bool t) { return t ? CblasTrans : CblasNoTrans; }

}  // namespace

void gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
          std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (M * N * K <= kSmallGemmWork) return small_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  cblas_sgemm(CblasRowMajor, flag(ta), flag(tb), static_cast<blasint>(M), static_cast<blasint>(N),
              static_cast<blasint>(K), alpha, A, static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C,
              static_cast<blasint>(ldc));
}

void gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, double alpha, const double* A,
          std::int64_t lda, const double* B, std::int64_t ldb, double beta, double* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (M * N * K <= kSmallGemmWork) return small_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  cblas_dgemm(CblasRowMajor, flag(ta), flag(tb), static_cast<blasint>(M), static_cast<blasint>(N),
              static_cast<blasint>(K), alpha, A, static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C,
              static_cast<blasint>(ldc));
}

void blas_set_num_threads(int n) { openblas_set_num_threads(n); }
int blas_num_threads() { return openblas_get_num_threads(); }

}  // namespace unroll::detail
