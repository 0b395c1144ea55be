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

// Raise a ValueError / TypeError naming the offending argument unless the
// arguments describe a valid CARAFE call. Mirrored in Python by
// carafe_mm/ops/carafe.py::check_carafe_args for the fake kernel.
void check_carafe_forward_args(const at::Tensor& features,
                               const at::Tensor& masks, int64_t kernel_size,
                               int64_t group_size, int64_t scale_factor);

void check_carafe_backward_args(const at::Tensor& grad_output,
                                const at::Tensor& features,
                                const at::Tensor& masks, int64_t kernel_size,
                                int64_t group_size, int64_t scale_factor);

}  // namespace carafe_mm
