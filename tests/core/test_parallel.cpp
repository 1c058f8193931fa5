// The threading primitives (core/parallel.hpp): parallel_for covers its range exactly once from any thread
// count, parallel_tasks runs every task and reports the lowest failing one, and kernels that split across threads
// give the serial result. Part of the ThreadSanitizer build (UNROLL_TSAN), with the allocator and shard suites.
#include <doctest/doctest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
// Restores the thread count a test changed.
struct ThreadCount {
  int saved = num_threads();
  ~ThreadCount() { set_num_threads(saved); }
};
}  // namespace

TEST_SUITE("core/parallel") {
  TEST_CASE("parallel_for writes every index exactly once, for any grain and thread count") {
    ThreadCount restore;
    for (int threads : {1, 2, 4}) {
      set_num_threads(threads);
      for (std::int64_t n : {0, 1, 999, 100000}) {
        for (std::int64_t grain : {1, 64, 4096}) {
          std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
          detail::parallel_for(n, grain, [&](std::int64_t s, std::int64_t e) {
            for (std::int64_t i = s; i < e; ++i) hits[static_cast<std::size_t>(i)].fetch_add(1);
          });
          bool once = true;
          for (auto& h : hits) once &= h.load() == 1;
          CHECK_MESSAGE(once, "threads ", threads, " n ", n, " grain ", grain);
        }
      }
    }
  }

  TEST_CASE("parallel_tasks runs every task, then rethrows the lowest-numbered failure") {
    ThreadCount restore;
    set_num_threads(2);
    std::vector<int> ran(16, 0);  // each task writes only its own element
    CHECK_THROWS_WITH_AS(detail::parallel_tasks(16,
                                                [&](std::int64_t i) {
                                                  ran[static_cast<std::size_t>(i)] = 1;
                                                  if (i == 11 || i == 5) throw ValueError("task " + std::to_string(i));
                                                }),
                         "task 5", ValueError);
    for (int r : ran) CHECK(r == 1);
  }

  TEST_CASE("tasks allocate and free tensors on their threads; results equal one thread's") {
    ThreadCount restore;
    set_num_threads(2);
    Generator gen(7);
    const Tensor x = randn({64, 300}, Dtype::float64, gen);
    std::vector<Tensor> parts(8);
    detail::parallel_tasks(8, [&](std::int64_t i) {
      // Temporaries live and die on the task's thread; the result goes back to the caller's.
      Tensor t = tanh(mul(narrow(x, 0, i * 8, 8), 2.0));
      parts[static_cast<std::size_t>(i)] = sum(exp(t), {1});
    });
    const Tensor whole = cat(std::span<const Tensor>(parts), 0);
    const Tensor serial = sum(exp(tanh(mul(x, 2.0))), {1});
    CHECK(whole.to_vector<double>() == serial.to_vector<double>());
  }

  TEST_CASE("threads of the caller's own: ops on separate tensors at once, and storage freed across threads") {
    ThreadCount restore;
    set_num_threads(2);
    std::vector<Tensor> made(4);
    std::vector<std::thread> workers;
    for (int w = 0; w < 4; ++w)
      workers.emplace_back([w, &made] {
        Generator gen(static_cast<std::uint64_t>(w));
        Tensor a = randn({200, 200}, Dtype::float32, gen);
        for (int k = 0; k < 5; ++k) a = tanh(matmul(a, a));
        made[static_cast<std::size_t>(w)] = a;  // freed later by the main thread
      });
    for (auto& t : workers) t.join();
    for (const Tensor& t : made) CHECK(t.shape() == Shape{200, 200});
    made.clear();  // blocks of exited threads are adopted or given back
    CHECK(sum(ones({10})).item() == 10.0);
  }
}
