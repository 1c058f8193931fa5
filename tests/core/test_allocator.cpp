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

TEST_SUITE("core/allocator limits") {
  // A tensor larger than the machine is a MemoryError naming the op, the bytes, the shape and the dtype; it is
  // refused before malloc (with overcommit, malloc could grant it and the process would die touching the pages).
  TEST_CASE("a product larger than memory is a MemoryError naming the op and the size") {
    const Tensor a = zeros({1 << 20, 1});
    const Tensor b = zeros({1, 1 << 20});
    CHECK_THROWS_WITH_AS(matmul(a, b),
                         doctest::Contains("matmul: out of memory; got a request for 4398046511104 bytes (4096.00 GiB, "
                                           "a float32 tensor of shape [1048576, 1048576])"),
                         MemoryError);
    CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("add: out of memory; got a request for 4398046511104 bytes"),
                         MemoryError);
    // linear calls matmul inside: the error names the op the caller wrote.
    CHECK_THROWS_WITH_AS(linear(a, zeros({1 << 20, 1}, Dtype::float32), Tensor()),
                         doctest::Contains("linear: out of memory"), MemoryError);
    CHECK_THROWS_WITH_AS(zeros({1 << 20, 1 << 20}, Dtype::float64),
                         doctest::Contains("zeros: out of memory; got a request for 8796093022208 bytes"), MemoryError);
    CHECK_THROWS_AS(Tensor::empty({std::int64_t{1} << 45}), MemoryError);
  }

  TEST_CASE("the message states what the machine has, and the allocator works on afterwards") {
    const MemoryLimits m = memory_limits();
    CHECK(m.ram_bytes > 0);
    try {
      Tensor::empty({std::int64_t{1} << 44}, Dtype::float64);
      FAIL("expected a MemoryError");
    } catch (const MemoryError& e) {
      CHECK(std::string(e.what()).starts_with("Tensor::empty: out of memory;"));
      CHECK(std::string(e.what()).find("GiB of RAM") != std::string::npos);
    }
    Tensor ok = ones({1000});
    CHECK(sum(ok).item() == 1000.0);
  }

  TEST_CASE("a shape whose element count overflows is a ShapeError naming the op") {
    CHECK_THROWS_WITH_AS(Tensor::empty({std::int64_t{1} << 40, std::int64_t{1} << 40}),
                         "Shape: too many elements; got sizes [1099511627776, 1099511627776], expected at most 2^48 "
                         "elements",
                         ShapeError);
    CHECK_THROWS_WITH_AS(Tensor::empty({std::int64_t{1} << 62, 4}), doctest::Contains("Shape: too many elements"),
                         ShapeError);
    // Broadcasting [2^24, 1] against [1, 2^24 + 1] asks for more than 2^48 elements: the op says so.
    const Tensor a = Tensor::empty({std::int64_t{1} << 24, 1});
    const Tensor b = Tensor::empty({1, (std::int64_t{1} << 24) + 1});
    CHECK_THROWS_WITH_AS(add(a, b), doctest::Contains("add: too many elements; got sizes [16777216, 16777217]"),
                         ShapeError);
  }
}
