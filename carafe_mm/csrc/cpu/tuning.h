// Tuning constants of the CPU kernels, all in one place.
//
// Tuned with tools/benchmark_op.py (cases fpn and mask_head, float32 and
// bfloat16, forward and backward, the AVX2 kernels) on 2 cores of an AMD
// EPYC (Zen 3: 32 KiB L1d and 512 KiB L2 per core), GCC 12. The mask-buffer
// budgets follow the L2 cache size read at run time (see below); the other
// constants do not depend on the cache sizes.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

namespace carafe_mm {
namespace cpu {

// Channels of one group processed together; they share each mask load.
constexpr int kForwardChannelBlock = 4;
constexpr int kBackwardChannelBlock = 4;

// Outputs streamed past the caches come in pieces of at least this size
// (smaller ones leave partial cache lines, which non-temporal stores handle
// badly).
constexpr int64_t kStreamMinBytes = 4096;

// Multiply-adds a parallel task must have at least: a call smaller than this
// runs on the calling thread, without waking the pool (which costs tens of
// microseconds idle, milliseconds on a loaded machine).
constexpr int64_t kMinParallelMacs = int64_t(1) << 18;

// Work items per thread that the band height is lowered to reach.
constexpr int64_t kItemsPerThread = 4;

// The L2 size assumed where it cannot be read: the tuning machine's.
constexpr int64_t kFallbackL2Bytes = int64_t(512) << 10;

// The L2 cache of CPU 0 in bytes: sysconf, else sysfs, else
// kFallbackL2Bytes. Read once.
inline int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long from_sysconf = sysconf(_SC_LEVEL2_CACHE_SIZE);
    if (from_sysconf > 0) return static_cast<int64_t>(from_sysconf);
#endif
    // index<i>/{level,type,size}, size as e.g. "2048K".
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index";
    for (int i = 0; i < 8; ++i) {
      const std::string index = dir + std::to_string(i) + "/";
      int level = 0;
      std::string type, size;
      if (!(std::ifstream(index + "level") >> level)) break;
      std::ifstream(index + "type") >> type;
      std::ifstream(index + "size") >> size;
      if (level != 2 || type == "Instruction" || size.empty()) continue;
      const int64_t unit = size.back() == 'K'   ? 1024
                           : size.back() == 'M' ? 1024 * 1024
                                                : 1;
      const int64_t value = std::atoll(size.c_str()) * unit;
      if (value > 0) return value;
    }
    return kFallbackL2Bytes;
  }();
  return bytes;
}

// Target sizes of a work item's mask buffers, so that they stay in L2: tuned
// as 256 KiB and 384 KiB (the backward holds the masks and their gradient),
// half and three quarters of the tuning machine's L2. A smaller L2 scales
// them down; a larger one does not scale them up (on an Intel Xeon with
// 2 MiB of L2 per core, the larger bands were not faster).
constexpr int64_t kForwardMaskBytes = int64_t(256) << 10;
constexpr int64_t kBackwardMaskBytes = int64_t(384) << 10;

inline int64_t forward_mask_budget() {
  return std::min(kForwardMaskBytes, l2_cache_bytes() / 2);
}

inline int64_t backward_mask_budget() {
  return std::min(kBackwardMaskBytes, l2_cache_bytes() * 3 / 4);
}

}  // namespace cpu
}  // namespace carafe_mm
