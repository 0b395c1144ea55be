"""Loading of the compiled operator library ``carafe_mm._C``."""
import torch

try:
    from carafe_mm import _C  # noqa: F401  (registers torch.ops.carafe_mm)
except ImportError as e:  # not built, or built against another torch
    _C = None
    _LOAD_ERROR = e
else:
    _LOAD_ERROR = None


def extension_available():
    """Whether ``carafe_mm._C`` loaded (the compiled op exists)."""
    return _C is not None


def extension_error():
    """The ``ImportError`` that kept ``carafe_mm._C`` from loading, or None."""
    return _LOAD_ERROR


def _kernel_devices():
    if _C is None:
        return frozenset()
    return frozenset(device
                     for device, key in (('cpu', 'CPU'), ('cuda', 'CUDA'))
                     if torch._C._dispatch_has_kernel_for_dispatch_key(
                         'carafe_mm::carafe_forward', key))


# Looked up once: a plain set keeps carafe() traceable by torch.compile.
KERNEL_DEVICES = _kernel_devices()


def has_kernel(device_type):
    """Whether the compiled op has a kernel for ``device_type`` ('cpu',
    'cuda', ...)."""
    return device_type in KERNEL_DEVICES
