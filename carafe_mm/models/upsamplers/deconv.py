"""Transposed convolution."""
import torch.nn as nn
from mmengine.registry import MODELS

from .base import BaseUpsampler, check_int


@MODELS.register_module()
class Deconv(BaseUpsampler):
    """A learned transposed convolution of stride s (Deconv in Tables 2-3 of
    `CARAFE <https://arxiv.org/abs/1905.02188>`_).

    Padding and output padding are chosen so that the output is exactly
    sH×sW for every kernel size: 3 is the paper's cost comparison (1180k
    FLOPs per input pixel at C = 256), 2 is mmdet's mask-head deconvolution.

    Args:
        channels (int): C.
        scale_factor (int): s. Defaults to 2.
        kernel_size (int): K >= 1. Defaults to 3.
        init_cfg (dict, optional): see :class:`BaseUpsampler`.
    """

    relu_in_mask_head = True  # as after mmdet's mask-head deconvolution

    def __init__(self, channels, scale_factor=2, kernel_size=3, init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg)
        kernel_size = check_int('kernel_size', kernel_size)
        s = self.scale_factor
        if s == 1 and kernel_size % 2 == 0:
            raise ValueError('kernel_size must be odd when scale_factor is '
                             '1 (no padding gives H×W), but got '
                             f'{kernel_size}')
        # (H - 1)·s - 2p + K + output_padding = sH
        padding = max(0, -(-(kernel_size - s) // 2))
        output_padding = s - kernel_size + 2 * padding
        self.kernel_size = kernel_size
        self.deconv = nn.ConvTranspose2d(
            channels,
            channels,
            kernel_size,
            stride=s,
            padding=padding,
            output_padding=output_padding)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_normal_(
            self.deconv.weight, mode='fan_out', nonlinearity='relu')
        nn.init.zeros_(self.deconv.bias)

    def forward(self, x):
        self.check_input(x)
        return self.deconv(x)
