"""carafe_mm's models: the upsampler zoo, registered in mmengine's root
MODELS registry (needs mmengine; mmdet and mmseg integrations live in
``carafe_mm.mmdet`` and ``carafe_mm.mmseg``)."""
from . import complexity  # noqa: F401  (counts the op's FLOPs)
from .upsamplers import *  # noqa: F401,F403
from .upsamplers import __all__ as _upsamplers

__all__ = list(_upsamplers)
