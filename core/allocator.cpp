#include "allocator.hpp"

#include <bit>
#include <cstdint>
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

}  // namespace

// The part of a thread's cache that other threads may touch; heap-allocated because blocks homed here can
// outlive the thread.
struct CacheHome {
  // Blocks of this thread freed by other threads: a lock-free stack (others push with a CAS; the owner takes
  // the whole list with one exchange, so there is no ABA problem). kDead once the owning thread's cache is
  // gone: then a freeing thread adopts the block into its own cache.
  std::atomic<std::uintptr_t> remote{0};
  // One for the owning thread plus one per block homed here that has not gone back to the system; whoever
  // drops the last one deletes this.
  std::atomic<std::int64_t> refs{1};
};

namespace {
constexpr std::uintptr_t kDead = 1;
static_assert(sizeof(Storage) <= Storage::kHeaderBytes);

std::atomic<std::size_t> system_bytes{0};  // for AllocatorStats: every thread's blocks, used or cached

void unref(CacheHome* h) {
  if (h->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete h;
}

Storage* system_allocate(std::size_t bytes) {
  void* p = std::aligned_alloc(kAlign, bytes);
  if (p == nullptr) throw std::bad_alloc();
  system_bytes.fetch_add(bytes, std::memory_order_relaxed);
  auto* s = static_cast<Storage*>(p);
  s->capacity = bytes - Storage::kHeaderBytes;
  s->home = nullptr;
  s->next_free = nullptr;
  return s;
}
void system_free(Storage* s) {
  CacheHome* h = s->home;
  system_bytes.fetch_sub(s->capacity + Storage::kHeaderBytes, std::memory_order_relaxed);
  std::free(s);
  if (h != nullptr) unref(h);
}

struct Cache {
  std::vector<Storage*> free[kNumClasses];
  std::size_t cached_bytes = 0;
  std::size_t hits = 0, misses = 0;
  CacheHome* home = new CacheHome;
  ~Cache();
  // Keeps a block of this thread for reuse (or gives it back to the system beyond the cap).
  void put(Storage* s) {
    const std::size_t bytes = class_bytes(s->size_class);
    if (cached_bytes + bytes > kMaxCachedBytes) {
      system_free(s);
      return;
    }
    free[s->size_class].push_back(s);
    cached_bytes += bytes;
  }
  // Takes back the blocks other threads freed since the last call.
  void take_remote() {
    if (home->remote.load(std::memory_order_relaxed) == 0) return;
    auto* s = reinterpret_cast<Storage*>(home->remote.exchange(0, std::memory_order_acquire));
    while (s != nullptr) {
      Storage* next = s->next_free;
      put(s);
      s = next;
    }
  }
  void clear() {
    take_remote();
    for (auto& list : free) {
      for (Storage* s : list) system_free(s);
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
  // Close the remote list first: a block freed elsewhere from now on is adopted by the freeing thread.
  auto* s = reinterpret_cast<Storage*>(home->remote.exchange(kDead, std::memory_order_acq_rel));
  while (s != nullptr) {
    Storage* next = s->next_free;
    system_free(s);
    s = next;
  }
  for (auto& list : free) {
    for (Storage* b : list) system_free(b);
    list.clear();
  }
  cached_bytes = 0;
  cache_destroyed = true;
  unref(home);  // the thread's own reference; blocks still in use elsewhere keep it alive
}

}  // namespace

Storage* storage_allocate(std::size_t nbytes) {
  const std::size_t total = nbytes + Storage::kHeaderBytes;
  const int c = size_class_of(total);
  if (cache_destroyed) {  // no cache any more: a plain block, released with free()
    Storage* s = system_allocate((total + kAlign - 1) / kAlign * kAlign);
    s->size_class = kNumClasses;  // "uncached"
    s->refs.store(1, std::memory_order_relaxed);
    return s;
  }
  Cache& k = cache();
  Storage* s = nullptr;
  if (c < kNumClasses) {
    if (k.free[c].empty()) k.take_remote();
    if (!k.free[c].empty()) {
      s = k.free[c].back();
      k.free[c].pop_back();
      k.cached_bytes -= class_bytes(c);
      ++k.hits;
    }
  }
  if (s == nullptr) {
    s = system_allocate(c < kNumClasses ? class_bytes(c) : (total + kAlign - 1) / kAlign * kAlign);
    s->size_class = c;
    if (c < kNumClasses) {
      s->home = k.home;
      k.home->refs.fetch_add(1, std::memory_order_relaxed);
    }
    ++k.misses;
  }
  s->refs.store(1, std::memory_order_relaxed);
  return s;
}

void Storage::release() {
  if (refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  CacheHome* const h = home;
  if (h == nullptr) {  // uncached
    system_free(this);
    return;
  }
  if (!cache_destroyed) {
    Cache& k = cache();
    if (h == k.home) {
      k.put(this);
      return;
    }
  }
  // Another thread's block: push it onto that thread's remote list.
  std::uintptr_t head = h->remote.load(std::memory_order_relaxed);
  while (head != kDead) {
    next_free = reinterpret_cast<Storage*>(head);
    if (h->remote.compare_exchange_weak(head, reinterpret_cast<std::uintptr_t>(this), std::memory_order_release,
                                        std::memory_order_relaxed))
      return;
  }
  // Its thread has exited: adopt the block here, or give it back if this thread's cache is gone too.
  if (cache_destroyed) {
    system_free(this);
    return;
  }
  Cache& k = cache();
  k.home->refs.fetch_add(1, std::memory_order_relaxed);
  home = k.home;
  unref(h);
  k.put(this);
}

}  // namespace detail

AllocatorStats allocator_stats() {
  auto& k = detail::cache();
  k.take_remote();  // blocks other threads gave back count as cached here
  return {k.cached_bytes, k.hits, k.misses, detail::system_bytes.load(std::memory_order_relaxed)};
}
void empty_cache() { detail::cache().clear(); }

}  // namespace unroll
