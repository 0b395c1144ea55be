// CUDA kernels of carafe_mm::carafe_forward and carafe_mm::carafe_backward.
//
// Shape letters as in ../carafe.h: N, C, G, H×W, s (scale factor), k, r = k/2,
// Ho×Wo = sH×sW, t = ky·k + kx, Cg = C / G.
//
// Every kernel is a gather: each thread owns the outputs it writes, so the
// backward needs no atomics and is deterministic. All index arithmetic is in
// int64_t, grid-stride loops cover any size, and half types accumulate in
// fp32 (at::opmath_type).
//   forward          thread = (n, g, block of kChannels channels, oy, ox):
//                    loads each of the k² mask values once and applies it to
//                    its channels.
//   grad_masks       thread = (n, g, block of kTaps taps, oy, ox): sums
//                    grad_output · features over the group's channels.
//   grad_features    thread = (n, c, iy, ix): sums grad_output · masks over the
//                    k²·s² output pixels that read this input pixel.
// ox is the fastest index of every thread layout, so neighbouring threads
// read neighbouring addresses.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../carafe.h"

namespace carafe_mm {
namespace {

constexpr int kThreads = 256;
constexpr int kChannels = 16;  // forward: channels per thread
constexpr int kTaps = 25;      // grad_masks: taps per thread

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Enough blocks to fill the device several times; grid-stride loops do the
// rest.
unsigned int grid_size(int64_t work) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<unsigned int>(
      std::max<int64_t>(1, std::min(ceil_div(work, kThreads), sms * 32)));
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    carafe_forward_kernel(const scalar_t* __restrict__ features,
                          const scalar_t* __restrict__ masks,
                          scalar_t* __restrict__ output, int64_t C, int64_t H,
                          int64_t W, int64_t G, int64_t k, int64_t s,
                          int64_t channel_blocks, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Ho = s * H, Wo = s * W, Cg = C / G, r = k / 2, k2 = k * k;
  const int64_t plane = H * W, out_plane = Ho * Wo;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       idx < total; idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t rest = idx;
    const int64_t ox = rest % Wo;
    rest /= Wo;
    const int64_t oy = rest % Ho;
    rest /= Ho;
    const int64_t cblock = rest % channel_blocks;
    rest /= channel_blocks;
    const int64_t g = rest % G;
    const int64_t n = rest / G;
    const int64_t c0 = cblock * kChannels;
    const int64_t count = Cg - c0 < kChannels ? Cg - c0 : kChannels;

    const scalar_t* m = masks + (n * G + g) * k2 * out_plane + oy * Wo + ox;
    const scalar_t* f = features + (n * C + g * Cg + c0) * plane;
    acc_t acc[kChannels];
#pragma unroll
    for (int i = 0; i < kChannels; ++i) acc[i] = acc_t(0);
    for (int64_t ky = 0; ky < k; ++ky) {
      const int64_t iy = oy / s + ky - r;
      const bool row_inside = iy >= 0 && iy < H;
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t ix = ox / s + kx - r;
        const acc_t w = static_cast<acc_t>(m[(ky * k + kx) * out_plane]);
        if (row_inside && ix >= 0 && ix < W) {
          const scalar_t* fp = f + iy * W + ix;
#pragma unroll
          for (int i = 0; i < kChannels; ++i) {
            if (i < count) acc[i] += w * static_cast<acc_t>(fp[i * plane]);
          }
        } else {
          // The zero padding: w · 0, so that a non-finite mask gives NaN as
          // in the CPU kernel and the reference.
          const acc_t zero = w * acc_t(0);
#pragma unroll
          for (int i = 0; i < kChannels; ++i) acc[i] += zero;
        }
      }
    }
    scalar_t* o = output + ((n * C + g * Cg + c0) * Ho + oy) * Wo + ox;
#pragma unroll
    for (int i = 0; i < kChannels; ++i) {
      if (i < count) o[i * out_plane] = static_cast<scalar_t>(acc[i]);
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    carafe_backward_masks_kernel(const scalar_t* __restrict__ grad_output,
                                 const scalar_t* __restrict__ features,
                                 scalar_t* __restrict__ grad_masks, int64_t C,
                                 int64_t H, int64_t W, int64_t G, int64_t k,
                                 int64_t s, int64_t tap_blocks, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Ho = s * H, Wo = s * W, Cg = C / G, r = k / 2, k2 = k * k;
  const int64_t plane = H * W, out_plane = Ho * Wo;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       idx < total; idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t rest = idx;
    const int64_t ox = rest % Wo;
    rest /= Wo;
    const int64_t oy = rest % Ho;
    rest /= Ho;
    const int64_t tblock = rest % tap_blocks;
    rest /= tap_blocks;
    const int64_t g = rest % G;
    const int64_t n = rest / G;
    const int64_t t0 = tblock * kTaps;

    // Offset of each tap's input pixel in a feature plane; -1 for taps past
    // k² or on the zero padding.
    int64_t offset[kTaps];
    acc_t acc[kTaps];
#pragma unroll
    for (int i = 0; i < kTaps; ++i) {
      acc[i] = acc_t(0);
      offset[i] = -1;
      const int64_t t = t0 + i;
      if (t < k2) {
        const int64_t iy = oy / s + t / k - r;
        const int64_t ix = ox / s + t % k - r;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) offset[i] = iy * W + ix;
      }
    }
    const scalar_t* go = grad_output + (n * C + g * Cg) * out_plane + oy * Wo + ox;
    const scalar_t* f = features + (n * C + g * Cg) * plane;
    for (int64_t c = 0; c < Cg; ++c) {
      const acc_t gv = static_cast<acc_t>(go[c * out_plane]);
#pragma unroll
      for (int i = 0; i < kTaps; ++i) {
        if (offset[i] >= 0) {
          acc[i] += gv * static_cast<acc_t>(f[c * plane + offset[i]]);
        }
      }
    }
    scalar_t* gm = grad_masks + ((n * G + g) * k2 + t0) * out_plane + oy * Wo + ox;
#pragma unroll
    for (int i = 0; i < kTaps; ++i) {
      if (t0 + i < k2) gm[i * out_plane] = static_cast<scalar_t>(acc[i]);
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    carafe_backward_features_kernel(const scalar_t* __restrict__ grad_output,
                                    const scalar_t* __restrict__ masks,
                                    scalar_t* __restrict__ grad_features,
                                    int64_t C, int64_t H, int64_t W, int64_t G,
                                    int64_t k, int64_t s, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Ho = s * H, Wo = s * W, Cg = C / G, r = k / 2, k2 = k * k;
  const int64_t out_plane = Ho * Wo;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       idx < total; idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t rest = idx;
    const int64_t ix = rest % W;
    rest /= W;
    const int64_t iy = rest % H;
    rest /= H;
    const int64_t c = rest % C;
    const int64_t n = rest / C;
    const int64_t g = c / Cg;

    const scalar_t* go = grad_output + (n * C + c) * out_plane;
    const scalar_t* m = masks + (n * G + g) * k2 * out_plane;
    acc_t acc = acc_t(0);
    for (int64_t ky = 0; ky < k; ++ky) {
      // Output rows whose tap ky reads input row iy.
      const int64_t oy0 = s * (iy + r - ky);
      if (oy0 < 0 || oy0 >= Ho) continue;
      for (int64_t kx = 0; kx < k; ++kx) {
        const int64_t ox0 = s * (ix + r - kx);
        if (ox0 < 0 || ox0 >= Wo) continue;
        const scalar_t* mt = m + (ky * k + kx) * out_plane;
        for (int64_t py = 0; py < s; ++py) {
          const int64_t row = (oy0 + py) * Wo + ox0;
          for (int64_t px = 0; px < s; ++px) {
            acc += static_cast<acc_t>(go[row + px]) *
                   static_cast<acc_t>(mt[row + px]);
          }
        }
      }
    }
    grad_features[idx] = static_cast<scalar_t>(acc);
  }
}

at::Tensor carafe_forward_cuda(const at::Tensor& features_in,
                               const at::Tensor& masks_in,
                               const c10::Scalar& kernel_size_arg,
                               const c10::Scalar& group_size_arg,
                               const c10::Scalar& scale_factor_arg) {
  const CarafeArgs args =
      check_carafe_forward_args(features_in, masks_in, kernel_size_arg,
                                group_size_arg, scale_factor_arg);
  const int64_t kernel_size = args.kernel_size;
  const c10::cuda::CUDAGuard device_guard(features_in.device());
  const auto features = features_in.contiguous();
  const auto masks = masks_in.contiguous();
  const int64_t N = features.size(0), C = features.size(1);
  const int64_t H = features.size(2), W = features.size(3);
  const int64_t s = args.scale_factor, G = args.group_size;
  auto output = at::empty({N, C, s * H, s * W}, features.options());
  if (output.numel() == 0) return output;

  const int64_t channel_blocks = ceil_div(C / G, kChannels);
  const int64_t total = N * G * channel_blocks * s * H * s * W;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "carafe_forward_cuda",
      [&] {
        carafe_forward_kernel<scalar_t>
            <<<grid_size(total), kThreads, 0, stream>>>(
                features.const_data_ptr<scalar_t>(),
                masks.const_data_ptr<scalar_t>(),
                output.mutable_data_ptr<scalar_t>(), C, H, W, G, kernel_size,
                s, channel_blocks, total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor> carafe_backward_cuda(
    const at::Tensor& grad_output_in, const at::Tensor& features_in,
    const at::Tensor& masks_in, const c10::Scalar& kernel_size_arg,
    const c10::Scalar& group_size_arg, const c10::Scalar& scale_factor_arg) {
  const CarafeArgs args = check_carafe_backward_args(
      grad_output_in, features_in, masks_in, kernel_size_arg, group_size_arg,
      scale_factor_arg);
  const c10::cuda::CUDAGuard device_guard(features_in.device());
  const auto grad_output = grad_output_in.contiguous();
  const auto features = features_in.contiguous();
  const auto masks = masks_in.contiguous();
  const int64_t N = features.size(0), C = features.size(1);
  const int64_t H = features.size(2), W = features.size(3);
  const int64_t s = args.scale_factor, G = args.group_size;
  const int64_t k = args.kernel_size;
  auto grad_features = at::empty(features.sizes(), features.options());
  auto grad_masks = at::empty(masks.sizes(), masks.options());
  if (grad_output.numel() == 0) {
    // No output pixels (N, C, H or W is 0): nothing flows back.
    grad_features.zero_();
    grad_masks.zero_();
    return {grad_features, grad_masks};
  }

  const int64_t tap_blocks = ceil_div(k * k, kTaps);
  const int64_t mask_total = N * G * tap_blocks * s * H * s * W;
  const int64_t feature_total = features.numel();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, features.scalar_type(), "carafe_backward_cuda",
      [&] {
        carafe_backward_masks_kernel<scalar_t>
            <<<grid_size(mask_total), kThreads, 0, stream>>>(
                grad_output.const_data_ptr<scalar_t>(),
                features.const_data_ptr<scalar_t>(),
                grad_masks.mutable_data_ptr<scalar_t>(), C, H, W, G, k, s,
                tap_blocks, mask_total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        carafe_backward_features_kernel<scalar_t>
            <<<grid_size(feature_total), kThreads, 0, stream>>>(
                grad_output.const_data_ptr<scalar_t>(),
                masks.const_data_ptr<scalar_t>(),
                grad_features.mutable_data_ptr<scalar_t>(), C, H, W, G, k, s,
                feature_total);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {grad_features, grad_masks};
}

}  // namespace

TORCH_LIBRARY_IMPL(carafe_mm, CUDA, m) {
  m.impl("carafe_forward", &carafe_forward_cuda);
  m.impl("carafe_backward", &carafe_backward_cuda);
}

}  // namespace carafe_mm
