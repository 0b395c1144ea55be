"""Upsamplers, each registered in mmengine's root MODELS registry.

Every one is built as ``MODELS.build(dict(type=NAME, channels=C,
scale_factor=s, **options))`` and maps (N, C, H, W) to (N, C, sH, sW); see
:class:`BaseUpsampler`.
"""
from .a2u import A2U
from .base import BaseUpsampler, InterpolateUpsampler
from .bilinear import Bilinear, BilinearConv
from .carafe import CARAFE
from .deconv import Deconv
from .dysample import DySample
from .gum import GUM
from .nearest import Nearest, NearestConv
from .pixel_shuffle import PixelShuffle
from .reassembly import ReassemblyUpsampler
from .spatial_attention import SpatialAttention

#: The names of the upsamplers, as used in configs' ``type`` keys.
UPSAMPLERS = ('Nearest', 'Bilinear', 'NearestConv', 'BilinearConv', 'Deconv',
              'PixelShuffle', 'GUM', 'SpatialAttention', 'CARAFE', 'DySample',
              'A2U')

__all__ = [
    'A2U', 'BaseUpsampler', 'Bilinear', 'BilinearConv', 'CARAFE', 'Deconv',
    'DySample', 'GUM', 'InterpolateUpsampler', 'Nearest', 'NearestConv',
    'PixelShuffle', 'ReassemblyUpsampler', 'SpatialAttention', 'UPSAMPLERS'
]
