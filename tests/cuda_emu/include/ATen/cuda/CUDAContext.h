// Stand-in for ATen/cuda/CUDAContext.h under the CUDA emulation: the
// properties of the emulated device and its one stream.
#pragma once

#include <ATen/ATen.h>

#include "cuda_emu.h"

struct cudaDeviceProp {
  int multiProcessorCount;
  int maxThreadsPerBlock;
  int warpSize;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
};

namespace cuda_emu {
// The emulated device: its SM count is set by torch.ops.cuda_emu.configure.
cudaDeviceProp* device_properties();
}  // namespace cuda_emu

namespace at {
namespace cuda {

inline cudaDeviceProp* getCurrentDeviceProperties() {
  return ::cuda_emu::device_properties();
}

struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
  cudaStream_t stream() const { return nullptr; }
};

inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex = -1) { return {}; }

}  // namespace cuda
}  // namespace at
