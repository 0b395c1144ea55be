"""Matching the size of an upsampled map to a target's."""
import torch
import torch.nn.functional as F


def match_size(x, size):
    """Crop x, or pad it by replicating its last row / column, to ``size``
    (H, W). An s× upsampled map is off by less than s pixels from a target
    whose size is not divisible by s; cropping or edge-padding, unlike
    resizing, keeps the upsampler's output values where they are.

    With symbolic sizes (``torch.export`` / ``torch.onnx.export`` with
    dynamic shapes) it is one gather per axis of the rows / columns
    ``min(i, size - 1)``, which does both without a branch on the sizes, so
    the graph stays right at every size."""
    if not all(isinstance(v, int) for v in (*size, *x.shape[2:])):
        for dim, length in ((2, size[0]), (3, size[1])):
            index = torch.arange(
                length, device=x.device).clamp(max=x.shape[dim] - 1)
            x = x.index_select(dim, index)
        return x
    dh, dw = size[0] - x.shape[2], size[1] - x.shape[3]
    if dh < 0 or dw < 0:
        x = x[:, :, :size[0], :size[1]]
    if dh > 0 or dw > 0:
        x = F.pad(x, (0, max(dw, 0), 0, max(dh, 0)), mode='replicate')
    return x
