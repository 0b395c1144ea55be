"""carafe_mm: CARAFE upsampling for OpenMMLab.

``import carafe_mm`` (in a config: ``custom_imports = dict(imports=
['carafe_mm'])``) registers the upsampler zoo, :mod:`carafe_mm.models`, in
mmengine's root MODELS registry, where mmengine is installed. The op,
:mod:`carafe_mm.ops`, needs torch alone. The mmdet and mmseg integrations
are registered by importing ``carafe_mm.mmdet`` and ``carafe_mm.mmseg``.
"""
from .version import __version__


def _has_mmengine():
    try:
        import mmengine  # noqa: F401
    except ModuleNotFoundError as error:
        if error.name != 'mmengine':  # installed, but lacks a dependency
            raise
        return False
    return True


if _has_mmengine():
    from . import models  # noqa: F401  (registers the upsampler zoo)

__all__ = ['__version__']
