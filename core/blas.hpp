#pragma once
// Matrix products. Large products go to OpenBLAS (cblas_?gemm, the only caller of cblas); tiny ones
// (a recurrent step with batch 1) run an inline kernel, because a BLAS call costs more than the math there.
#include <cstdint>

namespace unroll::detail {

/// C[M,N] = alpha * op(A)[M,K] · op(B)[K,N] + beta * C, all row-major; op(X) = X^T when trans_x.
/// lda/ldb/ldc are row strides of A, B, C as stored. beta == 0 means C is write-only (may be uninitialised).
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
          std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc);
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, double alpha, const double* A,
          std::int64_t lda, const double* B, std::int64_t ldb, double beta, double* C, std::int64_t ldc);

/// Products with M*N*K at or below this run inline (measured: see bench/RESULTS.md; a variable only so
/// that unroll-bench can sweep it).
inline std::int64_t kSmallGemmWork = 32 * 32 * 64;
/// Products with at most this many rows (matrix-vector-like: a batch-1 recurrent step) also run inline:
/// OpenBLAS's gemm is slower than the inline kernel there at every size measured.
inline std::int64_t kSmallGemmRows = 4;  // a variable only so that unroll-bench can sweep it

void blas_set_num_threads(int n);
int blas_num_threads();

}  // namespace unroll::detail
