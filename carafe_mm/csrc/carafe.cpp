// Operator schemas and argument checks of carafe_mm. The kernels register
// per device in cpu/ and cuda/; fake kernels and autograd are registered
// from Python (carafe_mm/ops/carafe.py).
#include "carafe.h"

#include <Python.h>
#include <c10/util/safe_numerics.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

namespace carafe_mm {

namespace {

bool is_supported_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
         dtype == at::kBFloat16;
}

// `value` as an int64_t, or a TypeError / ValueError naming `name`.
int64_t int_arg(const char* name, const c10::Scalar& value) {
  TORCH_CHECK_TYPE(!value.isBoolean(), "carafe: ", name,
                   " must be an integer, but got ",
                   value.toBool() ? "True" : "False");
  TORCH_CHECK_TYPE(!value.isComplex(), "carafe: ", name,
                   " must be an integer, but got a complex number");
  TORCH_CHECK_TYPE(value.isIntegral(/*includeBool=*/false), "carafe: ", name,
                   " must be an integer, but got float ", value.toDouble());
  TORCH_CHECK_VALUE(
      !value.isUnsigned() || value.toUInt64() <= uint64_t(INT64_MAX),
      "carafe: ", name, " must be at most 2**63 - 1, but got ",
      value.toUInt64());
  return value.toLong();
}

// Whether `total` == `factor` * `part`, without computing the product.
bool is_product(int64_t total, int64_t factor, int64_t part) {
  return total % factor == 0 && total / factor == part;
}

}  // namespace

CarafeArgs check_carafe_forward_args(const at::Tensor& features,
                                     const at::Tensor& masks,
                                     const c10::Scalar& kernel_size_arg,
                                     const c10::Scalar& group_size_arg,
                                     const c10::Scalar& scale_factor_arg) {
  const int64_t kernel_size = int_arg("kernel_size", kernel_size_arg);
  const int64_t group_size = int_arg("group_size", group_size_arg);
  const int64_t scale_factor = int_arg("scale_factor", scale_factor_arg);
  TORCH_CHECK_VALUE(features.dim() == 4,
                    "carafe: features must be a 4-D tensor (N, C, H, W), "
                    "but got a ",
                    features.dim(), "-D tensor");
  TORCH_CHECK_VALUE(masks.dim() == 4,
                    "carafe: masks must be a 4-D tensor "
                    "(N, group_size * kernel_size**2, scale_factor * H, "
                    "scale_factor * W), but got a ",
                    masks.dim(), "-D tensor");
  TORCH_CHECK_VALUE(kernel_size >= 1 && kernel_size % 2 == 1,
                    "carafe: kernel_size must be a positive odd integer, "
                    "but got ",
                    kernel_size);
  TORCH_CHECK_VALUE(group_size >= 1,
                    "carafe: group_size must be a positive integer, but got ",
                    group_size);
  TORCH_CHECK_VALUE(scale_factor >= 1,
                    "carafe: scale_factor must be a positive integer, "
                    "but got ",
                    scale_factor);
  TORCH_CHECK_TYPE(is_supported_dtype(features.scalar_type()),
                   "carafe: features must be float32, float64, float16 or "
                   "bfloat16, but got ",
                   features.scalar_type());
  TORCH_CHECK_TYPE(masks.scalar_type() == features.scalar_type(),
                   "carafe: masks must have the same dtype as features (",
                   features.scalar_type(), "), but got ", masks.scalar_type());
  TORCH_CHECK_VALUE(masks.device() == features.device(),
                    "carafe: masks must be on the same device as features (",
                    features.device(), "), but got ", masks.device());
  const int64_t N = features.size(0), C = features.size(1);
  const int64_t H = features.size(2), W = features.size(3);
  TORCH_CHECK_VALUE(C % group_size == 0,
                    "carafe: the channels of features (C = ", C,
                    ") must be divisible by group_size (", group_size, ")");
  TORCH_CHECK_VALUE(masks.size(0) == N,
                    "carafe: masks must have the same batch size as "
                    "features (",
                    N, "), but got ", masks.size(0));
  int64_t taps = 0, mask_channels = 0;
  TORCH_CHECK_VALUE(
      !c10::mul_overflows(kernel_size, kernel_size, &taps) &&
          !c10::mul_overflows(group_size, taps, &mask_channels),
      "carafe: group_size * kernel_size**2 must be at most 2**63 - 1, but "
      "got group_size = ",
      group_size, ", kernel_size = ", kernel_size);
  TORCH_CHECK_VALUE(masks.size(1) == mask_channels,
                    "carafe: masks must have group_size * kernel_size**2 = ",
                    mask_channels, " channels, but got ", masks.size(1));
  // Compared by division: scale_factor * H may not fit int64.
  if (!is_product(masks.size(2), scale_factor, H) ||
      !is_product(masks.size(3), scale_factor, W)) {
    int64_t Ho = 0, Wo = 0;
    TORCH_CHECK_VALUE(!c10::mul_overflows(scale_factor, H, &Ho) &&
                          !c10::mul_overflows(scale_factor, W, &Wo),
                      "carafe: scale_factor (", scale_factor,
                      ") times the spatial size of features (", H, ", ", W,
                      ") must be at most 2**63 - 1");
    TORCH_CHECK_VALUE(false, "carafe: masks must be scale_factor (",
                      scale_factor, ") times the spatial size of features, (",
                      Ho, ", ", Wo, "), but got (", masks.size(2), ", ",
                      masks.size(3), ")");
  }
  return {kernel_size, group_size, scale_factor};
}

CarafeArgs check_carafe_backward_args(const at::Tensor& grad_output,
                                      const at::Tensor& features,
                                      const at::Tensor& masks,
                                      const c10::Scalar& kernel_size,
                                      const c10::Scalar& group_size,
                                      const c10::Scalar& scale_factor) {
  const CarafeArgs args = check_carafe_forward_args(
      features, masks, kernel_size, group_size, scale_factor);
  TORCH_CHECK_TYPE(grad_output.scalar_type() == features.scalar_type(),
                   "carafe: grad_output must have the same dtype as "
                   "features (",
                   features.scalar_type(), "), but got ",
                   grad_output.scalar_type());
  TORCH_CHECK_VALUE(grad_output.device() == features.device(),
                    "carafe: grad_output must be on the same device as "
                    "features (",
                    features.device(), "), but got ", grad_output.device());
  // The output's size: the checks above made masks (s·H, s·W).
  const auto expected = std::vector<int64_t>{features.size(0), features.size(1),
                                             masks.size(2), masks.size(3)};
  TORCH_CHECK_VALUE(grad_output.sizes() == at::IntArrayRef(expected),
                    "carafe: grad_output must have the shape of the output ",
                    at::IntArrayRef(expected), ", but got ",
                    grad_output.sizes());
  return args;
}

TORCH_LIBRARY(carafe_mm, m) {
  m.def(
      "carafe_forward(Tensor features, Tensor masks, Scalar kernel_size, "
      "Scalar group_size, Scalar scale_factor) -> Tensor");
  m.def(
      "carafe_backward(Tensor grad_output, Tensor features, Tensor masks, "
      "Scalar kernel_size, Scalar group_size, Scalar scale_factor) "
      "-> (Tensor, Tensor)");
}

}  // namespace carafe_mm

// `import carafe_mm._C` loads this library, which runs the registrations
// above; the module itself has no Python functions.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "carafe_mm compiled operators", -1, nullptr};
  return PyModule_Create(&module_def);
}
