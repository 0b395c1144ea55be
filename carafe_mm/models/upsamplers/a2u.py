"""A2U: affinity-aware upsampling.

Shape letters: N batch, C channels, d rank, G groups, H×W input size,
s scale factor, k = up_kernel, k_a = affinity_kernel.
"""
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from ..pooling import adaptive_avg_pool2d
from .base import check_bool, check_int
from .reassembly import ReassemblyUpsampler


def per_sample_depthwise(x, filters):
    """Depth-wise convolution with a filter bank per sample.

    Args:
        x (Tensor): (N, C, H, W).
        filters (Tensor): (N, C·d, k_a, k_a); output channel c·d + r filters
            input channel c.

    Returns:
        Tensor: (N, C·d, H, W), zero padded.
    """
    n, c, h, w = x.shape
    k_a = filters.shape[-1]
    if n == 0:  # conv2d refuses zero groups; keep the graph for backward
        return x.new_zeros(0, filters.shape[1], h, w) + 0 * (
            x.sum() + filters.sum())
    # (1, N·C, H, W) with one group per (sample, channel)
    out = F.conv2d(
        x.reshape(1, n * c, h, w),
        filters.reshape(n * filters.shape[1], 1, k_a, k_a),
        padding=k_a // 2,
        groups=n * c)
    return out.reshape(n, filters.shape[1], h, w)


@MODELS.register_module()
class A2U(ReassemblyUpsampler):
    """Affinity-aware upsampling (Dai, Lu, Shen, `Learning Affinity-Aware
    Upsampling for Deep Image Matting <https://arxiv.org/abs/2011.14288>`_,
    CVPR 2021).

    The reassembly kernels come from a second-order (bilinear) similarity of
    the features instead of CARAFE's first-order map: with a rank-d
    factorisation A = U·Vᵀ of the per-channel affinity,

        kernels = P(cat_r(dwconv(U_r, x) ⊙ dwconv(V_r, x))),

    P a 1×1 projection C·d -> G·s²·k², then ``pixel_shuffle(s)``, a softmax
    over the k² taps, and the CARAFE reassembly (our op). As in the paper,
    X = Y = x (self-similarity), d = 1 by default, and the k_a×k_a
    depth-wise filters U_r, V_r are generated on the fly from x: adaptive
    average pooling to k_a×k_a, then a 1×1 convolution.

    Choices the paper leaves open, made here: the generating 1×1
    convolutions are depth-wise (each channel's filter comes from that
    channel's pooled map, 2·C·d parameters each), which keeps A2U lighter
    than CARAFE (about 27k parameters at C = 256, s = 2, k = 5 against 74k);
    ``share_uv=True`` uses one generated bank for both U and V; P starts near
    zero, so a fresh A2U is a uniform k×k average like a fresh CARAFE.

    Args:
        channels (int): C.
        scale_factor (int): s. Defaults to 2.
        up_kernel (int): k, odd. Defaults to 5.
        up_group (int): G, a divisor of C. Defaults to 1.
        affinity_kernel (int): k_a, odd. Defaults to 3.
        rank (int): d. Defaults to 1.
        share_uv (bool): V = U. Defaults to False.
        init_cfg (dict, optional): see :class:`BaseUpsampler`.
    """

    def __init__(self,
                 channels,
                 scale_factor=2,
                 up_kernel=5,
                 up_group=1,
                 affinity_kernel=3,
                 rank=1,
                 share_uv=False,
                 init_cfg=None):
        super().__init__(channels, scale_factor, up_kernel, up_group,
                         'softmax', init_cfg)
        self.affinity_kernel = check_int(
            'affinity_kernel', affinity_kernel, odd=True)
        self.rank = check_int('rank', rank)
        self.share_uv = check_bool('share_uv', share_uv)
        cd = channels * self.rank
        self.u_generator = nn.Conv2d(channels, cd, 1, groups=channels)
        self.v_generator = (None if self.share_uv else nn.Conv2d(
            channels, cd, 1, groups=channels))
        self.projection = nn.Conv2d(cd, self.encoded_channels, 1)
        self.reset_parameters()

    def reset_parameters(self):
        for gen in (self.u_generator, self.v_generator):
            if gen is not None:
                nn.init.ones_(gen.weight)
                nn.init.zeros_(gen.bias)
        nn.init.normal_(self.projection.weight, std=0.001)
        nn.init.zeros_(self.projection.bias)

    def encode(self, x):
        # (N, C, k_a, k_a): the pooled maps the filters are generated from
        pooled = adaptive_avg_pool2d(x, self.affinity_kernel)
        u = per_sample_depthwise(x, self.u_generator(pooled))
        v = (
            u if self.v_generator is None else per_sample_depthwise(
                x, self.v_generator(pooled)))
        # (N, C·d, H, W) -> (N, G·s²·k², H, W)
        return self.projection(u * v)

    def extra_repr(self):
        return f'{super().extra_repr()}, rank={self.rank}'
