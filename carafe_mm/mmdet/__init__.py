"""carafe_mm for mmdet: the upsampler zoo in the FPN and the mask head.

``custom_imports = dict(imports=['carafe_mm.mmdet'])`` registers
:class:`UpsamplerFPN` and :class:`UpsamplerMaskHead` in mmdet's registry,
the upsamplers in mmengine's root registry, and :class:`SafeCheckpointHook`.
"""
import carafe_mm.compat  # noqa: F401
import carafe_mm.models  # noqa: F401
from .upsampler_fpn import UpsamplerFPN
from .upsampler_mask_head import UpsamplerMaskHead

__all__ = ['UpsamplerFPN', 'UpsamplerMaskHead']
