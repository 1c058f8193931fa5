// The caching allocator: steady-state reuse, empty_cache, and storage crossing threads.
#include <doctest/doctest.h>

#include <thread>
#include <vector>

#include <unroll/unroll.hpp>

using namespace unroll;

namespace {
void churn() {
  for (std::int64_t n : {1, 100, 1000, 10000, 250000}) {
    Tensor a = Tensor::empty({n});
    Tensor b = Tensor::empty({n}, Dtype::float64);
    Tensor c = Tensor::empty({n, 3}, Dtype::int64);
  }
}
}  // namespace

TEST_SUITE("core/allocator") {
  TEST_CASE("after a warm-up, the same allocations are all cache hits") {
    churn();
    const AllocatorStats before = allocator_stats();
    for (int i = 0; i < 50; ++i) churn();
    const AllocatorStats after = allocator_stats();
    CHECK(after.cache_misses == before.cache_misses);
    CHECK(after.cache_hits - before.cache_hits == 50 * 15);
    CHECK(after.cached_bytes == before.cached_bytes);
  }

  TEST_CASE("a freed block is reused for a nearby size in the same class") {
    { Tensor a = Tensor::empty({1000}); }
    const AllocatorStats before = allocator_stats();
    { Tensor b = Tensor::empty({990}); }  // within 25% of 1000 floats: same size class
    CHECK(allocator_stats().cache_misses == before.cache_misses);
  }

  TEST_CASE("empty_cache returns every cached block") {
    { Tensor a = Tensor::empty({4096}, Dtype::float64); }
    CHECK(allocator_stats().cached_bytes >= 4096 * 8);
    empty_cache();
    CHECK(allocator_stats().cached_bytes == 0);
    const AllocatorStats before = allocator_stats();
    { Tensor b = Tensor::empty({4096}, Dtype::float64); }
    CHECK(allocator_stats().cache_misses == before.cache_misses + 1);  // the cache really was emptied
  }

  TEST_CASE("storage freed on another thread does not crash and keeps its contents until then") {
    SUBCASE("allocated here, freed there") {
      std::vector<Tensor> ts;
      for (int i = 0; i < 8; ++i) ts.push_back(full({1000}, i, Dtype::float64));
      double seen = 0;
      std::thread worker([moved = std::move(ts), &seen]() mutable {
        for (const Tensor& t : moved) seen += t.to_vector()[999];
        moved.clear();
      });
      worker.join();
      CHECK(seen == 28.0);
    }
    SUBCASE("allocated there, freed here after the thread has exited") {
      std::vector<Tensor> ts;
      std::thread worker([&ts] {
        for (int i = 0; i < 8; ++i) ts.push_back(full({1000}, i, Dtype::float64));
        Tensor scratch = ones({5000});  // this thread's cache holds it when the thread exits
      });
      worker.join();
      double seen = 0;
      for (const Tensor& t : ts) seen += t.to_vector()[0];
      CHECK(seen == 28.0);
      const std::size_t cached = allocator_stats().cached_bytes;
      ts.clear();  // the blocks join this thread's cache
      CHECK(allocator_stats().cached_bytes > cached);
    }
    SUBCASE("many threads sharing one tensor, last reference dropped on a worker") {
      Tensor shared = randn({10000});
      std::vector<std::thread> workers;
      for (int i = 0; i < 4; ++i)
        workers.emplace_back([copy = shared] {
          Tensor local = copy;
          for (int k = 0; k < 100; ++k) local = unroll::tanh(copy) + 1.0;
        });
      shared = Tensor();
      for (auto& w : workers) w.join();
      CHECK_FALSE(shared.defined());
    }
  }
}
