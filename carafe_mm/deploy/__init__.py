"""Deployment: export of mmdet / mmseg models that use carafe_mm to ONNX,
and their check against onnxruntime (``tools/deployment/pytorch2onnx.py``).

Needs ``onnx`` and ``onnxruntime`` (and ``onnxscript``, which
``torch.onnx.export`` uses), imported on demand.
"""
from .export import check_onnx, export_onnx
from .verify import compare_with_onnxruntime, format_table
from .wrappers import exportable

__all__ = [
    'check_onnx', 'compare_with_onnxruntime', 'export_onnx', 'exportable',
    'format_table'
]
