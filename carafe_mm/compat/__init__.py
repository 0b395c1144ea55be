"""Workarounds for gaps in mmengine 0.10.7 under torch >= 2.6; nothing here
is about CARAFE, and each module can be deleted once mmengine closes its gap:

* :mod:`.safe_checkpoint_hook` (:class:`SafeCheckpointHook`): the runner
  saves ``HistoryBuffer`` objects and numpy values, which
  ``torch.load(weights_only=True)`` refuses. Delete it when mmengine saves
  checkpoints that load with ``weights_only=True``.
* :mod:`.safe_loading`: mmengine's ``CheckpointLoader`` unpickles URLs and
  model-zoo names with ``weights_only=False``. Delete it when mmengine loads
  every scheme with ``weights_only=True``.
* :mod:`.cpu_distributed`: the runner needs a GPU per process for
  distributed training. Delete it when mmengine sets up gloo and DDP without
  device ids on machines without GPUs.

Importing this package registers :class:`SafeCheckpointHook` in mmengine's
``HOOKS`` and the safe loaders in ``CheckpointLoader``; ``carafe_mm.mmdet``
and ``carafe_mm.mmseg`` import it, so every config's ``custom_imports``
does.
"""
from .cpu_distributed import (CPUDistributedDataParallel, build_runner,
                              setup_cpu_distributed)
from .safe_checkpoint_hook import SafeCheckpointHook, from_safe, to_safe
from .safe_loading import (CorruptCheckpointError, UnsafeCheckpointError,
                           explain_unsafe_checkpoint, load_config,
                           register_safe_loaders, safe_load)

__all__ = [
    'CPUDistributedDataParallel', 'CorruptCheckpointError', 'build_runner',
    'SafeCheckpointHook', 'UnsafeCheckpointError', 'explain_unsafe_checkpoint',
    'from_safe', 'load_config', 'register_safe_loaders', 'safe_load',
    'setup_cpu_distributed', 'to_safe'
]
