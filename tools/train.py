"""Train a detector or a segmentor: mmdet 3.3's ``tools/train.py`` (mmseg
1.2's takes a subset of its arguments) for any config, the library chosen
by the config's ``default_scope``.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--auto-scale-lr]
        [--resume [CHECKPOINT]] [--cfg-options k=v ...]
        [--launcher none|pytorch|slurm|mpi]

What carafe_mm adds (carafe_mm.compat): every checkpoint the run reads
(pretrained backbones from URLs and model zoos, ``load_from``, ``--resume``)
loads with ``weights_only=True``, and one that is refused ends the run with
a message naming the file; without GPUs, ``--launcher pytorch`` (what
tools/dist_train.sh passes) or ``slurm`` runs the processes on the CPU with
gloo. carafe_mm's configs add SafeCheckpointHook, so the checkpoints they
write load with ``weights_only=True`` too.
"""
import argparse
import os
import os.path as osp
import sys
import warnings

import torch
from mmengine.config import DictAction

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from carafe_mm import compat  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (needs a GPU)')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the learning rate by the total batch size over the '
        'config\'s auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or from the latest one in the '
        'work dir when no path is given')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value pairs, e.g. '
        'train_cfg.max_epochs=2 model.neck.upsample_cfg.type=Nearest')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank; older ones --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)

    # load config (this runs its custom_imports; carafe_mm's
    # weights_only=True checkpoint loaders are registered after them)
    # work_dir is determined in this priority: CLI > config > file name
    cfg = compat.load_config(args.config, args.cfg_options, args.work_dir)
    cfg.launcher = args.launcher

    # SafeCheckpointHook comes from the config (every carafe_mm config has
    # it), so that mmdet's and mmseg's own tools save safely too.
    hooks = [hook.get('type') for hook in cfg.get('custom_hooks', None) or []]
    if 'SafeCheckpointHook' not in hooks:
        warnings.warn(
            f'{args.config} has no SafeCheckpointHook in custom_hooks: the '
            'checkpoints of this run will not load with weights_only=True '
            '(torch\'s default). Add custom_hooks = '
            '[dict(type=\'SafeCheckpointHook\')] and '
            'custom_imports = dict(imports=[\'carafe_mm.compat\']).')

    # enable automatic-mixed-precision training
    if args.amp:
        if not torch.cuda.is_available():
            # mmengine's AmpOptimWrapper needs a GPU, and mmcv's CPU ops
            # (nms, RoIAlign) have no bfloat16 kernels for torch.autocast.
            raise ValueError('--amp needs a GPU: mmengine\'s AmpOptimWrapper '
                             'does not run on the CPU')
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if wrapper == 'OptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
        elif wrapper != 'AmpOptimWrapper':
            raise ValueError('--amp needs optim_wrapper.type OptimWrapper, '
                             f'but {args.config} has {wrapper}')

    # enable automatically scaling LR
    if args.auto_scale_lr:
        if 'base_batch_size' not in (cfg.get('auto_scale_lr', None) or {}):
            raise ValueError(
                f'--auto-scale-lr needs auto_scale_lr.base_batch_size (the '
                f'total batch size the learning rate is set for) in '
                f'{args.config}, e.g. --cfg-options '
                'auto_scale_lr.base_batch_size=16')
        cfg.auto_scale_lr.enable = True

    # resume is determined in this priority: resume from > auto_resume
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    with compat.explain_unsafe_checkpoint():
        # build the runner from config (without GPUs, the launcher's
        # processes run on the CPU with gloo)
        runner = compat.build_runner(cfg)

        # start training
        runner.train()


if __name__ == '__main__':
    main()
