"""Multi-process training and testing without GPUs.

mmengine's runner initialises torch.distributed through
``torch.cuda.set_device`` and wraps the model in DDP with ``device_ids``,
both of which fail on a CPU-only machine. :func:`setup_cpu_distributed`
sets up a gloo process group first (the runner then skips its own
initialisation) and has the runner wrap the model in
:class:`CPUDistributedDataParallel`, DDP without device ids.
``tools/train.py`` and ``tools/test.py`` call it when there is no GPU.
"""
import os

import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for modules on the CPU: the
    ``device_ids`` the runner passes are dropped (DDP requires None), and
    ``SyncBatchNorm`` layers (the paper's UperNet configs have them), which
    refuse CPU tensors in a group of several processes, become
    ``BatchNorm`` (as mmengine does for runs that are not distributed)."""

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(
            module=revert_sync_batchnorm(module), device_ids=None, **kwargs)


def _init_gloo(launcher):
    """A gloo process group from the launcher's environment (``pytorch``:
    torchrun's RANK / WORLD_SIZE / MASTER_*; ``slurm``: SLURM_PROCID /
    SLURM_NTASKS, with MASTER_ADDR / MASTER_PORT set by the caller)."""
    if dist.is_initialized():
        return
    if launcher == 'slurm':
        os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
        os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
        os.environ.setdefault('LOCAL_RANK', os.environ['SLURM_LOCALID'])
    elif launcher != 'pytorch':
        raise ValueError(f'--launcher must be pytorch or slurm on a machine '
                         f'without GPUs, but got {launcher!r}')
    dist.init_process_group(backend='gloo')


def setup_cpu_distributed(cfg):
    """Initialise gloo for ``cfg.launcher`` and make ``cfg``'s runner wrap
    the model in :class:`CPUDistributedDataParallel`, with the defaults the
    runner gives DDP when the config has no ``model_wrapper_cfg``."""
    _init_gloo(cfg.launcher)
    wrapper = dict(cfg.get('model_wrapper_cfg', None) or {})
    if wrapper.get('type', 'MMDistributedDataParallel') == \
            'MMDistributedDataParallel':
        wrapper['type'] = 'CPUDistributedDataParallel'
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return cfg


def build_runner(cfg):
    """The runner of ``cfg``, built as mmdet's and mmseg's tools build it
    (``Runner.from_cfg``, or the registered ``runner_type``); without GPUs,
    the processes of a ``cfg.launcher`` other than 'none' run on the CPU with
    gloo (:func:`setup_cpu_distributed`)."""
    import torch
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if cfg.launcher != 'none' and not torch.cuda.is_available():
        setup_cpu_distributed(cfg)
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
