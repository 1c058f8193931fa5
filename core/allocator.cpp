#include "allocator.hpp"

#include <bit>
#include <cstdlib>
#include <new>
#include <vector>

namespace unroll {
namespace detail {
namespace {

constexpr std::size_t kAlign = 64;
constexpr int kSubSteps = 4;                       // size classes per power of two
constexpr int kNumClasses = 64 * kSubSteps;
constexpr std::size_t kMaxCachedBytes = std::size_t{2} << 30;  // per thread; beyond this, free to the system

// Size class of a block of `total` bytes (header included) and the block size it stands for.
int size_class_of(std::size_t total) {
  if (total <= 256) return static_cast<int>((total + kAlign - 1) / kAlign);  // classes 1..4: 64-byte steps
  const int e = std::bit_width(total - 1) - 1;  // 2^e < total <= 2^(e+1)
  const std::size_t step = (std::size_t{1} << e) / kSubSteps;
  const std::size_t sub = (total - (std::size_t{1} << e) + step - 1) / step;  // 1..kSubSteps
  return e * kSubSteps + static_cast<int>(sub);
}
std::size_t class_bytes(int c) {
  if (c <= 4) return static_cast<std::size_t>(c) * kAlign;
  const int e = (c - 1) / kSubSteps;
  const int sub = c - e * kSubSteps;
  return (std::size_t{1} << e) + static_cast<std::size_t>(sub) * ((std::size_t{1} << e) / kSubSteps);
}

struct Cache {
  std::vector<Storage*> free[kNumClasses];
  std::size_t cached_bytes = 0;
  std::size_t hits = 0, misses = 0;
  ~Cache();
  void clear() {
    for (auto& list : free) {
      for (Storage* s : list) std::free(s);
      list.clear();
    }
    cached_bytes = 0;
  }
};

// Set once the thread's cache has been destroyed (thread teardown, or static destructors after the main
// thread's thread_locals): from then on storage goes straight to malloc/free, never to the dead cache.
thread_local bool cache_destroyed = false;
Cache& cache() {
  thread_local Cache c;
  return c;
}
Cache::~Cache() {
  clear();
  cache_destroyed = true;
}

}  // namespace

Storage* storage_allocate(std::size_t nbytes) {
  const std::size_t total = nbytes + Storage::kHeaderBytes;
  const int c = size_class_of(total);
  if (cache_destroyed) {  // no cache any more: a plain block, released with free()
    const std::size_t bytes = (total + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, bytes);
    if (p == nullptr) throw std::bad_alloc();
    auto* s = static_cast<Storage*>(p);
    s->size_class = kNumClasses;  // "uncached"
    s->capacity = bytes - Storage::kHeaderBytes;
    s->refs.store(1, std::memory_order_relaxed);
    return s;
  }
  Cache& k = cache();
  Storage* s;
  if (c < kNumClasses && !k.free[c].empty()) {
    s = k.free[c].back();
    k.free[c].pop_back();
    k.cached_bytes -= class_bytes(c);
    ++k.hits;
  } else {
    const std::size_t bytes = c < kNumClasses ? class_bytes(c) : (total + kAlign - 1) / kAlign * kAlign;
    void* p = std::aligned_alloc(kAlign, bytes);
    if (p == nullptr) throw std::bad_alloc();
    s = static_cast<Storage*>(p);
    s->size_class = c;
    s->capacity = bytes - Storage::kHeaderBytes;
    ++k.misses;
  }
  s->refs.store(1, std::memory_order_relaxed);
  return s;
}

void Storage::release() {
  if (refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  const int c = size_class;
  if (cache_destroyed || c >= kNumClasses) {
    std::free(this);
    return;
  }
  Cache& k = cache();
  const std::size_t bytes = class_bytes(c);
  if (k.cached_bytes + bytes > kMaxCachedBytes) {
    std::free(this);
    return;
  }
  k.free[c].push_back(this);
  k.cached_bytes += bytes;
}

}  // namespace detail

AllocatorStats allocator_stats() {
  auto& k = detail::cache();
  return {k.cached_bytes, k.hits, k.misses};
}
void empty_cache() { detail::cache().clear(); }

}  // namespace unroll
