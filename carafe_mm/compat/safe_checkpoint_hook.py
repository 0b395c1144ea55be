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
what is saved plain (:func:`to_safe`): before a checkpoint is written, numpy
scalars become Python numbers, numpy arrays tensors, each ``HistoryBuffer``
a tagged dict of lists, and what has no safe form (a scheduler's bound
method) is left out; after a checkpoint is loaded (resume), the tagged
dicts become ``HistoryBuffer`` objects again.
"""
import warnings
from collections import OrderedDict

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS

HISTORY_BUFFER_TAG = '__carafe_mm_history_buffer__'


class _Dropped:
    """What :func:`to_safe` returns for a value it cannot make safe."""


DROPPED = _Dropped()
_NUMERIC_KINDS = 'biufc'  # numpy dtype kinds torch.tensor takes


def _drop(obj, path):
    warnings.warn(f'{path}: a {type(obj).__name__} cannot be saved safely '
                  'and is left out of the checkpoint (on resume the '
                  'freshly built object keeps its own value)')
    return DROPPED


def to_safe(obj, path='checkpoint'):
    """A copy of ``obj`` that ``torch.load(weights_only=True)`` accepts.

    Subclasses of the plain types (``np.str_``, ``IntEnum``...) become the
    plain type, numpy scalars Python numbers, numeric numpy arrays tensors
    (other arrays lists), ``HistoryBuffer`` a tagged dict. What cannot be
    converted (a bound method, a datetime...) is left out of its dict (so
    that loading it into a scheduler or hook keeps the live value), or is
    None in a list.
    """
    if isinstance(obj, torch.Tensor) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return to_safe(obj.item(), path)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bytes):
        return bytes(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, complex):
        return complex(obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in _NUMERIC_KINDS:
            return torch.tensor(obj)
        return to_safe(obj.tolist(), path)
    if isinstance(obj, HistoryBuffer):
        log_history, count_history = obj.data
        return {
            HISTORY_BUFFER_TAG: True,
            'log_history': to_safe(log_history.tolist()),
            'count_history': to_safe(count_history.tolist()),
            'max_length': int(obj.max_length),
        }
    if isinstance(obj, dict):
        items = ((k, to_safe(v, f'{path}.{k}')) for k, v in obj.items())
        items = [(k, v) for k, v in items if v is not DROPPED]
        if not isinstance(obj, OrderedDict):
            return dict(items)
        safe = OrderedDict(items)
        metadata = getattr(obj, '_metadata', None)  # state dicts' versions
        if metadata is not None:
            safe._metadata = to_safe(metadata, f'{path}._metadata')
        return safe
    if isinstance(obj, (list, tuple)):
        items = [to_safe(v, f'{path}[{i}]') for i, v in enumerate(obj)]
        items = [None if v is DROPPED else v for v in items]
        return items if isinstance(obj, list) else tuple(items)
    return _drop(obj, path)


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
    (carafe_mm's configs do).
    """

    priority = 'LOWEST'  # after every other hook has added its entries

    def before_save_checkpoint(self, runner, checkpoint):
        safe = to_safe(checkpoint)
        checkpoint.clear()
        checkpoint.update(safe)

    def after_load_checkpoint(self, runner, checkpoint):
        if 'message_hub' in checkpoint:
            checkpoint['message_hub'] = from_safe(checkpoint['message_hub'])
