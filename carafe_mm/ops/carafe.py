"""The CARAFE operator: ``carafe()`` and the choice of its backend.

Shape letters: N batch, C channels, G groups, H×W input size, s scale factor,
k kernel size.

    features (N, C, H, W), masks (N, G·k², sH, sW) -> output (N, C, sH, sW)

Backends:

* ``'compiled'``: ``torch.ops.carafe_mm.carafe_forward`` /
  ``carafe_backward`` from the ``carafe_mm._C`` extension (CPU and, when
  built with CUDA, CUDA kernels), with a fake kernel and autograd registered
  here so that ``opcheck``, FakeTensor tracing and
  ``torch.compile(fullgraph=True)`` see it;
* ``'reference'``: :func:`carafe_reference`, pure PyTorch;
* ``'auto'`` (default): compiled where the extension has a kernel for the
  tensors' device, else the reference with a one-time warning.

The environment variable ``CARAFE_MM_BACKEND`` sets the initial backend (for
debugging: ``CARAFE_MM_BACKEND=reference``); :func:`set_backend` changes it.
"""
import os
import warnings

import torch

from ._autograd import CarafeFunction, register_autograd
from ._checks import as_int, check_carafe_args, check_carafe_backward_args
from ._extension import extension_available, extension_error, has_kernel
from .onnx import carafe_matmul, export_with_matmul
from .reference import carafe_reference

BACKENDS = ('auto', 'compiled', 'reference')
_warned_fallback = set()


def _validate_backend(name, source):
    if name not in BACKENDS:
        raise ValueError(f'carafe_mm: {source} must be one of {BACKENDS}, '
                         f'but got {name!r}')
    return name


_backend = _validate_backend(
    os.environ.get('CARAFE_MM_BACKEND', 'auto'), 'CARAFE_MM_BACKEND')


def set_backend(name):
    """Choose the implementation behind :func:`carafe`: ``'auto'``,
    ``'compiled'`` or ``'reference'``."""
    global _backend
    _backend = _validate_backend(name, 'the backend')


def get_backend():
    """The current backend name (see :func:`set_backend`)."""
    return _backend


if extension_available():

    @torch.library.register_fake('carafe_mm::carafe_forward')
    def _carafe_forward_fake(features, masks, kernel_size, group_size,
                             scale_factor):
        # The schema takes Scalars: refuse bools and floats as the C++ does.
        kernel_size, group_size, scale_factor = (as_int(
            'kernel_size', kernel_size), as_int(
                'group_size', group_size), as_int('scale_factor',
                                                  scale_factor))
        check_carafe_args(features, masks, kernel_size, group_size,
                          scale_factor)
        n, c, h, w = features.shape
        return features.new_empty((n, c, scale_factor * h, scale_factor * w))

    @torch.library.register_fake('carafe_mm::carafe_backward')
    def _carafe_backward_fake(grad_output, features, masks, kernel_size,
                              group_size, scale_factor):
        kernel_size, group_size, scale_factor = (as_int(
            'kernel_size', kernel_size), as_int(
                'group_size', group_size), as_int('scale_factor',
                                                  scale_factor))
        check_carafe_backward_args(grad_output, features, masks, kernel_size,
                                   group_size, scale_factor)
        return (features.new_empty(features.shape),
                masks.new_empty(masks.shape))

    register_autograd()


def is_tracing():
    """Whether carafe() is being traced (torch.compile, torch.export, ONNX,
    TorchScript), where the op itself must appear in the graph."""
    return (torch.compiler.is_compiling() or torch.compiler.is_exporting()
            or torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.onnx.is_in_onnx_export())


def _use_compiled(device):
    """Whether :func:`carafe` runs the compiled op for tensors on
    ``device``."""
    if _backend == 'reference':
        return False
    if has_kernel(device.type):
        return True
    if device.type == 'meta' and extension_available():
        return True  # the fake kernel serves meta tensors
    if _backend == 'compiled':
        if not extension_available():
            raise RuntimeError(
                'carafe_mm: the compiled backend was requested, but '
                f'carafe_mm._C failed to load ({extension_error()}). Build '
                'it with `pip install --no-build-isolation -e .`, or set '
                'CARAFE_MM_BACKEND=reference.')
        raise RuntimeError(
            'carafe_mm: the compiled backend was requested, but carafe_mm._C '
            f'has no kernel for device {device.type!r} (rebuild with '
            'FORCE_CUDA=1 for CUDA), or set CARAFE_MM_BACKEND=reference.')
    if device.type not in _warned_fallback:
        _warned_fallback.add(device.type)
        reason = (f'carafe_mm._C failed to load ({extension_error()})'
                  if not extension_available() else
                  f'carafe_mm._C has no kernel for device {device.type!r}')
        warnings.warn(
            f'carafe_mm: {reason}; falling back to the slow pure-PyTorch '
            'carafe_reference.',
            RuntimeWarning,
            stacklevel=3)
    return False


def _autocast_eligible(tensor):
    """Whether ``torch.autocast`` casts ``tensor``: floating point but not
    float64, which autocast leaves as it is."""
    return tensor.is_floating_point() and tensor.dtype != torch.float64


def _autocast(features, masks):
    """Under ``torch.autocast``, run in the autocast dtype (the op
    accumulates in float32), as convolutions do; this also reconciles
    float32 masks from a softmax with half-precision features. float64
    inputs stay float64, as they do for torch's own ops."""
    device_type = features.device.type
    if (device_type in ('cpu', 'cuda')
            and torch.is_autocast_enabled(device_type)
            and isinstance(masks, torch.Tensor)
            and _autocast_eligible(features) and _autocast_eligible(masks)):
        dtype = torch.get_autocast_dtype(device_type)
        return features.to(dtype), masks.to(dtype)
    return features, masks


def carafe(features, masks, kernel_size, group_size, scale_factor):
    """Content-aware reassembly of features (CARAFE).

    Each output pixel (oy, ox) is the weighted sum of the k×k neighbourhood
    of input pixel (oy // s, ox // s), zero padded, with its own
    (already normalised) kernel; the channels of a group share the kernel.

    Same arguments and semantics as ``mmcv.ops.carafe``; see `CARAFE
    <https://arxiv.org/abs/1905.02188>`_.

    Args:
        features (Tensor): (N, C, H, W) features to upsample.
        masks (Tensor): (N, G·k², sH, sW) reassembly kernels, tap (ky, kx)
            of group g at channel ``g·k² + ky·k + kx``; channel c belongs to
            group ``c // (C // G)``.
        kernel_size (int): k, odd.
        group_size (int): G, a divisor of C.
        scale_factor (int): s >= 1.

    Returns:
        Tensor: (N, C, sH, sW), contiguous, of the dtype of ``features``
        (of the autocast dtype inside ``torch.autocast``, unless an input
        is float64).
    """
    kernel_size = as_int('kernel_size', kernel_size)
    group_size = as_int('group_size', group_size)
    scale_factor = as_int('scale_factor', scale_factor)
    if not isinstance(features, torch.Tensor):
        raise TypeError('carafe: features must be a torch.Tensor, but got '
                        f'{type(features).__name__}')
    features, masks = _autocast(features, masks)
    if export_with_matmul(features.device.type):
        # torch.onnx.export: standard ONNX operators (see ops/onnx.py)
        return carafe_matmul(features, masks, kernel_size, group_size,
                             scale_factor)
    if _use_compiled(features.device):
        if is_tracing():
            return torch.ops.carafe_mm.carafe_forward(features, masks,
                                                      kernel_size, group_size,
                                                      scale_factor)
        # forward-mode AD and torch.func's vmap need the autograd.Function
        return CarafeFunction.apply(features, masks, kernel_size, group_size,
                                    scale_factor)
    return carafe_reference(features, masks, kernel_size, group_size,
                            scale_factor)
