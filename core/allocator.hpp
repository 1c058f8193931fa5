#pragma once
// Caching allocator for tensor storage. Blocks are rounded to size classes (4 per power of two,
// so at most 25% slack) and returned to a per-thread free list instead of to malloc, so the hot path of
// an op never calls malloc or touches fresh pages. The header of each block is its Storage record.
// A block freed on another thread than the one that allocated it goes back to that thread (batch shards
// allocate on worker threads and the caller frees): otherwise memory would drift, step after step, from
// the threads that allocate into the caches of the threads that free.
// The fast paths (a block of a cached class taken from, or given back to, this thread's own list) are
// inline: every op allocates its output, and a small recurrent step runs thousands of ops.
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace unroll {
namespace detail {

struct CacheHome;  // where a thread's cache takes back blocks that other threads free (allocator.cpp)

/// The header of a storage block; the data follows at kStorageHeader bytes (64-byte aligned).
struct Storage {
  std::atomic<std::int32_t> refs;
  std::int32_t size_class;
  std::size_t capacity;  ///< usable data bytes
  CacheHome* home;       ///< the cache this block returns to; null: freed straight to the system
  Storage* next_free;    ///< link while the block waits in a free list
  void* data() { return reinterpret_cast<char*>(this) + kHeaderBytes; }
  static constexpr std::size_t kHeaderBytes = 64;

  void retain() { refs.fetch_add(1, std::memory_order_relaxed); }
  inline void release();  ///< returns the block to the cache when the last reference goes
};

constexpr std::size_t kBlockAlign = 64;
constexpr int kSizeSubSteps = 4;  // size classes per power of two (a power of two itself)
constexpr int kNumSizeClasses = 64 * kSizeSubSteps;
// What a thread's cache may hold: at least kMinCacheLimit, and as much as the most the thread has ever had in use
// (a training step that needed that much once will need it again: its large blocks then come back from the
// cache instead of as fresh pages the kernel must fault in and zero), but no more than half the RAM (or
// kMinCacheLimit, where that is more).
constexpr std::size_t kMinCacheLimit = std::size_t{2} << 30;

/// Size class of a block of `total` bytes (header included).
inline int size_class_of(std::size_t total) {
  if (total <= 256) return static_cast<int>((total + kBlockAlign - 1) / kBlockAlign);  // classes 1..4: 64-byte steps
  const int e = std::bit_width(total - 1) - 1;                                         // 2^e < total <= 2^(e+1), e >= 8
  const int step_log2 = e - std::countr_zero(static_cast<unsigned>(kSizeSubSteps));    // a shift, not a division
  const std::size_t sub = (total - (std::size_t{1} << e) + (std::size_t{1} << step_log2) - 1) >> step_log2;  // 1..4
  return e * kSizeSubSteps + static_cast<int>(sub);
}

/// The calling thread's free lists (owned by its cache in allocator.cpp): intrusive stacks through
/// Storage::next_free, one per size class.
struct FreeLists {
  Storage* head[kNumSizeClasses] = {};
  std::size_t cached_bytes = 0;
  std::size_t cache_limit = kMinCacheLimit;  ///< see kMinCacheLimit; raised by the slow path
  std::size_t hits = 0;
  CacheHome* home = nullptr;
};
/// Bytes of tensor storage blocks the calling thread has taken and not yet had back, and the highest value that
/// reached since the last reset_thread_memory_peak(): a measured, deterministic peak for one thread's work. A
/// block is charged to the thread whose cache it belongs to: one freed on another thread (a batch shard's
/// block freed by the caller) counts as given back when its home thread takes it back from its remote list.
struct LiveBytes {
  std::int64_t now = 0;
  std::int64_t peak = 0;  ///< since the last reset_thread_memory_peak()
  std::int64_t high = 0;  ///< ever (sets the cache's limit)
  void take(std::size_t bytes) {
    now += static_cast<std::int64_t>(bytes);
    if (now > peak) {
      peak = now;
      if (now > high) high = now;
    }
  }
  void give(std::size_t bytes) { now -= static_cast<std::int64_t>(bytes); }
};
extern constinit thread_local LiveBytes tls_live_bytes;

/// Null until the thread's cache is created (by its first slow-path allocation) and after it is destroyed.
extern constinit thread_local FreeLists* tls_free_lists;

Storage* storage_allocate_slow(std::size_t nbytes);
void storage_release_slow(Storage* s);

/// A block with room for `nbytes` of data and one reference, or null when it does not fit in memory (the system
/// refused it, or it is larger than RAM and swap together: with Linux's overcommit such a request could be granted
/// and the process killed when the pages are touched). Contents are uninitialised.
inline Storage* storage_allocate(std::size_t nbytes) {
  if (FreeLists* f = tls_free_lists) {
    const int c = size_class_of(nbytes + Storage::kHeaderBytes);
    if (c < kNumSizeClasses) {
      if (Storage* s = f->head[c]) {
        f->head[c] = s->next_free;
        f->cached_bytes -= s->capacity + Storage::kHeaderBytes;
        ++f->hits;
        s->refs.store(1, std::memory_order_relaxed);
        tls_live_bytes.take(s->capacity + Storage::kHeaderBytes);
        return s;
      }
    }
  }
  return storage_allocate_slow(nbytes);
}

inline void Storage::release() {
  // The sole owner needs no locked decrement: no other handle exists that could retain concurrently.
  if (refs.load(std::memory_order_acquire) != 1 && refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  FreeLists* f = tls_free_lists;
  const std::size_t bytes = capacity + kHeaderBytes;
  if (f != nullptr && home == f->home && f->cached_bytes + bytes <= f->cache_limit) {
    tls_live_bytes.give(bytes);
    next_free = f->head[size_class];
    f->head[size_class] = this;
    f->cached_bytes += bytes;
    return;
  }
  storage_release_slow(this);
}

}  // namespace detail

/// What the calling thread's cache holds (and one process-wide total).
struct AllocatorStats {
  std::size_t cached_bytes = 0;  ///< in free lists, ready for reuse
  std::size_t cache_hits = 0;
  std::size_t cache_misses = 0;  ///< allocations that went to the system
  std::size_t system_bytes = 0;  ///< all threads: bytes obtained from the system and not yet given back
};
AllocatorStats allocator_stats();
/// This machine's RAM and swap in bytes (read once): no tensor larger than their sum is attempted.
struct MemoryLimits {
  std::size_t ram_bytes = 0;
  std::size_t swap_bytes = 0;
};
MemoryLimits memory_limits();
/// The calling thread's storage in use (bytes of its blocks not yet back in its cache; see LiveBytes) and its
/// highest value since reset_thread_memory_peak(): what a forward and backward on this thread kept at most.
struct ThreadMemory {
  std::int64_t live_bytes = 0;
  std::int64_t peak_bytes = 0;
};
ThreadMemory thread_memory();
/// Starts a new peak for thread_memory() at the bytes in use now.
void reset_thread_memory_peak();
/// Returns every cached block of the calling thread to the system.
void empty_cache();

}  // namespace unroll
