// Reusable 64-byte aligned scratch memory for the CPU operator glue: each
// user keeps one as a thread_local, so a thread's buffer stays cache resident
// and is allocated only when a call needs more than it holds.
#pragma once

#include <cstddef>
#include <cstdlib>

namespace mamext {

// bytes rounded up to a whole number of 64-byte cache lines.
inline size_t aligned(size_t bytes) { return (bytes + 63) / 64 * 64; }

struct AlignedScratch {
  void* ptr = nullptr;
  size_t bytes = 0;
  AlignedScratch() = default;
  AlignedScratch(const AlignedScratch&) = delete;
  AlignedScratch& operator=(const AlignedScratch&) = delete;
  ~AlignedScratch() { std::free(ptr); }

  // At least aligned(need) bytes, grown (contents dropped) when too small;
  // null when the allocation fails.
  void* reserve(size_t need) {
    need = aligned(need);
    if (bytes < need) {
      std::free(ptr);
      ptr = std::aligned_alloc(64, need);
      bytes = ptr ? need : 0;
    }
    return ptr;
  }
};

}  // namespace mamext
