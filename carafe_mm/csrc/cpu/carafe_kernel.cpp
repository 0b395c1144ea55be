// CPU kernels of carafe_mm::carafe_forward and carafe_mm::carafe_backward:
// argument checks, dtype dispatch, and the choice of instruction set. The
// kernels themselves are in carafe_cpu_impl.h, their tuning in tuning.h.
//
// Outputs come from output_allocator.h (huge pages, reuse of freed blocks).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <utility>

#include "../carafe.h"
#include "carafe_cpu_impl.h"
#include "output_allocator.h"

namespace carafe_mm {
namespace {

using cpu::Geometry;

// The kernels compiled for the instruction set that use_avx2() picks.
template <typename scalar_t, typename... Args>
void forward_kernel_for_cpu(Args&&... args) {
#ifdef CARAFE_HAVE_AVX2
  if (cpu::use_avx2()) {
    return cpu::forward_kernel<cpu::IsaAvx2, scalar_t>(
        std::forward<Args>(args)...);
  }
#endif
  cpu::forward_kernel<cpu::IsaDefault, scalar_t>(std::forward<Args>(args)...);
}

template <typename scalar_t, typename... Args>
void backward_kernel_for_cpu(Args&&... args) {
#ifdef CARAFE_HAVE_AVX2
  if (cpu::use_avx2()) {
    return cpu::backward_kernel<cpu::IsaAvx2, scalar_t>(
        std::forward<Args>(args)...);
  }
#endif
  cpu::backward_kernel<cpu::IsaDefault, scalar_t>(std::forward<Args>(args)...);
}

Geometry geometry(const at::Tensor& features, const CarafeArgs& args) {
  return Geometry{.N = features.size(0),
                  .C = features.size(1),
                  .H = features.size(2),
                  .W = features.size(3),
                  .G = args.group_size,
                  .k = args.kernel_size,
                  .s = args.scale_factor};
}

at::Tensor carafe_forward_cpu(const at::Tensor& features_in,
                              const at::Tensor& masks_in,
                              const c10::Scalar& kernel_size,
                              const c10::Scalar& group_size,
                              const c10::Scalar& scale_factor) {
  const CarafeArgs args = check_carafe_forward_args(
      features_in, masks_in, kernel_size, group_size, scale_factor);
  const auto features = features_in.contiguous();
  const auto masks = masks_in.contiguous();
  const Geometry geo = geometry(features, args);
  auto output = empty_output({geo.N, geo.C, geo.Ho(), geo.Wo()}, features);
  if (output.numel() == 0) return output;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "carafe_forward_cpu",
      [&] {
        forward_kernel_for_cpu<scalar_t>(features.const_data_ptr<scalar_t>(),
                                         masks.const_data_ptr<scalar_t>(),
                                         output.mutable_data_ptr<scalar_t>(),
                                         geo);
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor> carafe_backward_cpu(
    const at::Tensor& grad_output_in, const at::Tensor& features_in,
    const at::Tensor& masks_in, const c10::Scalar& kernel_size,
    const c10::Scalar& group_size, const c10::Scalar& scale_factor) {
  const CarafeArgs args =
      check_carafe_backward_args(grad_output_in, features_in, masks_in,
                                 kernel_size, group_size, scale_factor);
  const auto grad_output = grad_output_in.contiguous();
  const auto features = features_in.contiguous();
  const auto masks = masks_in.contiguous();
  const Geometry geo = geometry(features, args);
  auto grad_features = empty_output(features.sizes(), features);
  auto grad_masks = empty_output(masks.sizes(), masks);
  if (grad_output.numel() == 0) {
    // No output pixels (N, C, H or W is 0): nothing flows back.
    grad_features.zero_();
    grad_masks.zero_();
    return {grad_features, grad_masks};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "carafe_backward_cpu",
      [&] {
        backward_kernel_for_cpu<scalar_t>(
            grad_output.const_data_ptr<scalar_t>(),
            features.const_data_ptr<scalar_t>(),
            masks.const_data_ptr<scalar_t>(),
            grad_features.mutable_data_ptr<scalar_t>(),
            grad_masks.mutable_data_ptr<scalar_t>(), geo);
      });
  return {grad_features, grad_masks};
}

}  // namespace

TORCH_LIBRARY_IMPL(carafe_mm, CPU, m) {
  m.impl("carafe_forward", &carafe_forward_cpu);
  m.impl("carafe_backward", &carafe_backward_cpu);
}

}  // namespace carafe_mm
