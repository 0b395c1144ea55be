"""carafe_mm's models: the upsampler zoo, registered in mmengine's root
MODELS registry (needs mmengine; imported by ``import carafe_mm``). The mmdet
and mmseg integrations live in ``carafe_mm.mmdet`` and ``carafe_mm.mmseg``;
their names are reserved here so that a missing import is named."""
from . import complexity  # noqa: F401  (counts the op's FLOPs)
from . import integration_names  # noqa: F401
from .upsamplers import *  # noqa: F401,F403
from .upsamplers import __all__ as _upsamplers

__all__ = list(_upsamplers)
