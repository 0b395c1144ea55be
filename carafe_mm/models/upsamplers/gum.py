"""GUM: the guided upsampling module (learned offsets + bilinear sampling).

Shape letters: N batch, C channels, H×W input size, s scale factor.
"""
import torch.nn as nn
from mmengine.registry import MODELS

from .base import BaseUpsampler, check_int, pixel_shuffle
from .sampling import sample_with_offsets


@MODELS.register_module()
class GUM(BaseUpsampler):
    """Guided upsampling module (Mazzini, `Guided Upsampling Network for
    Real-Time Semantic Segmentation <https://arxiv.org/abs/1807.07466>`_,
    BMVC 2018), as compared in Table 2 of `CARAFE
    <https://arxiv.org/abs/1905.02188>`_.

    A small branch (3×3 conv C -> C_g, ReLU, 3×3 conv C_g -> 2·s²) predicts,
    at low resolution, an offset (dx, dy) for each of the s² output pixels of
    every input pixel; ``pixel_shuffle`` spreads them to (N, 2, sH, sW) and
    the output is x sampled bilinearly at the output grid plus the offsets
    (in input pixels). The last convolution starts near zero, so a fresh GUM
    is bilinear upsampling.

    Args:
        channels (int): C.
        scale_factor (int): s. Defaults to 2.
        guide_channels (int): C_g. Defaults to 64.
        init_cfg (dict, optional): see :class:`BaseUpsampler`.
    """

    def __init__(self,
                 channels,
                 scale_factor=2,
                 guide_channels=64,
                 init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg)
        self.guide_channels = check_int('guide_channels', guide_channels)
        self.guide = nn.Sequential(
            nn.Conv2d(channels, guide_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(guide_channels, 2 * self.scale_factor**2, 3, padding=1))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_normal_(self.guide[0].weight, nonlinearity='relu')
        nn.init.zeros_(self.guide[0].bias)
        nn.init.normal_(self.guide[2].weight, std=0.001)
        nn.init.zeros_(self.guide[2].bias)

    def forward(self, x):
        self.check_input(x)
        # (N, 2·s², H, W) -> (N, 2, sH, sW)
        offsets = pixel_shuffle(self.guide(x), self.scale_factor)
        return sample_with_offsets(x, offsets, self.scale_factor)
