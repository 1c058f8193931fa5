#include "parallel.hpp"

#include <algorithm>
#include <memory>
#include <mutex>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>

#include "blas.hpp"

namespace unroll {
namespace {
std::mutex control_mutex;
std::unique_ptr<tbb::global_control> control;  // caps TBB's worker count while it lives
int threads_in_effect = 0;                      // 0: never set, TBB's default (all cores)
}  // namespace

void set_num_threads(int n) {
  const int cores = tbb::info::default_concurrency();
  if (n <= 0) n = cores;
  std::lock_guard lock(control_mutex);
  control.reset();
  control = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, n);
  threads_in_effect = n;
  detail::blas_set_num_threads(n);
}

int num_threads() {
  std::lock_guard lock(control_mutex);
  return threads_in_effect > 0 ? threads_in_effect
                               : static_cast<int>(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
}

namespace detail {
void parallel_for_impl(std::int64_t n, std::int64_t grain, FunctionRef<void(std::int64_t, std::int64_t)> body) {
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, n, grain),
                    [&](const tbb::blocked_range<std::int64_t>& r) { body(r.begin(), r.end()); });
}
}  // namespace detail
}  // namespace unroll
