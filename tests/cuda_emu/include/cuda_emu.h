// The CUDA execution model on the host, for the kernels of carafe_mm.
//
// tests/cuda_emu/__init__.py compiles a .cu file with the host compiler after
// a mechanical rewrite: this header is included first, every
// `kernel<<<grid, block, shmem, stream>>>(args)` becomes
// `::cuda_emu::Launch(grid, block, shmem, stream, "kernel")(kernel, args)`,
// static `__shared__ T name[N];` becomes a reference into the block's shared
// memory, and the kernels register for CPU tensors in a namespace of their
// own. runtime.cpp runs each block's threads as fibers: a thread runs until
// it finishes or waits at __syncthreads() / a warp collective, then the next
// one runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <tuple>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __constant__ static const

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
      : x(x_), y(y_), z(z_) {}
};

typedef struct CUstream_st* cudaStream_t;
typedef int cudaError_t;
constexpr cudaError_t cudaSuccess = 0;

namespace cuda_emu {

// The built-in variables of the running thread (set by the scheduler).
struct Builtins {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
extern thread_local Builtins builtins;

using Body = void (*)(void*);

// Runs `body(arg)` once per thread of the grid; the name is the kernel's, for
// messages and the traffic log.
void run_grid(const char* name, dim3 grid, dim3 block, size_t shmem,
              Body body, void* arg);

// __syncthreads(): wait for every thread of the block.
void block_barrier();

// A warp collective: the calling lane publishes `value` (the lanes in
// `mask` take part) and waits for them; `lanes[i]` is then lane i's value.
// Returns the lanes that took part.
unsigned int warp_exchange(unsigned int mask, uint64_t value,
                           const uint64_t** lanes);

// Static shared memory: the array declared at `site`, the same address for
// every thread of a block.
void* shared_array(int site, size_t bytes, size_t align);
// Dynamic shared memory (`extern __shared__`), shmem bytes of the launch.
void* dynamic_shared(size_t align);

template <typename T, size_t N>
T (&shared(int site))[N] {
  return *static_cast<T(*)[N]>(shared_array(site, sizeof(T) * N, alignof(T)));
}

class Launch {
 public:
  Launch(dim3 grid, dim3 block, size_t shmem, cudaStream_t, const char* name)
      : grid_(grid), block_(block), shmem_(shmem), name_(name) {}
  Launch(dim3 grid, dim3 block, size_t shmem = 0)
      : Launch(grid, block, shmem, nullptr, "kernel") {}

  // Every thread calls kernel with its own copy of the arguments, converted
  // to the parameter types as a real launch does.
  template <typename... P, typename... A>
  void operator()(void (*kernel)(P...), A&&... args) {
    struct Call {
      void (*kernel)(P...);
      std::tuple<std::decay_t<P>...> params;
    } call{kernel, std::tuple<std::decay_t<P>...>(std::forward<A>(args)...)};
    run_grid(name_, grid_, block_, shmem_, &invoke<Call>, &call);
  }

 private:
  template <typename Call>
  static void invoke(void* arg) {
    Call& call = *static_cast<Call*>(arg);
    std::apply(call.kernel, call.params);
  }

  dim3 grid_, block_;
  size_t shmem_;
  const char* name_;
};

template <typename T>
uint64_t to_bits(T value) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffle of a wide type");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  return bits;
}

template <typename T>
T from_bits(uint64_t bits) {
  T value;
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::builtins.thread_idx)
#define blockIdx (::cuda_emu::builtins.block_idx)
#define blockDim (::cuda_emu::builtins.block_dim)
#define gridDim (::cuda_emu::builtins.grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::cuda_emu::block_barrier(); }

inline unsigned int __cuda_emu_lane() {
  const auto& b = ::cuda_emu::builtins;
  return (b.thread_idx.x +
          b.block_dim.x * (b.thread_idx.y + b.block_dim.y * b.thread_idx.z)) %
         32;
}

inline void __syncwarp(unsigned int mask = 0xffffffffu) {
  const uint64_t* lanes;
  ::cuda_emu::warp_exchange(mask, 0, &lanes);
}

template <typename T>
T __shfl_sync(unsigned int mask, T value, int src, int width = 32) {
  const uint64_t* lanes;
  ::cuda_emu::warp_exchange(mask, ::cuda_emu::to_bits(value), &lanes);
  const unsigned int lane = __cuda_emu_lane();
  const unsigned int base = lane - lane % width;
  return ::cuda_emu::from_bits<T>(lanes[base + (src % width + width) % width]);
}

template <typename T>
T __shfl_down_sync(unsigned int mask, T value, unsigned int delta,
                   int width = 32) {
  const uint64_t* lanes;
  ::cuda_emu::warp_exchange(mask, ::cuda_emu::to_bits(value), &lanes);
  const unsigned int lane = __cuda_emu_lane();
  const unsigned int in_segment = lane % width + delta;
  return ::cuda_emu::from_bits<T>(
      lanes[in_segment < unsigned(width) ? lane + delta : lane]);
}

template <typename T>
T __shfl_up_sync(unsigned int mask, T value, unsigned int delta,
                 int width = 32) {
  const uint64_t* lanes;
  ::cuda_emu::warp_exchange(mask, ::cuda_emu::to_bits(value), &lanes);
  const unsigned int lane = __cuda_emu_lane();
  return ::cuda_emu::from_bits<T>(
      lanes[lane % width >= delta ? lane - delta : lane]);
}

template <typename T>
T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = 32) {
  const uint64_t* lanes;
  ::cuda_emu::warp_exchange(mask, ::cuda_emu::to_bits(value), &lanes);
  const unsigned int lane = __cuda_emu_lane();
  const unsigned int other = lane ^ unsigned(lane_mask);
  return ::cuda_emu::from_bits<T>(
      lanes[other / width == lane / width ? other : lane]);
}

inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
  const uint64_t* lanes;
  const unsigned int active =
      ::cuda_emu::warp_exchange(mask, predicate != 0, &lanes);
  unsigned int ballot = 0;
  for (int i = 0; i < 32; ++i) {
    if ((active >> i & 1u) && lanes[i]) ballot |= 1u << i;
  }
  return ballot;
}

inline int __any_sync(unsigned int mask, int predicate) {
  return __ballot_sync(mask, predicate) != 0;
}

inline int __all_sync(unsigned int mask, int predicate) {
  return __ballot_sync(mask, predicate) == (mask & 0xffffffffu);
}

template <typename T>
T __ldg(const T* p) {
  return *p;
}
