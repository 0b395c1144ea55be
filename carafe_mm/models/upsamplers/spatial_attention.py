"""Spatial attention: per-pixel rescaling of the upsampled features."""
import torch.nn as nn
from mmengine.registry import MODELS

from .carafe import CARAFE


@MODELS.register_module()
class SpatialAttention(CARAFE):
    """Spatial attention upsampler of Table 2 of `CARAFE
    <https://arxiv.org/abs/1905.02188>`_: CARAFE with k_up = 1 and no kernel
    normaliser, i.e. nearest-neighbour upsampling rescaled by a predicted
    weight per output pixel (and group).

    The paper leaves the initialisation open; the content encoder's bias
    starts at 1 (weights near zero), so a fresh module is nearest-neighbour
    upsampling, as a fresh CARAFE is a uniform average.

    Args:
        channels (int): C.
        scale_factor (int): s. Defaults to 2.
        up_group (int): G, a divisor of C. Defaults to 1.
        encoder_kernel (int): odd. Defaults to 3.
        compressed_channels (int): Defaults to 64.
        init_cfg (dict, optional): see :class:`BaseUpsampler`.
    """

    def __init__(self,
                 channels,
                 scale_factor=2,
                 up_group=1,
                 encoder_kernel=3,
                 compressed_channels=64,
                 init_cfg=None):
        super().__init__(
            channels,
            scale_factor,
            up_kernel=1,
            up_group=up_group,
            encoder_kernel=encoder_kernel,
            compressed_channels=compressed_channels,
            normalizer=None,
            init_cfg=init_cfg)

    def reset_parameters(self):
        super().reset_parameters()
        nn.init.ones_(self.content_encoder.bias)
