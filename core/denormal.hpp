#pragma once
// Subnormal floats (|x| < 1.2e-38 in float32) take a microcode slow path in every multiply and add on x86:
// a diverging run whose saturated gates produce them trains 50x slower (bench/RESULTS.md, "Denormals").
// unroll therefore flushes them to zero in every thread it runs work on — flush-to-zero (FTZ: a subnormal
// result becomes 0) and denormals-are-zero (DAZ: a subnormal input reads as 0) — as TensorFlow does in its CPU
// threads; set_flush_denormal(false) turns that off (PyTorch's torch.set_flush_denormal, the other way round).
//
// Where it applies: the caller's thread while an unroll kernel, GEMM or backward() runs (the thread's own
// MXCSR is restored when the call returns, so the caller's arithmetic outside unroll keeps IEEE semantics),
// and every TBB worker and batch shard while it runs unroll's work. OpenBLAS's own worker threads (used by a
// GEMM when BLAS runs multi-threaded outside batch shards) are created by OpenBLAS when it loads and keep the
// mode they started with; single-threaded BLAS (one thread, or inside shards) runs on a covered thread.
// x86-64 only (SSE's MXCSR); elsewhere set_flush_denormal is accepted and does nothing.
#include <atomic>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define UNROLL_HAS_MXCSR 1
#else
#define UNROLL_HAS_MXCSR 0
#endif

namespace unroll {

/// Whether unroll flushes subnormals to zero in the threads it runs work on (default: true).
void set_flush_denormal(bool on);
bool flush_denormal();

namespace detail {
inline std::atomic<bool> flush_denormal_on{true};

/// Sets this thread's FTZ/DAZ to the library setting for its lifetime and restores the previous mode; costs one
/// register read when the mode is already right (nested scopes, a worker that ran one before).
class DenormalScope {
 public:
#if UNROLL_HAS_MXCSR
  static constexpr unsigned kFtzDaz = 0x8040;  // MXCSR bit 15 (FTZ) | bit 6 (DAZ)
  DenormalScope() {
    const unsigned now = _mm_getcsr();
    const unsigned want = flush_denormal_on.load(std::memory_order_relaxed) ? (now | kFtzDaz) : (now & ~kFtzDaz);
    if (want != now) {
      saved_ = now;
      changed_ = true;
      _mm_setcsr(want);
    }
  }
  // The whole register goes back, so floating-point exception flags raised inside unroll's call are dropped.
  ~DenormalScope() {
    if (changed_) _mm_setcsr(saved_);
  }

 private:
  unsigned saved_ = 0;
  bool changed_ = false;
#endif
 public:
  DenormalScope(const DenormalScope&) = delete;
  DenormalScope& operator=(const DenormalScope&) = delete;
};
}  // namespace detail

}  // namespace unroll
