#pragma once
// Caching allocator for tensor storage. Blocks are rounded to size classes (4 per power of two,
// so at most 25% slack) and returned to a per-thread free list instead of to malloc, so the hot path of
// an op never calls malloc or touches fresh pages. The header of each block is its Storage record.
// A block freed on another thread than the one that allocated it goes back to that thread (batch shards
// allocate on worker threads and the caller frees): otherwise memory would drift, step after step, from
// the threads that allocate into the caches of the threads that free.
#include <atomic>
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
  Storage* next_free;    ///< link while the block waits in its home's list of blocks freed elsewhere
  void* data() { return reinterpret_cast<char*>(this) + kHeaderBytes; }
  static constexpr std::size_t kHeaderBytes = 64;

  void retain() { refs.fetch_add(1, std::memory_order_relaxed); }
  void release();  ///< returns the block to the cache when the last reference goes
};

/// A block with room for `nbytes` of data and one reference. Contents are uninitialised.
Storage* storage_allocate(std::size_t nbytes);

}  // namespace detail

/// What the calling thread's cache holds (and one process-wide total).
struct AllocatorStats {
  std::size_t cached_bytes = 0;  ///< in free lists, ready for reuse
  std::size_t cache_hits = 0;
  std::size_t cache_misses = 0;  ///< allocations that went to the system
  std::size_t system_bytes = 0;  ///< all threads: bytes obtained from the system and not yet given back
};
AllocatorStats allocator_stats();
/// Returns every cached block of the calling thread to the system.
void empty_cache();

}  // namespace unroll
