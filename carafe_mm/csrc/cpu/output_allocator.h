// Allocation of the CPU kernels' outputs.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace carafe_mm {

// An uninitialised contiguous CPU tensor of `sizes` and the dtype of `like`.
//
// Blocks of 2 MiB or more are 2 MiB-aligned, advised for transparent huge
// pages, and kept when freed for reuse by the next output of the same rounded
// size (an FPN level's output in the next iteration): without this, the
// first-touch page faults and kernel zeroing of a fresh output cost as much
// as the op itself (glibc returns blocks over 32 MiB to the kernel on free,
// so PyTorch's own allocator, even with THP_MEM_ALLOC_ENABLE=1, pays them on
// every call). The cache holds at most CARAFE_MM_CPU_CACHE_MB MiB (default
// kDefaultCacheMiB; 0 disables it), evicting the blocks freed longest ago
// first. Smaller outputs, and all of them when the cache is disabled, come
// from PyTorch's CPU allocator.
//
// A value of CARAFE_MM_CPU_CACHE_MB that is not a whole number of MiB in
// [0, kMaxCacheMiB] makes every op call raise a ValueError naming it.
at::Tensor empty_output(at::IntArrayRef sizes, const at::Tensor& like);

constexpr int64_t kDefaultCacheMiB = 256;
constexpr int64_t kMaxCacheMiB = int64_t(1) << 20;  // 1 TiB

}  // namespace carafe_mm
