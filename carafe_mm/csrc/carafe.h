// CARAFE: Content-Aware ReAssembly of FEatures (Wang et al., ICCV 2019).
//
// Shape letters used in every file of the op:
//   N   batch size
//   C   channels of the features; G groups share one kernel, C % G == 0
//   H×W spatial size of the features
//   s   scale factor σ >= 1; the output is sH×sW (written Ho×Wo)
//   k   kernel size k_up (odd), r = k / 2 its radius
//   t   tap index ky * k + kx of a k×k kernel, 0 <= t < k²
//
//   features     (N, C, H, W)
//   masks        (N, G·k², Ho, Wo)  tap t of group g at channel g·k² + t
//   output       (N, C, Ho, Wo)
//
//   output[n, c, oy, ox] = Σ_t masks[n, g·k² + t, oy, ox]
//                            · features[n, c, oy/s + ky - r, ox/s + kx - r]
//   with g = c / (C/G) and zero padding outside the features.
#pragma once

#include <ATen/core/Tensor.h>

namespace carafe_mm {

// The integer arguments of the op, after check_carafe_*_args.
struct CarafeArgs {
  int64_t kernel_size, group_size, scale_factor;
};

// Raise a ValueError / TypeError naming the offending argument unless the
// arguments describe a valid CARAFE call; return the integer arguments.
// The schema takes them as Scalar so that a bool or a float (2.5 would
// otherwise be truncated to 2) is refused here rather than converted.
// No product of sizes in the checks can overflow int64. Mirrored in Python
// by carafe_mm/ops/_checks.py for the fake kernel.
CarafeArgs check_carafe_forward_args(const at::Tensor& features,
                                     const at::Tensor& masks,
                                     const c10::Scalar& kernel_size,
                                     const c10::Scalar& group_size,
                                     const c10::Scalar& scale_factor);

CarafeArgs check_carafe_backward_args(const at::Tensor& grad_output,
                                      const at::Tensor& features,
                                      const at::Tensor& masks,
                                      const c10::Scalar& kernel_size,
                                      const c10::Scalar& group_size,
                                      const c10::Scalar& scale_factor);

}  // namespace carafe_mm
