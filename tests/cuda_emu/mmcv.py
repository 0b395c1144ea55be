"""mmcv's CARAFE CUDA kernels under the same emulation, for like-for-like
traffic numbers: the kernels and launchers of the installed mmcv's source
(``mmcv/ops/csrc``, read at build time, never copied into this repository)
behind ops that allocate and zero-fill the scratch tensors exactly as
``mmcv.ops.carafe.CARAFEFunction`` does.

    ops = load_mmcv().ops
    out = ops.carafe_forward(features, masks, k, g, s)
    grad_features_nhwc = ...  # see carafe_backward's schema
"""
import os
import os.path as osp
import re

from . import cache_dir, load

# The op as mmcv/ops/carafe.py's CARAFEFunction calls the extension; the
# zero-filled scratch tensors are filled by a kernel, as torch.zeros is on a
# GPU, so their traffic is counted.
_ADAPTER = r'''
// The op of mmcv.ops.carafe.CARAFEFunction around mmcv's launchers.
template <typename scalar_t>
__global__ void cuda_emu_zero_fill(scalar_t* data, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(blockDim.x) * gridDim.x) {
    data[i] = scalar_t(0);
  }
}

static Tensor cuda_emu_zeros(at::IntArrayRef sizes, const Tensor& like) {
  Tensor t = at::empty(sizes, like.options());
  const int64_t n = t.numel();
  if (n == 0) return t;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256,
      at::cuda::getCurrentDeviceProperties()->multiProcessorCount * 32);
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(t.scalar_type(), "zeros", [&] {
    cuda_emu_zero_fill<scalar_t><<<blocks, 256, 0, nullptr>>>(
        t.data_ptr<scalar_t>(), n);
  });
  return t;
}

static Tensor mmcv_carafe_forward(const Tensor& features, const Tensor& masks,
                                  int64_t k, int64_t g, int64_t s) {
  const int64_t n = features.size(0), c = features.size(1);
  const int64_t h = features.size(2), w = features.size(3);
  Tensor output = cuda_emu_zeros({n, c, h * s, w * s}, features);
  Tensor routput = cuda_emu_zeros(output.sizes(), features);
  Tensor rfeatures = cuda_emu_zeros(features.sizes(), features);
  Tensor rmasks = cuda_emu_zeros(masks.sizes(), masks);
  CARAFEForwardCUDAKernelLauncher(features, masks, rfeatures, routput, rmasks,
                                  output, k, g, s);
  return output;
}

// rfeatures: the NHWC features that mmcv's forward saves for the backward.
static std::tuple<Tensor, Tensor> mmcv_carafe_backward(
    const Tensor& grad_output, const Tensor& rfeatures, const Tensor& masks,
    int64_t c, int64_t h, int64_t w, int64_t k, int64_t g, int64_t s) {
  const int64_t n = grad_output.size(0);
  Tensor rgrad_output = cuda_emu_zeros(grad_output.sizes(), grad_output);
  Tensor rgrad_input_hs = cuda_emu_zeros(grad_output.sizes(), grad_output);
  Tensor rgrad_input = cuda_emu_zeros({n, c, h, w}, grad_output);
  Tensor rgrad_masks = cuda_emu_zeros(masks.sizes(), masks);
  Tensor grad_input = cuda_emu_zeros({n, c, h, w}, grad_output);
  Tensor grad_masks = cuda_emu_zeros(masks.sizes(), masks);
  CARAFEBackwardCUDAKernelLauncher(
      grad_output.contiguous(), rfeatures, masks, rgrad_output,
      rgrad_input_hs, rgrad_input, rgrad_masks, grad_input, grad_masks, k, g,
      s);
  return {grad_input, grad_masks};
}

TORCH_LIBRARY(mmcv_carafe_emu, m) {
  m.def("carafe_forward(Tensor features, Tensor masks, int k, int g, int s)"
        " -> Tensor");
  m.def("carafe_backward(Tensor grad_output, Tensor rfeatures, "
        "Tensor masks, int c, int h, int w, int k, int g, int s) "
        "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mmcv_carafe_emu, CUDA, m) {
  m.impl("carafe_forward", &mmcv_carafe_forward);
  m.impl("carafe_backward", &mmcv_carafe_backward);
}
'''

_PROLOGUE = r'''
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>

using at::Tensor;
using phalf = at::Half;
#define __PHALF(x) (x)
#define AT_CUDA_CHECK(x) C10_CUDA_KERNEL_LAUNCH_CHECK()
#define THREADS_PER_BLOCK 512  // as mmcv's common_cuda_helper.hpp
'''


def mmcv_source_dir():
    """The installed mmcv's csrc folder."""
    import mmcv
    csrc = osp.join(osp.dirname(mmcv.__file__), 'ops', 'csrc')
    if not osp.isdir(csrc):
        raise FileNotFoundError(
            f'mmcv {mmcv.__version__} at {osp.dirname(mmcv.__file__)} has no '
            'ops/csrc source folder')
    return csrc


def _without_includes(text):
    return re.sub(r'^\s*#include .*$', '', text, flags=re.MULTILINE)


def load_mmcv():
    """Builds (once) and loads mmcv's CARAFE kernels under the emulation;
    the ops are ``torch.ops.mmcv_carafe_emu``."""
    csrc = mmcv_source_dir()
    with open(osp.join(csrc, 'common', 'cuda', 'carafe_cuda_kernel.cuh')) as f:
        kernels = _without_includes(f.read())
    with open(osp.join(csrc, 'pytorch', 'cuda', 'carafe_cuda.cu')) as f:
        launchers = _without_includes(f.read())
    # A conversion only nvcc's at::Half has; the value is already the type
    # the emulated shuffle takes.
    kernels = kernels.replace('__PHALF(val).operator __half()', '__PHALF(val)')
    build = osp.join(cache_dir(), 'mmcv_source')
    os.makedirs(build, exist_ok=True)
    path = osp.join(build, 'mmcv_carafe.cu')
    text = _PROLOGUE + kernels + launchers + _ADAPTER
    if not osp.exists(path) or open(path).read() != text:
        with open(path, 'w') as f:
            f.write(text)
    return load(
        path, name='mmcv_carafe_emu', namespace='mmcv_unused', sources=())
