#include "parallel.hpp"

#include <algorithm>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/info.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_group.h>

#include "blas.hpp"

// ThreadSanitizer sees synchronisation only in instrumented code, and Debian's oneTBB is not instrumented: the
// hand-off of a task to a worker, and the worker finishing before wait() returns, are invisible to it, so every
// task's first read of its captures would be reported as a race. Under -fsanitize=thread (UNROLL_TSAN) these
// annotations state the two edges oneTBB guarantees; in every other build they are nothing.
#if defined(__SANITIZE_THREAD__)
#define UNROLL_TSAN_ANNOTATE 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNROLL_TSAN_ANNOTATE 1
#endif
#endif
#ifdef UNROLL_TSAN_ANNOTATE
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace unroll {
namespace {
#ifdef UNROLL_TSAN_ANNOTATE
// Sync objects for the annotations: globals, so that reaching them reads no capture of the task.
char tasks_start, tasks_end;
inline void happens_before(char& edge) { __tsan_release(&edge); }
inline void happens_after(char& edge) { __tsan_acquire(&edge); }
#else
[[maybe_unused]] char tasks_start, tasks_end;
inline void happens_before(char&) {}
inline void happens_after(char&) {}
#endif

std::mutex control_mutex;
std::unique_ptr<tbb::global_control> control;  // caps TBB's worker count while it lives
int threads_in_effect = 0;                     // 0: never set, TBB's default (all cores)
// OpenBLAS's thread count is one process-wide setting: while any parallel_tasks region runs it is 1, and
// the count to restore when the last region ends is kept here (set_num_threads updates it meanwhile).
int blas_limiters = 0;
int blas_restore = 0;
thread_local int serial_depth = 0;

class BlasSingleThreaded {
 public:
  BlasSingleThreaded() {
    std::lock_guard lock(control_mutex);
    if (blas_limiters++ == 0) {
      blas_restore = detail::blas_num_threads();
      detail::blas_set_num_threads(1);
    }
  }
  ~BlasSingleThreaded() {
    std::lock_guard lock(control_mutex);
    if (--blas_limiters == 0) detail::blas_set_num_threads(blas_restore);
  }
  BlasSingleThreaded(const BlasSingleThreaded&) = delete;
  BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;
};
}  // namespace

void set_num_threads(int n) {
  const int cores = tbb::info::default_concurrency();
  if (n <= 0) n = cores;
  std::lock_guard lock(control_mutex);
  control.reset();
  control = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, n);
  threads_in_effect = n;
  if (blas_limiters > 0)
    blas_restore = n;  // shards are running: apply when they finish
  else
    detail::blas_set_num_threads(n);
}

int num_threads() {
  std::lock_guard lock(control_mutex);
  return threads_in_effect > 0
             ? threads_in_effect
             : static_cast<int>(tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism));
}

void set_flush_denormal(bool on) { detail::flush_denormal_on.store(on, std::memory_order_relaxed); }
bool flush_denormal() { return detail::flush_denormal_on.load(std::memory_order_relaxed); }

namespace detail {
namespace {
// task(0) on the calling thread and task(1) ... task(n-1) as oneTBB tasks; returns when all have run. The tasks
// are built first (defer) and spawned after the "start" edge, so that under ThreadSanitizer the writes that
// build them happen before the workers read them.
template <class F>
void run_as_tasks(std::int64_t n, const F& task) {
  tbb::task_group group;
  std::vector<tbb::task_handle> handles;
  handles.reserve(static_cast<std::size_t>(n - 1));
  for (std::int64_t i = 1; i < n; ++i)
    handles.push_back(group.defer([&task, i] {
      happens_after(tasks_start);
      task(i);
      happens_before(tasks_end);
    }));
  happens_before(tasks_start);
  for (tbb::task_handle& h : handles) group.run(std::move(h));
  task(0);  // the calling thread takes a share instead of only waiting
  group.wait();
  happens_after(tasks_end);
}
}  // namespace

void parallel_for_impl(std::int64_t n, std::int64_t grain, FunctionRef<void(std::int64_t, std::int64_t)> body) {
  if (serial_depth > 0) {
    const DenormalScope denormals;
    body(0, n);
    return;
  }
#ifdef UNROLL_TSAN_ANNOTATE
  // tbb::parallel_for builds and spawns its tasks inside oneTBB, where no annotation can reach; under
  // ThreadSanitizer the same chunks (at least `grain` each) run as annotated tasks instead.
  const std::int64_t chunks = std::min<std::int64_t>(n / grain, 4 * num_threads());
  run_as_tasks(chunks, [&](std::int64_t c) {
    const DenormalScope denormals;
    body(n * c / chunks, n * (c + 1) / chunks);
  });
#else
  tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, n, grain), [&](const tbb::blocked_range<std::int64_t>& r) {
    const DenormalScope denormals;
    body(r.begin(), r.end());
  });
#endif
}

SerialRegion::SerialRegion() { ++serial_depth; }
SerialRegion::~SerialRegion() { --serial_depth; }
bool in_serial_region() { return serial_depth > 0; }

void parallel_tasks(std::int64_t n, FunctionRef<void(std::int64_t)> task) {
  if (n <= 0) return;
  if (n == 1) {
    const DenormalScope denormals;
    task(0);
    return;
  }
  // Each task keeps its own exception: a task_group would cancel the tasks not yet started after the first
  // throw, and which one that is depends on timing.
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
  auto run = [&](std::int64_t i) {
    SerialRegion serial;
    const DenormalScope denormals;
    try {
      task(i);
    } catch (...) {
      errors[static_cast<std::size_t>(i)] = std::current_exception();
    }
  };
  {
    BlasSingleThreaded blas;
    run_as_tasks(n, run);
  }
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}
}  // namespace detail
}  // namespace unroll
