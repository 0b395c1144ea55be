"""carafe_mm for mmseg: the upsampler zoo in UperNet's PPM, FPN and FUSE.

``custom_imports = dict(imports=['carafe_mm.mmseg'])`` registers
:class:`UpsamplerUPerHead` in mmseg's registry, the upsamplers in mmengine's
root registry, and :class:`SafeCheckpointHook`.
"""
import carafe_mm.compat  # noqa: F401
import carafe_mm.models  # noqa: F401
from .upsampler_uper_head import UpsamplerUPerHead

__all__ = ['UpsamplerUPerHead']
