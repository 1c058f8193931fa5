#include "allocator.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <new>

#include <sys/mman.h>
#include <sys/sysinfo.h>

namespace unroll {
namespace detail {

constinit thread_local FreeLists* tls_free_lists = nullptr;
constinit thread_local LiveBytes tls_live_bytes{};

namespace {

constexpr std::size_t kAlign = kBlockAlign;
constexpr int kNumClasses = kNumSizeClasses;

// The block size (header included) that size class c stands for.
std::size_t class_bytes(int c) {
  if (c <= 4) return static_cast<std::size_t>(c) * kAlign;
  const int e = (c - 1) / kSizeSubSteps;
  const int sub = c - e * kSizeSubSteps;
  return (std::size_t{1} << e) + static_cast<std::size_t>(sub) * ((std::size_t{1} << e) / kSizeSubSteps);
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

constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;
constexpr std::size_t kHugeBlockBytes = std::size_t{8} << 20;

// Null when the block cannot be had (see storage_allocate).
Storage* system_allocate(std::size_t bytes) {
  static const std::size_t limit = [] {
    const MemoryLimits m = memory_limits();
    return m.ram_bytes == 0 ? SIZE_MAX : m.ram_bytes + m.swap_bytes;  // 0: unknown, leave it to malloc
  }();
  if (bytes > limit) return nullptr;
  // A large block on 2 MB boundaries, with the kernel asked for transparent huge pages: its first touch then
  // faults in (and zeroes) 2 MB at a time instead of 4 KB, 512 times fewer faults (a 10,000-step LSTM's
  // backward spent 15% of its time in them; bench/RESULTS.md).
  const bool huge = bytes >= kHugeBlockBytes;
  if (huge) bytes = (bytes + kHugePageBytes - 1) / kHugePageBytes * kHugePageBytes;
  void* p = std::aligned_alloc(huge ? kHugePageBytes : kAlign, bytes);
  if (p == nullptr) return nullptr;
  if (huge) madvise(p, bytes, MADV_HUGEPAGE);  // advice only: ignored where THP is off
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
  FreeLists lists;  // the inline fast paths (allocator.hpp) use these through tls_free_lists
  std::size_t misses = 0;
  Cache() {
    lists.home = new CacheHome;
    tls_free_lists = &lists;
  }
  ~Cache();
  // Keeps a block of this thread for reuse (or gives it back to the system beyond the cap).
  void put(Storage* s) {
    const std::size_t bytes = s->capacity + Storage::kHeaderBytes;
    if (lists.cached_bytes + bytes > lists.cache_limit) {
      system_free(s);
      return;
    }
    s->next_free = lists.head[s->size_class];
    lists.head[s->size_class] = s;
    lists.cached_bytes += bytes;
  }
  // Takes back the blocks other threads freed since the last call.
  void take_remote() {
    if (lists.home->remote.load(std::memory_order_relaxed) == 0) return;
    auto* s = reinterpret_cast<Storage*>(lists.home->remote.exchange(0, std::memory_order_acquire));
    while (s != nullptr) {
      Storage* next = s->next_free;
      tls_live_bytes.give(s->capacity + Storage::kHeaderBytes);  // this thread's block, back home now
      put(s);
      s = next;
    }
  }
  void free_lists() {
    for (Storage*& head : lists.head) {
      while (head != nullptr) {
        Storage* next = head->next_free;
        system_free(head);
        head = next;
      }
    }
    lists.cached_bytes = 0;
  }
  void clear() {
    take_remote();
    free_lists();
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
  tls_free_lists = nullptr;  // the inline fast paths stop here
  // Close the remote list first: a block freed elsewhere from now on is adopted by the freeing thread.
  auto* s = reinterpret_cast<Storage*>(lists.home->remote.exchange(kDead, std::memory_order_acq_rel));
  while (s != nullptr) {
    Storage* next = s->next_free;
    system_free(s);
    s = next;
  }
  free_lists();
  cache_destroyed = true;
  unref(lists.home);  // the thread's own reference; blocks still in use elsewhere keep it alive
}

}  // namespace

Storage* storage_allocate_slow(std::size_t nbytes) {
  const std::size_t total = nbytes + Storage::kHeaderBytes;
  const int c = size_class_of(total);
  if (cache_destroyed) {  // no cache any more: a plain block, released with free()
    Storage* s = system_allocate((total + kAlign - 1) / kAlign * kAlign);
    if (s == nullptr) return nullptr;
    s->size_class = kNumClasses;  // "uncached"
    s->refs.store(1, std::memory_order_relaxed);
    tls_live_bytes.take(s->capacity + Storage::kHeaderBytes);
    return s;
  }
  Cache& k = cache();
  if (c < kNumClasses) {
    k.take_remote();
    if (k.lists.head[c] != nullptr) return storage_allocate(nbytes);  // the fast path now finds one
  }
  Storage* s = system_allocate(c < kNumClasses ? class_bytes(c) : (total + kAlign - 1) / kAlign * kAlign);
  if (s == nullptr) {
    // The cached blocks of this thread may be what stands in the way: give them back and try once more.
    k.free_lists();
    s = system_allocate(c < kNumClasses ? class_bytes(c) : (total + kAlign - 1) / kAlign * kAlign);
    if (s == nullptr) return nullptr;
  }
  s->size_class = c;
  if (c < kNumClasses) {
    s->home = k.lists.home;
    k.lists.home->refs.fetch_add(1, std::memory_order_relaxed);
  }
  ++k.misses;
  s->refs.store(1, std::memory_order_relaxed);
  tls_live_bytes.take(s->capacity + Storage::kHeaderBytes);
  static const std::size_t max_limit = std::max(kMinCacheLimit, memory_limits().ram_bytes / 2);
  k.lists.cache_limit = std::clamp(static_cast<std::size_t>(tls_live_bytes.high), kMinCacheLimit, max_limit);
  return s;
}

// The last reference is gone and the fast path (this thread's own block, room in its cache) did not apply.
void storage_release_slow(Storage* s) {
  CacheHome* const h = s->home;
  if (h == nullptr) {  // uncached
    tls_live_bytes.give(s->capacity + Storage::kHeaderBytes);
    system_free(s);
    return;
  }
  if (!cache_destroyed) {
    Cache& k = cache();
    if (h == k.lists.home) {
      tls_live_bytes.give(s->capacity + Storage::kHeaderBytes);
      k.put(s);
      return;
    }
  }
  // Another thread's block: push it onto that thread's remote list (that thread counts it as given back when
  // it takes it from there).
  std::uintptr_t head = h->remote.load(std::memory_order_relaxed);
  while (head != kDead) {
    s->next_free = reinterpret_cast<Storage*>(head);
    if (h->remote.compare_exchange_weak(head, reinterpret_cast<std::uintptr_t>(s), std::memory_order_release,
                                        std::memory_order_relaxed))
      return;
  }
  // Its thread has exited: adopt the block here, or give it back if this thread's cache is gone too.
  if (cache_destroyed) {
    system_free(s);
    return;
  }
  Cache& k = cache();
  k.lists.home->refs.fetch_add(1, std::memory_order_relaxed);
  s->home = k.lists.home;
  unref(h);
  k.put(s);
}

}  // namespace detail

AllocatorStats allocator_stats() {
  auto& k = detail::cache();
  k.take_remote();  // blocks other threads gave back count as cached here
  return {k.lists.cached_bytes, k.lists.hits, k.misses, detail::system_bytes.load(std::memory_order_relaxed)};
}
void empty_cache() { detail::cache().clear(); }

ThreadMemory thread_memory() {
  if (!detail::cache_destroyed) detail::cache().take_remote();  // this thread's blocks others have freed
  return {detail::tls_live_bytes.now, detail::tls_live_bytes.peak};
}
void reset_thread_memory_peak() { detail::tls_live_bytes.peak = detail::tls_live_bytes.now; }

MemoryLimits memory_limits() {
  static const MemoryLimits limits = [] {
    struct sysinfo info {};
    if (sysinfo(&info) != 0) return MemoryLimits{};
    const auto unit = static_cast<std::size_t>(info.mem_unit);
    return MemoryLimits{.ram_bytes = info.totalram * unit, .swap_bytes = info.totalswap * unit};
  }();
  return limits;
}

}  // namespace unroll
