"""Sub-pixel convolution (pixel shuffle)."""
import torch.nn as nn
from mmengine.registry import MODELS

from .base import BaseUpsampler, check_int, pixel_shuffle


@MODELS.register_module()
class PixelShuffle(BaseUpsampler):
    """A convolution C -> s²·C at low resolution, then ``pixel_shuffle(s)``
    (P.S. in Table 2 of `CARAFE <https://arxiv.org/abs/1905.02188>`_).

    Args:
        channels (int): C.
        scale_factor (int): s. Defaults to 2.
        kernel_size (int): odd kernel size of the convolution. Defaults to 3.
        init_cfg (dict, optional): see :class:`BaseUpsampler`.
    """

    def __init__(self, channels, scale_factor=2, kernel_size=3, init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg)
        self.kernel_size = check_int('kernel_size', kernel_size, odd=True)
        self.conv = nn.Conv2d(
            channels,
            channels * self.scale_factor**2,
            kernel_size,
            padding=kernel_size // 2)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        self.check_input(x)
        return pixel_shuffle(self.conv(x), self.scale_factor)
