#pragma once
// Threading: the one place that decides thread counts and grain sizes. oneTBB runs the parallel loops;
// OpenBLAS gets its own thread count (set_num_threads sets both so they do not oversubscribe the cores).
// Two levels of parallelism, never nested: batch shards (parallel_tasks, used by autograd/shard.hpp) each
// run on one thread with BLAS single-threaded and elementwise loops serial; outside shards, BLAS and the
// elementwise loops may use every thread. docs/DESIGN.md, "Threading", has the whole model.
#include <cstdint>
#include <type_traits>
#include <utility>

#include "denormal.hpp"

namespace unroll {

/// Uses n threads for TBB loops and BLAS calls (n <= 0: all available cores). Default: all cores.
void set_num_threads(int n);
/// The thread count in effect.
int num_threads();

namespace detail {

/// A non-owning reference to a callable (no allocation, unlike std::function).
template <class Sig>
class FunctionRef;
template <class R, class... A>
class FunctionRef<R(A...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f)
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),  // NOLINT: implicit by design
        call_([](void* o, A... a) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<A>(a)...);
        }) {}
  R operator()(A... a) const { return call_(obj_, std::forward<A>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

/// Elementwise kernels split across threads only above this many elements (measured: see bench/RESULTS.md;
/// a variable only so that unroll-bench can sweep it).
inline std::int64_t kElementwiseGrain = 1 << 16;

void parallel_for_impl(std::int64_t n, std::int64_t grain, FunctionRef<void(std::int64_t, std::int64_t)> body);

/// While one lives, parallel_for on this thread runs serially. Batch shards set it: every core already runs
/// a shard, so splitting a kernel further would only add task overhead (and let a waiting thread start
/// another shard's work in the middle of this one).
class SerialRegion {
 public:
  SerialRegion();
  ~SerialRegion();
  SerialRegion(const SerialRegion&) = delete;
  SerialRegion& operator=(const SerialRegion&) = delete;
};
/// True inside a SerialRegion on the calling thread.
bool in_serial_region();

/// Runs task(0) ... task(n-1) as n TBB tasks (up to num_threads() at once), each inside a SerialRegion, with
/// OpenBLAS limited to one thread until all have finished. Every task runs even if another throws; then the
/// exception of the lowest-numbered failing task is rethrown, so what the caller sees does not depend on
/// thread timing. n == 1 runs on the calling thread with no limits (nothing to share the cores with).
void parallel_tasks(std::int64_t n, FunctionRef<void(std::int64_t)> task);

/// Calls body(begin, end) over [0, n) in chunks of at least `grain`, in parallel when n > grain.
/// Every chunk runs inside a DenormalScope (core/denormal.hpp), on the caller's thread or a worker's.
template <class F>
inline void parallel_for(std::int64_t n, std::int64_t grain, F&& body) {
  if (n <= grain) {
    if (n > 0) {
      const DenormalScope denormals;
      body(std::int64_t{0}, n);
    }
    return;
  }
  parallel_for_impl(n, grain, FunctionRef<void(std::int64_t, std::int64_t)>(body));
}

}  // namespace detail
}  // namespace unroll
