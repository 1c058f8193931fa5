#pragma once
// Matrix products. Large products go to OpenBLAS (cblas_?gemm, the only caller of cblas); tiny ones
// (a recurrent step with batch 1) run an inline kernel, because a BLAS call costs more than the math there.
#include <algorithm>
#include <cstdint>
#include <vector>

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

/// True when a product of this shape goes to OpenBLAS rather than the inline kernel; gemm_packed is
/// measured faster than OpenBLAS on such shapes when the right operand is reused (bench/RESULTS.md).
inline bool goes_to_blas(std::int64_t M, std::int64_t N, std::int64_t K) {
  return M > kSmallGemmRows && M * N * K > kSmallGemmWork;
}

/// Whether gemm_packed is worth using in this build: its register tiles are written for 256-bit vectors, and
/// compiled without AVX (a build without -march=native on x86) GCC lowers them so badly that a [64 x 256] .
/// [256 x 1024] product took 34 ms against OpenBLAS's 0.7 ms (bench/RESULTS.md). Decided by the library's own
/// compile flags, not the caller's.
bool packed_gemm_is_fast();

/// op(B) [K, N] copied once into the layout gemm_packed reads, for a right-hand operand that many products
/// share: a recurrent layer's weight_hh, used by every time step. Each BLAS call packs its operands afresh
/// (docs/DESIGN.md, "Recurrent layers").
/// Layout: K in blocks of kDepth rows; within a block, panels of kPanelWidth columns (two SIMD vectors),
/// each a contiguous depth x width block (16 KiB: it stays in L1 while every row tile of A passes over it),
/// the last panel zero-padded past N.
template <class T>
class PackedMatrix {
 public:
  static constexpr std::int64_t kPanelWidth = 64 / static_cast<std::int64_t>(sizeof(T));
  static constexpr std::int64_t kDepth = 256;
  /// op(B)[k, n] = trans ? B[n * ldb + k] : B[k * ldb + n]
  PackedMatrix(bool trans, std::int64_t K, std::int64_t N, const T* B, std::int64_t ldb);
  PackedMatrix(PackedMatrix&&) noexcept = default;
  PackedMatrix& operator=(PackedMatrix&&) noexcept = default;
  PackedMatrix(const PackedMatrix&) = delete;
  PackedMatrix& operator=(const PackedMatrix&) = delete;

  std::int64_t rows() const { return K_; }
  std::int64_t cols() const { return N_; }
  std::int64_t panels() const { return (N_ + kPanelWidth - 1) / kPanelWidth; }
  /// Panel p of the K block starting at row k0 (a multiple of kDepth): min(kDepth, K - k0) rows of
  /// kPanelWidth values.
  const T* panel(std::int64_t k0, std::int64_t p) const {
    return data_.data() + offset_ + k0 * panels() * kPanelWidth + p * std::min(kDepth, K_ - k0) * kPanelWidth;
  }

 private:
  std::int64_t K_, N_;
  std::vector<T> data_;
  std::size_t offset_ = 0;  // to the first 64-byte boundary in data_, so that each panel row is one cache line
};

/// C[M, N] = A[M, K] · B + (C_in or 0) + (bias or 0, a row of N added to every row of C). A, C_in and C are
/// row-major with row strides lda, ld_in, ldc; C_in may be C itself (accumulate). Splits over B's panels
/// across threads when the product is large enough and the caller is not in a serial region.
template <class T>
void gemm_packed(std::int64_t M, const T* A, std::int64_t lda, const PackedMatrix<T>& B, const T* C_in,
                 std::int64_t ld_in, const T* bias, T* C, std::int64_t ldc);

void blas_set_num_threads(int n);
int blas_num_threads();

}  // namespace unroll::detail
