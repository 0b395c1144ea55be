// How an emulated .cu file registers its launchers: the rewrite turns
// `TORCH_LIBRARY_IMPL(ns, CUDA, m)` into `CUDA_EMU_LIBRARY_IMPL(ns, m)`, which
// registers each launcher for CPU tensors behind a wrapper that plays the
// host side of a real GPU: the tensor arguments are copied into emulated
// device memory (bounds-checked, poison-filled), the launcher runs with
// device memory as the CPU allocator, and the results are copied back.
#pragma once

#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <utility>

namespace cuda_emu {

// A copy of `tensor` in device memory, with the same sizes and strides.
at::Tensor to_device(const at::Tensor& tensor);
// A copy of a device tensor in ordinary host memory.
at::Tensor to_host(const at::Tensor& tensor);

// While alive, every CPU allocation is emulated device memory.
class DeviceScope {
 public:
  DeviceScope();
  ~DeviceScope();
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;
};

template <typename T>
T device_arg(const T& value) {
  return value;
}
inline at::Tensor device_arg(const at::Tensor& tensor) {
  return to_device(tensor);
}

inline at::Tensor host_result(const at::Tensor& tensor) {
  return to_host(tensor);
}
template <typename... T>
std::tuple<T...> host_result(const std::tuple<T...>& results) {
  return std::apply(
      [](const auto&... r) { return std::make_tuple(host_result(r)...); },
      results);
}

class Library {
 public:
  explicit Library(torch::Library& library) : library_(library) {}

  template <typename R, typename... A>
  Library& impl(const char* name, R (*launcher)(A...)) {
    library_.impl(name, [launcher](A... args) -> R {
      auto device_args = std::make_tuple(device_arg(args)...);
      std::optional<R> results;
      {
        const DeviceScope scope;
        results.emplace(std::apply(launcher, device_args));
      }
      return host_result(*results);
    });
    return *this;
  }

 private:
  torch::Library& library_;
};

}  // namespace cuda_emu

#define CUDA_EMU_LIBRARY_IMPL(ns, m)                                \
  static void cuda_emu_register_##ns(::cuda_emu::Library& m);      \
  TORCH_LIBRARY_IMPL(ns, CPU, cuda_emu_library_##ns) {              \
    ::cuda_emu::Library wrapped(cuda_emu_library_##ns);             \
    cuda_emu_register_##ns(wrapped);                                \
  }                                                                 \
  static void cuda_emu_register_##ns(::cuda_emu::Library& m)
