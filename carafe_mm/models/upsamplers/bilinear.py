"""Bilinear upsampling, and bilinear + 3×3 conv (the paper's B.C.)."""
from mmengine.registry import MODELS

from .base import InterpolateUpsampler


@MODELS.register_module()
class Bilinear(InterpolateUpsampler):
    """Bilinear upsampling (``align_corners=False``); no parameters.

    Args:
        channels (int): C.
        scale_factor (int): s. Defaults to 2.
        init_cfg (dict, optional): see :class:`BaseUpsampler`.
    """

    def __init__(self, channels, scale_factor=2, init_cfg=None):
        super().__init__(channels, scale_factor, 'bilinear', False, init_cfg)


@MODELS.register_module()
class BilinearConv(InterpolateUpsampler):
    """Bilinear upsampling followed by a 3×3 convolution (B.C. in Table 2 of
    `CARAFE <https://arxiv.org/abs/1905.02188>`_).

    Args:
        channels (int): C.
        scale_factor (int): s. Defaults to 2.
        init_cfg (dict, optional): see :class:`BaseUpsampler`.
    """

    def __init__(self, channels, scale_factor=2, init_cfg=None):
        super().__init__(channels, scale_factor, 'bilinear', True, init_cfg)
