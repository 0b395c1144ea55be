"""Checkpoints that load with ``torch.load(weights_only=True)``.

torch >= 2.6 loads with ``weights_only=True`` by default, which refuses
anything but tensors and plain Python containers and scalars. mmengine's
runner saves more: the message hub's ``HistoryBuffer`` objects (numpy arrays
inside, and a class that unpickles through ``getattr``), numpy scalars in
``meta`` (a best score, a seed), numpy arrays. So a checkpoint mmengine just
saved cannot be loaded by mmdet's or mmseg's ``tools/test.py``, nor resumed.

Widening the unpickler's allowlist would not do (``HistoryBuffer`` is
rebuilt through ``getattr``, which an allowlist cannot make safe), and
turning ``weights_only`` off would load any code. Instead this hook makes
what is saved plain: before a checkpoint is written, numpy scalars become
Python numbers, numpy arrays tensors, and each ``HistoryBuffer`` a tagged
dict of lists; after a checkpoint is loaded (resume), the tagged dicts become
``HistoryBuffer`` objects again.
"""
import numbers
import warnings
from collections import OrderedDict

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS

HISTORY_BUFFER_TAG = '__carafe_mm_history_buffer__'


def to_safe(obj, path='checkpoint'):
    """A copy of ``obj`` that ``torch.load(weights_only=True)`` accepts."""
    if isinstance(obj, (torch.Tensor, str, bytes, bool, type(None))):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (int, float)):
        return obj
    if isinstance(obj, numbers.Number):
        return complex(obj) if isinstance(obj, complex) else float(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, HistoryBuffer):
        log_history, count_history = obj.data
        return {
            HISTORY_BUFFER_TAG: True,
            'log_history': log_history.tolist(),
            'count_history': count_history.tolist(),
            'max_length': int(obj.max_length),
        }
    if isinstance(obj, OrderedDict):
        return OrderedDict(
            (k, to_safe(v, f'{path}.{k}')) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: to_safe(v, f'{path}.{k}') for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [to_safe(v, f'{path}[{i}]') for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, torch.Size):
        return tuple(obj)
    warnings.warn(f'{path}: a {type(obj).__name__} cannot be saved safely; '
                  'storing its repr instead')
    return repr(obj)


def from_safe(obj):
    """Undo :func:`to_safe` for the objects the runner needs back."""
    if isinstance(obj, dict):
        if obj.get(HISTORY_BUFFER_TAG) is True:
            return HistoryBuffer(obj['log_history'], obj['count_history'],
                                 obj['max_length'])
        items = ((k, from_safe(v)) for k, v in obj.items())
        return OrderedDict(items) if isinstance(obj,
                                                OrderedDict) else dict(items)
    if isinstance(obj, list):
        return [from_safe(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(from_safe(v) for v in obj)
    return obj


@HOOKS.register_module()
class SafeCheckpointHook(Hook):
    """Save checkpoints that load with ``weights_only=True`` (see the module
    docstring), and restore what the runner needs when resuming.

    Add it to a config as ``custom_hooks = [dict(type='SafeCheckpointHook')]``
    (carafe_mm's configs and ``tools/train.py`` do).
    """

    priority = 'VERY_LOW'  # after every other hook has added its entries

    def before_save_checkpoint(self, runner, checkpoint):
        safe = to_safe(checkpoint)
        checkpoint.clear()
        checkpoint.update(safe)

    def after_load_checkpoint(self, runner, checkpoint):
        if 'message_hub' in checkpoint:
            checkpoint['message_hub'] = from_safe(checkpoint['message_hub'])
