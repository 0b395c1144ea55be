// Stand-in for c10/cuda/CUDAException.h under the CUDA emulation: a failed
// emulated launch (an out-of-bounds access, a deadlock) raises here.
#pragma once

#include <c10/util/Exception.h>

namespace cuda_emu {
// Raises the error of the last launch, if it failed, and clears it.
void check_last_launch();
}  // namespace cuda_emu

#define C10_CUDA_KERNEL_LAUNCH_CHECK() ::cuda_emu::check_last_launch()
#define C10_CUDA_CHECK(expr) \
  TORCH_CHECK((expr) == 0, "cuda_emu: ", #expr, " failed")
