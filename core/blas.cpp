#include "blas.hpp"

// The vector helpers below are internal (never cross a library boundary), so the ABI note that GCC
// gives for 256-bit vectors without AVX does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>

#include <cblas.h>

#include "error.hpp"
#include "parallel.hpp"

namespace unroll::detail {
namespace {

// The inline kernel, for products too small to amortise a BLAS call. It uses GCC/Clang vector types
// (256-bit; the compiler splits them where the target has narrower registers) so accumulators stay in
// registers: NN/TN keep a 4-register block of C's row across the whole k loop (storing C every k would
// chain each step on store-to-load forwarding); NT computes four dot products at once.
template <class T>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(32)));
};
template <class T>
using Vec = typename VecOf<T>::type;
template <class T>
constexpr int kLanes = 32 / static_cast<int>(sizeof(T));

template <class T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
inline void store(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof v);
}
// Sum of the lanes by halving (three shuffles+adds for float, two for double).
template <class T>
inline T hsum(Vec<T> v) {
  if constexpr (kLanes<T> == 8) {
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  } else {
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1);
    v += __builtin_shufflevector(v, v, 1, 0, 3, 2);
  }
  return v[0];
}

// c[0, 4L) = beta c + alpha sum_k A[k * a_step] B[k, 0..4L)
template <class T>
inline void row_block(std::int64_t K, T alpha, const T* A, std::int64_t a_step, const T* B, std::int64_t ldb, T beta,
                      T* c) {
  constexpr int L = kLanes<T>;
  Vec<T> a0{}, a1{}, a2{}, a3{};
  if (beta == T(1))
    a0 = load(c), a1 = load(c + L), a2 = load(c + 2 * L), a3 = load(c + 3 * L);  // accumulate (backward)
  else if (beta != T(0))
    a0 = beta * load(c), a1 = beta * load(c + L), a2 = beta * load(c + 2 * L), a3 = beta * load(c + 3 * L);
  // Odd k into a second set of accumulators: eight independent FMA chains instead of four, so the loop runs
  // at the FMA units' throughput rather than their latency (it is the whole cost of a batch-1 step).
  Vec<T> b0{}, b1{}, b2{}, b3{};
  std::int64_t k = 0;
  for (; k + 1 < K; k += 2) {
    const T a = alpha * A[k * a_step], a_next = alpha * A[(k + 1) * a_step];
    const T* b = B + k * ldb;
    const T* b_next = b + ldb;
    a0 += a * load(b);
    a1 += a * load(b + L);
    a2 += a * load(b + 2 * L);
    a3 += a * load(b + 3 * L);
    b0 += a_next * load(b_next);
    b1 += a_next * load(b_next + L);
    b2 += a_next * load(b_next + 2 * L);
    b3 += a_next * load(b_next + 3 * L);
  }
  if (k < K) {
    const T a = alpha * A[k * a_step];
    const T* b = B + k * ldb;
    a0 += a * load(b);
    a1 += a * load(b + L);
    a2 += a * load(b + 2 * L);
    a3 += a * load(b + 3 * L);
  }
  store(c, a0 + b0), store(c + L, a1 + b1), store(c + 2 * L, a2 + b2), store(c + 3 * L, a3 + b3);
}

// The same for a row narrower than 4L: whole vectors, then scalars.
template <class T>
inline void row_tail(std::int64_t K, T alpha, const T* A, std::int64_t a_step, const T* B, std::int64_t ldb, T beta,
                     T* c, std::int64_t width) {
  constexpr int L = kLanes<T>;
  std::int64_t j = 0;
  for (; j + L <= width; j += L) {
    Vec<T> acc = beta != T(0) ? beta * load(c + j) : Vec<T>{};
    for (std::int64_t k = 0; k < K; ++k) acc += (alpha * A[k * a_step]) * load(B + k * ldb + j);
    store(c + j, acc);
  }
  for (; j < width; ++j) {
    T acc = beta != T(0) ? beta * c[j] : T(0);
    for (std::int64_t k = 0; k < K; ++k) acc += alpha * A[k * a_step] * B[k * ldb + j];
    c[j] = acc;
  }
}

// out[q] = sum_k a[k] B[q, k] for rows q = 0..3 of B (a and B rows contiguous).
template <class T>
inline void dot4(const T* a, const T* b, std::int64_t ldb, std::int64_t K, T out[4]) {
  constexpr int L = kLanes<T>;
  Vec<T> s0{}, s1{}, s2{}, s3{};
  std::int64_t k = 0;
  for (; k + L <= K; k += L) {
    const Vec<T> av = load(a + k);
    s0 += av * load(b + k);
    s1 += av * load(b + ldb + k);
    s2 += av * load(b + 2 * ldb + k);
    s3 += av * load(b + 3 * ldb + k);
  }
  T r[4] = {hsum<T>(s0), hsum<T>(s1), hsum<T>(s2), hsum<T>(s3)};
  for (; k < K; ++k)
    for (int q = 0; q < 4; ++q) r[q] += a[k] * b[q * ldb + k];
  for (int q = 0; q < 4; ++q) out[q] = r[q];
}

// Pairwise sums of neighbours, x's and y's interleaved per 128-bit half (what AVX's vhaddps/vhaddpd do).
inline Vec<float> hadd(Vec<float> x, Vec<float> y) {
  return __builtin_shufflevector(x, y, 0, 2, 8, 10, 4, 6, 12, 14) +
         __builtin_shufflevector(x, y, 1, 3, 9, 11, 5, 7, 13, 15);
}
inline Vec<double> hadd(Vec<double> x, Vec<double> y) {
  return __builtin_shufflevector(x, y, 0, 4, 2, 6) + __builtin_shufflevector(x, y, 1, 5, 3, 7);
}

// out[q] = sum_k a[k] B[q, k] for the L = kLanes rows q of B (a and B's rows contiguous): L dot products
// at once, their lane sums reduced together (far fewer shuffles than L separate horizontal sums). This is
// the NT product of a batch-1 backward (dh = dG W^T).
template <class T>
inline Vec<T> dot_lanes(const T* a, const T* b, std::int64_t ldb, std::int64_t K) {
  constexpr int L = kLanes<T>;
  Vec<T> s[L] = {};
  std::int64_t k = 0;
  for (; k + L <= K; k += L) {
    const Vec<T> av = load(a + k);
    for (int q = 0; q < L; ++q) s[q] += av * load(b + q * ldb + k);
  }
  Vec<T> r;
  if constexpr (L == 8) {
    const Vec<T> u0 = hadd(hadd(s[0], s[1]), hadd(s[2], s[3])), u1 = hadd(hadd(s[4], s[5]), hadd(s[6], s[7]));
    r = __builtin_shufflevector(u0, u1, 0, 1, 2, 3, 8, 9, 10, 11) +
        __builtin_shufflevector(u0, u1, 4, 5, 6, 7, 12, 13, 14, 15);
  } else {
    const Vec<T> t0 = hadd(s[0], s[1]), t1 = hadd(s[2], s[3]);
    r = __builtin_shufflevector(t0, t1, 0, 1, 4, 5) + __builtin_shufflevector(t0, t1, 2, 3, 6, 7);
  }
  for (; k < K; ++k)
    for (int q = 0; q < L; ++q) r[q] += a[k] * b[q * ldb + k];
  return r;
}

template <class T>
inline T dot(const T* a, std::int64_t a_step, const T* b, std::int64_t K) {
  T acc = T(0);
  for (std::int64_t k = 0; k < K; ++k) acc += a[k * a_step] * b[k];
  return acc;
}

// C = beta C + alpha a b^T for a column a (M) and a row b (N): the K = 1 product that a batch-1 backward
// makes for every weight gradient. Each block of b is loaded once and reused down all M rows.
template <class T>
void outer_product(std::int64_t M, std::int64_t N, T alpha, const T* A, std::int64_t a_row, const T* B, T beta, T* C,
                   std::int64_t ldc) {
  constexpr int L = kLanes<T>;
  std::int64_t j = 0;
  for (; j + L <= N; j += L) {
    const Vec<T> b = load(B + j);
    for (std::int64_t i = 0; i < M; ++i) {
      T* c = C + i * ldc + j;
      const Vec<T> ab = (alpha * A[i * a_row]) * b;
      store(c, beta == T(1) ? load(c) + ab : (beta == T(0) ? ab : beta * load(c) + ab));
    }
  }
  for (; j < N; ++j)
    for (std::int64_t i = 0; i < M; ++i) {
      T& c = C[i * ldc + j];
      c = (beta == T(0) ? T(0) : beta * c) + alpha * A[i * a_row] * B[j];
    }
}

// kUnitAlpha: alpha is 1 (every call from the ops), so the compiler drops the alpha * A[k] multiply from the
// inner loops (a scalar multiply per k that perf showed at 6% of the kernel).
template <bool kUnitAlpha, class T>
void small_gemm_impl(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha_in, const T* A,
                     std::int64_t lda, const T* B, std::int64_t ldb, T beta, T* C, std::int64_t ldc) {
  const T alpha = kUnitAlpha ? T(1) : alpha_in;
  // op(A)[i, k] = A[i * a_row + k * a_step]
  const std::int64_t a_row = ta ? 1 : lda, a_step = ta ? lda : 1;
  constexpr std::int64_t W = 4 * kLanes<T>;
  if (K == 1 && !tb) return outer_product(M, N, alpha, A, a_row, B, beta, C, ldc);
  for (std::int64_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    const T* a = A + i * a_row;
    if (!tb) {
      std::int64_t j = 0;
      for (; j + W <= N; j += W) row_block(K, alpha, a, a_step, B + j, ldb, beta, c + j);
      if (j < N) row_tail(K, alpha, a, a_step, B + j, ldb, beta, c + j, N - j);
      continue;
    }
    std::int64_t j = 0;
    if (a_step == 1) {
      constexpr int L = kLanes<T>;
      for (; j + L <= N; j += L) {
        const Vec<T> d = alpha * dot_lanes(a, B + j * ldb, ldb, K);
        store(c + j, beta == T(0) ? d : (beta == T(1) ? load(c + j) + d : beta * load(c + j) + d));
      }
      for (; j + 4 <= N; j += 4) {
        T d[4];
        dot4(a, B + j * ldb, ldb, K, d);
        for (int q = 0; q < 4; ++q) c[j + q] = (beta == T(0) ? T(0) : beta * c[j + q]) + alpha * d[q];
      }
    }
    for (; j < N; ++j) c[j] = (beta == T(0) ? T(0) : beta * c[j]) + alpha * dot(a, a_step, B + j * ldb, K);
  }
}

template <class T>
void small_gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha, const T* A, std::int64_t lda,
                const T* B, std::int64_t ldb, T beta, T* C, std::int64_t ldc) {
  if (alpha == T(1))
    small_gemm_impl<true>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  else
    small_gemm_impl<false>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

inline CBLAS_TRANSPOSE flag(bool t) { return t ? CblasTrans : CblasNoTrans; }

}  // namespace

namespace {
template <class T>
void gemm_any(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, T alpha, const T* A, std::int64_t lda,
              const T* B, std::int64_t ldb, T beta, T* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  const DenormalScope denormals;  // OpenBLAS's kernels run on this thread when BLAS is single-threaded
  if (M <= kSmallGemmRows || M * N * K <= kSmallGemmWork)
    return small_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  constexpr std::int64_t kMax = std::numeric_limits<blasint>::max();  // OpenBLAS takes 32-bit sizes here
  UNROLL_CHECK(std::max({M, N, K, lda, ldb, ldc}) <= kMax, ShapeError,
               "matmul: matrix too large for BLAS; got M={} N={} K={}, expected every size at most {}", M, N, K, kMax);
  auto i = [](std::int64_t v) { return static_cast<blasint>(v); };
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, flag(ta), flag(tb), i(M), i(N), i(K), alpha, A, i(lda), B, i(ldb), beta, C, i(ldc));
  else
    cblas_dgemm(CblasRowMajor, flag(ta), flag(tb), i(M), i(N), i(K), alpha, A, i(lda), B, i(ldb), beta, C, i(ldc));
}
}  // namespace

void gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, float alpha, const float* A,
          std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc) {
  gemm_any(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, double alpha, const double* A,
          std::int64_t lda, const double* B, std::int64_t ldb, double beta, double* C, std::int64_t ldc) {
  gemm_any(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// ---- gemm_packed --------------------------------------------------------------------------------------
namespace {

// One tile: MR rows of C by one panel (two vectors wide), the accumulators in registers across the whole K
// loop: 2·MR independent FMA chains, and per k two panel loads and MR broadcasts of A. MR = 6 gives 12
// chains, enough to cover the FMA latency on two FMA units, with 15 of the 16 AVX registers in use.
// c[r, :] = init[r, :] (or 0) + bias (or 0) + sum_k A[r, k] panel[k, :]
template <int MR, class T>
inline void packed_tile(std::int64_t K, const T* A, std::int64_t lda, const T* panel, const T* init,
                        std::int64_t ld_init, const T* bias, T* C, std::int64_t ldc) {
  constexpr int L = kLanes<T>;
  Vec<T> c0[MR], c1[MR];
  const Vec<T> b0 = bias ? load(bias) : Vec<T>{}, b1 = bias ? load(bias + L) : Vec<T>{};
  for (int r = 0; r < MR; ++r) {
    c0[r] = init ? load(init + r * ld_init) + b0 : b0;
    c1[r] = init ? load(init + r * ld_init + L) + b1 : b1;
  }
  for (std::int64_t k = 0; k < K; ++k) {
    const Vec<T> p0 = load(panel + k * 2 * L), p1 = load(panel + k * 2 * L + L);
    for (int r = 0; r < MR; ++r) {
      const T a = A[r * lda + k];
      c0[r] += a * p0;
      c1[r] += a * p1;
    }
  }
  for (int r = 0; r < MR; ++r) store(C + r * ldc, c0[r]), store(C + r * ldc + L, c1[r]);
}

template <int MR, class T>
void packed_rows(std::int64_t K, const T* A, std::int64_t lda, const T* panel, std::int64_t width, const T* init,
                 std::int64_t ld_init, const T* bias, T* C, std::int64_t ldc) {
  constexpr std::int64_t W = 2 * kLanes<T>;
  if (width == W) return packed_tile<MR>(K, A, lda, panel, init, ld_init, bias, C, ldc);
  // The last panel, narrower than W: run the tile on a full-width scratch copy (the panel is zero-padded).
  T tile[MR * W] = {};
  T row_bias[W] = {};
  for (int r = 0; r < MR; ++r)
    if (init) std::copy(init + r * ld_init, init + r * ld_init + width, tile + r * W);
  if (bias) std::copy(bias, bias + width, row_bias);
  packed_tile<MR>(K, A, lda, panel, tile, W, row_bias, tile, W);
  for (int r = 0; r < MR; ++r) std::copy(tile + r * W, tile + r * W + width, C + r * ldc);
}

// Rows in tiles of 6 and 5 (12 and 10 FMA chains: both run near the FMA units' peak, where a 4-row tile's
// 8 chains reach two thirds of it): M = 32 runs as 6, 6, 5, 5, 5, 5, M = 64 as nine 6s and two 5s. Sizes
// that no mix of 6s and 5s makes (M < 20) end with one smaller tile.
inline std::int64_t fives_for(std::int64_t M) {
  for (std::int64_t b = 0; b <= 5 && 5 * b <= M; ++b)
    if ((M - 5 * b) % 6 == 0) return b;
  return 0;
}

// next_C: where the next panel's columns of C start (its first tile is prefetched), or null.
template <class T>
void packed_panel(std::int64_t M, std::int64_t K, const T* A, std::int64_t lda, const T* panel, std::int64_t width,
                  const T* init, std::int64_t ld_init, const T* bias, T* C, std::int64_t ldc, T* next_C) {
  const std::int64_t fives = fives_for(M), five_from = M - 5 * fives;  // rows [five_from, M) in 5-row tiles
  for (std::int64_t i = 0; i < M;) {
    const std::int64_t mr = i >= five_from ? 5 : std::min<std::int64_t>(M - i, 6);
    const T* a = A + i * lda;
    const T* in = init ? init + i * ld_init : nullptr;
    T* c = C + i * ldc;
    // The next tile's lines of C, fetched for writing while this tile computes: C is usually a fresh
    // buffer (a step's gates), and a tile that stores into lines not yet in cache stalls on them.
    const bool last_tile = i + mr == M;
    T* next = last_tile ? next_C : c + mr * ldc;
    const std::int64_t next_rows = std::min<std::int64_t>(6, last_tile ? M : M - i - mr);
    if (next)
      for (std::int64_t r = 0; r < next_rows; ++r) __builtin_prefetch(next + r * ldc, 1);
    switch (mr) {
      case 6:
        packed_rows<6>(K, a, lda, panel, width, in, ld_init, bias, c, ldc);
        break;
      case 5:
        packed_rows<5>(K, a, lda, panel, width, in, ld_init, bias, c, ldc);
        break;
      case 4:
        packed_rows<4>(K, a, lda, panel, width, in, ld_init, bias, c, ldc);
        break;
      case 3:
        packed_rows<3>(K, a, lda, panel, width, in, ld_init, bias, c, ldc);
        break;
      case 2:
        packed_rows<2>(K, a, lda, panel, width, in, ld_init, bias, c, ldc);
        break;
      default:
        packed_rows<1>(K, a, lda, panel, width, in, ld_init, bias, c, ldc);
        break;
    }
    i += mr;
  }
}

}  // namespace

template <class T>
PackedMatrix<T>::PackedMatrix(bool trans, std::int64_t K, std::int64_t N, const T* B, std::int64_t ldb) : K_(K), N_(N) {
  UNROLL_CHECK(K >= 0 && N >= 0, ShapeError, "gemm_packed: negative matrix size; got K={} N={}", K, N);
  constexpr std::int64_t W = kPanelWidth;
  data_.assign(static_cast<std::size_t>(panels() * K * W) + 64 / sizeof(T), T(0));
  const auto address = reinterpret_cast<std::uintptr_t>(data_.data());
  offset_ = ((64 - address % 64) % 64) / sizeof(T);
  for (std::int64_t k0 = 0; k0 < K; k0 += kDepth)
    for (std::int64_t p = 0; p < panels(); ++p) {
      T* out = const_cast<T*>(panel(k0, p));
      const std::int64_t j0 = p * W, width = std::min(W, N - j0), depth = std::min(kDepth, K - k0);
      for (std::int64_t k = 0; k < depth; ++k)
        for (std::int64_t q = 0; q < width; ++q)
          out[k * W + q] = trans ? B[(j0 + q) * ldb + k0 + k] : B[(k0 + k) * ldb + j0 + q];
    }
}

// Blocked as BLIS does for this tile shape: for each K block, every panel (in L1) meets every row tile of
// A (in L2); C carries the sum from one K block to the next.
template <class T>
void gemm_packed(std::int64_t M, const T* A, std::int64_t lda, const PackedMatrix<T>& B, const T* C_in,
                 std::int64_t ld_in, const T* bias, T* C, std::int64_t ldc) {
  constexpr std::int64_t W = PackedMatrix<T>::kPanelWidth, D = PackedMatrix<T>::kDepth;
  const std::int64_t K = B.rows(), N = B.cols(), panels = B.panels();
  const DenormalScope denormals;
  auto run = [&](std::int64_t p0, std::int64_t p1) {
    std::int64_t k0 = 0;
    do {  // at least once: with K = 0, C = C_in + bias
      const bool first = k0 == 0;
      const T* init = first ? C_in : C;
      const std::int64_t ld_init = first ? ld_in : ldc;
      for (std::int64_t p = p0; p < p1; ++p) {
        const std::int64_t j = p * W;
        packed_panel(M, std::min(D, K - k0), A + k0, lda, B.panel(k0, p), std::min(W, N - j), init ? init + j : nullptr,
                     ld_init, first && bias ? bias + j : nullptr, C + j, ldc, p + 1 < p1 ? C + j + W : nullptr);
      }
      k0 += D;
    } while (k0 < K);
  };
  // A chunk of panels per task worth at least ~1M multiply-adds, so that task overhead stays small.
  const std::int64_t grain = std::max<std::int64_t>(1, (std::int64_t{1} << 20) / std::max<std::int64_t>(1, M * K * W));
  if (panels <= grain || num_threads() == 1)
    run(0, panels);
  else
    parallel_for(panels, grain, run);
}

template class PackedMatrix<float>;
template class PackedMatrix<double>;
template void gemm_packed(std::int64_t, const float*, std::int64_t, const PackedMatrix<float>&, const float*,
                          std::int64_t, const float*, float*, std::int64_t);
template void gemm_packed(std::int64_t, const double*, std::int64_t, const PackedMatrix<double>&, const double*,
                          std::int64_t, const double*, double*, std::int64_t);

bool packed_gemm_is_fast() {
#if defined(__AVX__)
  return true;
#else
  return false;  // OpenBLAS (which picks its kernels at run time) is faster than the lowered register tiles
#endif
}

void blas_set_num_threads(int n) { openblas_set_num_threads(n); }
int blas_num_threads() { return openblas_get_num_threads(); }

}  // namespace unroll::detail
