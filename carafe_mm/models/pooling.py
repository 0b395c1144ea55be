"""Adaptive average pooling that stays right at every size of an exported
graph.

Shape letters: N batch, C channels, H×W input size, S_h×S_w output size.
"""
import torch
import torch.nn.functional as F


def _pooling_matrix(length, size, x):
    """(size, length): row i averages the input positions
    floor(i·length / size) to ceil((i + 1)·length / size) - 1, as
    ``adaptive_avg_pool`` does."""
    i = torch.arange(size, device=x.device).unsqueeze(1)
    j = torch.arange(length, device=x.device).unsqueeze(0)
    start = torch.div(i * length, size, rounding_mode='floor')
    end = torch.div((i + 1) * length + size - 1, size, rounding_mode='floor')
    inside = ((j >= start) & (j < end)).to(x.dtype)
    return inside / (end - start).to(x.dtype)


def adaptive_avg_pool2d(x, output_size):
    """``F.adaptive_avg_pool2d(x, output_size)`` for an (N, C, H, W) x.

    With concrete sizes it is that function. With symbolic ones
    (``torch.export`` / ``torch.onnx.export`` with dynamic shapes), whose
    translation of adaptive pooling is frozen to the export size, it is a
    product with the (S_h, H) and (S_w, W) averaging matrices, built from
    the sizes at run time: exact up to the order of the additions.
    """
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    h, w = x.shape[2:]
    if all(isinstance(v, int) for v in (h, w)):
        return F.adaptive_avg_pool2d(x, output_size)
    rows = _pooling_matrix(h, output_size[0], x)  # (S_h, H)
    cols = _pooling_matrix(w, output_size[1], x)  # (S_w, W)
    # (N, C, S_h, S_w) = rows · x · colsᵀ
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))
