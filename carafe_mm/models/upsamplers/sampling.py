"""Bilinear sampling at offset positions, shared by GUM and DySample.

Shape letters: N batch, C channels, g offset groups, H×W input size,
s scale factor.
"""
import torch
import torch.nn.functional as F


def sample_with_offsets(x, offsets, scale_factor):
    """Sample x bilinearly at the output grid plus offsets.

    Output pixel (oy, ox) of group j reads x at input position
    ((ox + 0.5) / s - 0.5 + dx, (oy + 0.5) / s - 0.5 + dy) in input pixels,
    where (dx, dy) = offsets[:, 2j:2j + 2, oy, ox]; zero offsets give
    exactly ``F.interpolate(x, scale_factor=s, mode='bilinear',
    align_corners=False)``. Positions outside x take its border values.

    Args:
        x (Tensor): (N, C, H, W).
        offsets (Tensor): (N, 2g, sH, sW), g a divisor of C; channel 2j is
            dx and 2j + 1 is dy of group j (channels j·C/g to (j+1)·C/g - 1).
        scale_factor (int): s.

    Returns:
        Tensor: (N, C, sH, sW), of x's dtype (computed in float32).
    """
    n, c, h, w = x.shape
    groups = offsets.shape[1] // 2
    out_h, out_w = offsets.shape[2:]
    s = scale_factor
    # Positions in float32 whatever x's dtype: in half precision they would
    # be off by up to a pixel on wide maps.
    offsets = offsets.float()
    # (sW,), (sH,): output pixel centres in input pixels, plus the half pixel
    # of grid_sample's align_corners=False convention
    xs = (torch.arange(out_w, device=x.device, dtype=torch.float32) + 0.5) / s
    ys = (torch.arange(out_h, device=x.device, dtype=torch.float32) + 0.5) / s
    # (N, g, 2, sH, sW) -> (N·g, sH, sW, 2), normalised to [-1, 1]
    offsets = offsets.reshape(n, groups, 2, out_h, out_w)
    gx = (xs.view(1, 1, 1, -1) + offsets[:, :, 0]) * (2.0 / w) - 1
    gy = (ys.view(1, 1, -1, 1) + offsets[:, :, 1]) * (2.0 / h) - 1
    grid = torch.stack((gx, gy), dim=-1).reshape(n * groups, out_h, out_w, 2)
    # (N·g, C/g, H, W) sampled to (N·g, C/g, sH, sW)
    out = F.grid_sample(
        x.float().reshape(n * groups, c // groups, h, w),
        grid,
        mode='bilinear',
        padding_mode='border',
        align_corners=False)
    return out.reshape(n, c, out_h, out_w).to(x.dtype)
