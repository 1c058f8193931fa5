#pragma once
// Threading: the one place that decides thread counts and grain sizes. oneTBB runs the parallel loops;
// OpenBLAS gets its own thread count (set_num_threads sets both so they do not oversubscribe the cores).
#include <cstdint>
#include <type_traits>
#include <utility>

namespace unroll {

/// Uses n threads for TBB loops and BLAS calls (n <= 0: all available cores). Default: all cores.
void set_num_threads(int n);
/// The thread count in effect.
int num_threads();

namespace detail {

/// A non-owning reference to a callable (no allocation, unlike std::function).
template <class Sig> class FunctionRef;
template <class R, class... A>
class FunctionRef<R(A...)> {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, FunctionRef>>>
  FunctionRef(F&& f) : obj_(const_cast<void*>(static_cast<const void*>(&f))),  // NOLINT: implicit by design
                       call_([](void* o, A... a) -> R { return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<A>(a)...); }) {}
  R operator()(A... a) const { return call_(obj_, std::forward<A>(a)...); }

 private:
  void* obj_;
  R (*call_)(void*, A...);
};

/// Elementwise kernels split across threads only above this many elements (measured: see bench/RESULTS.md;
/// a variable only so that unroll-bench can sweep it).
inline std::int64_t kElementwiseGrain = 1 << 16;

void parallel_for_impl(std::int64_t n, std::int64_t grain, FunctionRef<void(std::int64_t, std::int64_t)> body);

/// Calls body(begin, end) over [0, n) in chunks of at least `grain`, in parallel when n > grain.
template <class F>
inline void parallel_for(std::int64_t n, std::int64_t grain, F&& body) {
  if (n <= grain) {
    if (n > 0) body(std::int64_t{0}, n);
    return;
  }
  parallel_for_impl(n, grain, FunctionRef<void(std::int64_t, std::int64_t)>(body));
}

}  // namespace detail
}  // namespace unroll
