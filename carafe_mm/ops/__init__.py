"""The CARAFE operator (needs torch alone)."""
from ._extension import extension_available, extension_error
from .carafe import BACKENDS, carafe, get_backend, set_backend
from .memory import cpu_cache_info, empty_cache
from .onnx import carafe_matmul  # also registers the ONNX translation
from .reference import carafe_reference

__all__ = [
    'BACKENDS', 'carafe', 'carafe_reference', 'carafe_matmul',
    'cpu_cache_info', 'empty_cache', 'extension_available', 'extension_error',
    'get_backend', 'set_backend'
]
