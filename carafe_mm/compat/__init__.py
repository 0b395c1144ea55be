"""Training-engine pieces shared by the detection and segmentation
integrations (need mmengine only). Importing it registers
:class:`SafeCheckpointHook` and loaders that load every checkpoint (local
file, URL, model zoo) with ``weights_only=True`` (see
:mod:`carafe_mm.engine.safe_loading`)."""
from .cpu_distributed import CPUDistributedDataParallel, init_cpu_distributed
from .safe_checkpoint_hook import SafeCheckpointHook, from_safe, to_safe
from .safe_loading import (CorruptCheckpointError, UnsafeCheckpointError,
                           register_safe_loaders, safe_load)

__all__ = [
    'CPUDistributedDataParallel', 'CorruptCheckpointError',
    'SafeCheckpointHook', 'UnsafeCheckpointError', 'from_safe',
    'init_cpu_distributed', 'register_safe_loaders', 'safe_load', 'to_safe'
]
