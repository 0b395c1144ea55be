"""Pure-PyTorch CARAFE: the test oracle, and the fallback when the compiled
extension is missing.

Shape letters: N batch, C channels, G groups, H×W input size, s scale factor,
k kernel size, Cg = C / G channels per group.
"""
import torch
import torch.nn.functional as F

from ._checks import as_int, check_carafe_args


def carafe_reference(features, masks, kernel_size, group_size, scale_factor):
    """CARAFE reassembly written for clarity with ``unfold`` + ``einsum``.

    Same signature and semantics as :func:`carafe_mm.ops.carafe`; it is
    differentiable through autograd.
    """
    kernel_size = as_int('kernel_size', kernel_size)
    group_size = as_int('group_size', group_size)
    scale_factor = as_int('scale_factor', scale_factor)
    check_carafe_args(features, masks, kernel_size, group_size, scale_factor)
    n, c, h, w = features.shape
    k, g, s = kernel_size, group_size, scale_factor
    if features.numel() == 0 or masks.numel() == 0:
        # unfold rejects empty inputs; keep the graph so gradients are zeros.
        return (features.sum() + masks.sum()).expand(n, c, s * h, s * w) * 0

    # (N, C·k², H·W): the zero-padded k×k neighbourhood of every input pixel,
    # channel c·k² + ky·k + kx
    cols = F.unfold(features, kernel_size=k, padding=k // 2)
    # (N, G, Cg, k², H, W)
    cols = cols.reshape(n, g, c // g, k * k, h, w)
    # (N, G, k², H, s, W, s): output pixel (s·y + p, s·x + q) reads the
    # neighbourhood of input pixel (y, x)
    kernels = masks.reshape(n, g, k * k, h, s, w, s)
    # (N, G, Cg, H, s, W, s)
    out = torch.einsum('ngckyx,ngkypxq->ngcypxq', cols, kernels)
    # (N, C, sH, sW)
    return out.reshape(n, c, s * h, s * w)
