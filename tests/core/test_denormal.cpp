// Subnormal floats are flushed to zero inside unroll's work (core/denormal.hpp): on the caller's thread, on TBB
// workers and in GEMMs, with the caller's own floating-point mode restored afterwards; set_flush_denormal(false)
// gives IEEE subnormals back; normal values come out bit for bit the same either way. (The speed this buys is a
// benchmark, `unroll-bench --workload denormal`, not a timed test.)
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
// Restores the library default even when a CHECK fails midway.
struct FlushGuard {
  bool saved = flush_denormal();
  ~FlushGuard() { set_flush_denormal(saved); }
};
#if UNROLL_HAS_MXCSR
// The MXCSR's control bits (rounding, masks, FTZ, DAZ), not its sticky exception flags (bits 0-5).
unsigned fp_mode() { return _mm_getcsr() & ~0x3Fu; }
#endif
bool all_zero(const Tensor& t) {
  for (double v : t.to_vector())
    if (v != 0.0) return false;
  return true;
}
bool all_subnormal(const Tensor& t) {
  for (double v : t.to_vector())
    if (!(std::fpclassify(static_cast<float>(v)) == FP_SUBNORMAL)) return false;
  return true;
}
}  // namespace

TEST_SUITE("core/denormal") {
#if UNROLL_HAS_MXCSR
  TEST_CASE("on by default: subnormal results and inputs read as zero in kernels, workers and GEMMs") {
    FlushGuard guard;
    CHECK(flush_denormal());
    const unsigned caller_mode = fp_mode();
    // 1e-20 squared is 1e-40, below float's smallest normal (1.2e-38): a subnormal result (FTZ).
    for (std::int64_t n : {std::int64_t{7}, std::int64_t{1} << 20}) {  // one thread, and split across workers
      CAPTURE(n);
      const Tensor a = full({n}, 1e-20);
      CHECK(all_zero(a * a));
      CHECK(fp_mode() == caller_mode);  // the caller's mode is its own again
    }
    // A subnormal input reads as zero (DAZ): 1e-40 * 1e10 would be 1e-30, a normal number.
    const Tensor tiny = full({64}, 1e-40);
    CHECK(all_zero(tiny * 1e10));
    const Tensor m = full({40, 40}, 1e-40), ones_m = full({40, 40}, 1e10);
    CHECK(all_zero(matmul(m, ones_m)));                                // through OpenBLAS
    CHECK(all_zero(matmul(full({2, 3}, 1e-40), full({3, 2}, 1e10))));  // the inline small GEMM
    CHECK(fp_mode() == caller_mode);
  }

  TEST_CASE("set_flush_denormal(false): IEEE subnormals, as without unroll") {
    FlushGuard guard;
    set_flush_denormal(false);
    CHECK_FALSE(flush_denormal());
    for (std::int64_t n : {std::int64_t{7}, std::int64_t{1} << 20}) {
      const Tensor a = full({n}, 1e-20);
      CHECK(all_subnormal(a * a));
    }
    CHECK(all_subnormal(full({64}, 1e-40) * 1.0));
  }

  TEST_CASE("backward runs flushed too, and restores the caller's mode") {
    FlushGuard guard;
    const unsigned caller_mode = fp_mode();
    Tensor x = full({16}, 1e-20).requires_grad_();
    sum(x * x).backward();  // dx = 2x: normal
    CHECK(x.grad().to_vector()[0] == doctest::Approx(2e-20));
    Tensor y = full({16}, 1e-20).requires_grad_();
    sum(y * y * y).backward();
    CHECK(all_zero(y.grad()));  // 3y² = 3e-40: flushed
    CHECK(fp_mode() == caller_mode);
  }
#endif

  TEST_CASE("normal values: an LSTM's outputs and gradients are bit-identical with and without flushing") {
    FlushGuard guard;
    std::vector<std::vector<double>> runs[2];
    for (int flush = 0; flush < 2; ++flush) {
      set_flush_denormal(flush == 1);
      manual_seed(61);
      nn::LSTM lstm({.input_size = 8, .hidden_size = 16, .num_layers = 2});
      const Tensor x = randn({12, 4, 8});
      const Tensor out = lstm(x).output;
      sum(out * out).backward();
      runs[flush].push_back(out.to_vector());
      for (const Tensor& p : lstm.parameters()) runs[flush].push_back(p.grad().to_vector());
    }
    REQUIRE(runs[0].size() == runs[1].size());
    for (std::size_t i = 0; i < runs[0].size(); ++i) CHECK(runs[0][i] == runs[1][i]);
  }
}
