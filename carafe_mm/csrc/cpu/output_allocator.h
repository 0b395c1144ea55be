// Allocation of the CPU kernels' outputs.
#pragma once

#include <ATen/core/Tensor.h>

namespace carafe_mm {

// An uninitialised contiguous CPU tensor of `sizes` and the dtype of `like`.
// Blocks of 2 MiB or more are 2 MiB-aligned and advised for transparent huge
// pages, and freed blocks are kept for reuse by the next output of the same
// rounded size (an FPN level's output in the next iteration), up to
// CARAFE_MM_CPU_CACHE_MB MiB in all (default 1024, 0 disables). Without
// this, the first-touch page faults and kernel zeroing of a fresh output cost
// as much as the op itself (about 25 ms for the FPN example's 82 MB).
at::Tensor empty_output(at::IntArrayRef sizes, const at::Tensor& like);

}  // namespace carafe_mm
