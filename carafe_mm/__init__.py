"""carafe_mm: CARAFE upsampling for OpenMMLab.

``carafe_mm.ops`` needs torch alone. The upsampler modules and the
mmdet/mmseg integrations live in sub-packages that import their library
on demand.
"""
from .version import __version__

__all__ = ['__version__']
