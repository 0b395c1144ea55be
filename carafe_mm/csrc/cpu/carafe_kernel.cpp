// CPU kernels of carafe_mm::carafe_forward and carafe_mm::carafe_backward.
//
// Shape letters as in ../carafe.h: N, C, G, H×W, s (scale factor), k, r = k/2,
// Ho×Wo = sH×sW, t = ky·k + kx, Cg = C / G.
//
// Both kernels work on small row buffers in the accumulation type acc_t
// (float for float/half/bfloat16, double for double), so one vectorised inner
// loop serves every dtype, reads of half types accumulate in fp32, and the
// zero padding of CARAFE is explicit zeros in the buffers (no bounds checks in
// the inner loops). Rows are padded to Wq, a multiple of two SIMD vectors.
//
// Forward (output-stationary): a work item is (n, g, a band of input rows).
// Its masks are converted once into `mb` and stay in cache while the
// channels of the group stream through in blocks of kForwardBlock: each
// block's feature rows are upsampled in x (nearest, zero padded) into `ub`, so
// that tap (ky, kx) of output pixel ox is ub[row + ky][ox + s·kx], a
// unit-stride load, and the s output rows of an input row share each load.
// float outputs are written with non-temporal stores (see store_rows).
//
// Backward (input-stationary): a work item is (n, g, a band of input rows).
// Every product grad_output · masks of tap (ky, kx) at output pixel (oy, ox)
// goes to exactly one input pixel, (oy/s + ky - r, ox/s + kx - r), so the
// items own disjoint outputs: the gradient of their features rows, and the
// grad_masks rows oy = s·(iy + r - ky) + py of every tap. No atomics, no
// reduction buffers, deterministic. The grad_output rows a band needs (its
// own plus r rows of halo on either side) are converted once per channel
// block.
//
// Outputs come from output_allocator.h (huge pages, reuse of freed blocks).
//
// The kernels (carafe_cpu_impl.h) are compiled twice, for the baseline
// x86-64 ISA and for AVX2+FMA (x86-64-v3), and the AVX2 copy runs where the
// CPU supports it.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../carafe.h"
#include "output_allocator.h"

#if !defined(__GNUC__) && !defined(__clang__)
#error "carafe_mm's CPU kernel uses GCC/Clang vector extensions"
#endif

#define CARAFE_INLINE inline __attribute__((always_inline))
// Work items stay out of line: inlined into the parallel_for lambdas, their
// inner loops lose registers to the lambdas' state.
#define CARAFE_NOINLINE __attribute__((noinline))
#define CARAFE_UNROLL _Pragma("GCC unroll 16")

namespace carafe_mm {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Geometry {
  int64_t N, C, H, W, G, k, s;
  int64_t Cg() const { return C / G; }
  int64_t r() const { return k / 2; }
  int64_t k2() const { return k * k; }
  int64_t Ho() const { return s * H; }
  int64_t Wo() const { return s * W; }
  // Output width padded to whole pairs of SIMD vectors.
  int64_t Wq(int64_t lanes) const {
    return ceil_div(Wo(), 2 * lanes) * 2 * lanes;
  }
  // A padded row: `s·r` zeros on either side of Wq values.
  int64_t Wp(int64_t lanes) const { return Wq(lanes) + 2 * s * r(); }
};

}  // namespace
}  // namespace carafe_mm

// Baseline copy.
#define CARAFE_IN_REGISTER(v) ((void)0)
#define CARAFE_STORE_FENCE() ((void)0)
namespace carafe_mm {
namespace isa_default {
namespace {
#include "carafe_cpu_impl.h"
}  // namespace
}  // namespace isa_default
}  // namespace carafe_mm
#undef CARAFE_IN_REGISTER
#undef CARAFE_STORE_FENCE

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CARAFE_HAVE_AVX2_COPY 1
// AVX2 + FMA copy. CARAFE_IN_REGISTER makes GCC load a vector once into a
// register that feeds several FMAs, instead of folding the load into each of
// them (which makes the loops load-bound).
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v3")
#define CARAFE_IN_REGISTER(v) asm("" : "+x"(v))
#define CARAFE_STREAM_STORE_F32(dst, src) \
  _mm256_stream_ps((dst), _mm256_loadu_ps(src))
#define CARAFE_STORE_FENCE() _mm_sfence()
namespace carafe_mm {
namespace isa_avx2 {
namespace {
#include "carafe_cpu_impl.h"
}  // namespace
}  // namespace isa_avx2
}  // namespace carafe_mm
#undef CARAFE_IN_REGISTER
#undef CARAFE_STREAM_STORE_F32
#undef CARAFE_STORE_FENCE
#pragma GCC pop_options
#endif

namespace carafe_mm {
namespace {

// The AVX2 copy runs where the CPU has AVX2 and FMA, unless
// CARAFE_MM_CPU_ISA=default asks for the baseline copy (for tests and
// debugging).
bool use_avx2() {
#ifdef CARAFE_HAVE_AVX2_COPY
  static const bool use = [] {
    const char* isa = std::getenv("CARAFE_MM_CPU_ISA");
    if (isa != nullptr && std::string(isa) == "default") return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return use;
#else
  return false;
#endif
}

template <typename scalar_t, typename... Args>
void forward_kernel(Args&&... args) {
#ifdef CARAFE_HAVE_AVX2_COPY
  if (use_avx2()) {
    return isa_avx2::forward_kernel<scalar_t>(std::forward<Args>(args)...);
  }
#endif
  isa_default::forward_kernel<scalar_t>(std::forward<Args>(args)...);
}

template <typename scalar_t, typename... Args>
void backward_kernel(Args&&... args) {
#ifdef CARAFE_HAVE_AVX2_COPY
  if (use_avx2()) {
    return isa_avx2::backward_kernel<scalar_t>(std::forward<Args>(args)...);
  }
#endif
  isa_default::backward_kernel<scalar_t>(std::forward<Args>(args)...);
}

Geometry geometry(const at::Tensor& features, const CarafeArgs& args) {
  return Geometry{features.size(0), features.size(1), features.size(2),
                  features.size(3), args.group_size, args.kernel_size,
                  args.scale_factor};
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
        forward_kernel<scalar_t>(features.const_data_ptr<scalar_t>(),
                                 masks.const_data_ptr<scalar_t>(),
                                 output.mutable_data_ptr<scalar_t>(), geo);
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
        backward_kernel<scalar_t>(
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
