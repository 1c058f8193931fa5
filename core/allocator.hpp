#pragma once
// Caching allocator for tensor storage. Blocks are rounded to size classes (4 per power of two,
// so at most 25% slack) and returned to a per-thread free list instead of to malloc, so the hot path of
// an op never calls malloc or touches fresh pages. The header of each block is its Storage record.
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace unroll {
namespace detail {

/// The header of a storage block; the data follows at kStorageHeader bytes (64-byte aligned).
struct Storage {
  std::atomic<std::int32_t> refs;
  std::int32_t size_class;
  std::size_t capacity;  ///< usable data bytes
  void* data() { return reinterpret_cast<char*>(this) + kHeaderBytes; }
  static constexpr std::size_t kHeaderBytes = 64;

  void retain() { refs.fetch_add(1, std::memory_order_relaxed); }
  void release();  ///< returns the block to the cache when the last reference goes
};

/// A block with room for `nbytes` of data and one reference. Contents are uninitialised.
Storage* storage_allocate(std::size_t nbytes);

}  // namespace detail

/// What the calling thread's cache holds.
struct AllocatorStats {
  std::size_t cached_bytes = 0;  ///< in free lists, ready for reuse
  std::size_t cache_hits = 0;
  std::size_t cache_misses = 0;  ///< allocations that went to the system
};
AllocatorStats allocator_stats();
/// Returns every cached block of the calling thread to the system.
void empty_cache();

}  // namespace unroll
