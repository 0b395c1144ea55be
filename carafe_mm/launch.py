"""What ``tools/train.py`` and ``tools/test.py`` share: arguments, building
the runner from a config (any library: the config's ``default_scope``
decides), and a clear message for checkpoints that are not safe to load.

Importing it registers carafe_mm's checkpoint loaders, which load local
files, URLs and model-zoo names with ``weights_only=True``
(:mod:`carafe_mm.engine.safe_loading`)."""
import os
import os.path as osp
from contextlib import contextmanager

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from carafe_mm.engine import (CorruptCheckpointError, UnsafeCheckpointError,
                              register_safe_loaders)

SAFE_HOOK = 'SafeCheckpointHook'


def parse_common_args(parser):
    """Add --cfg-options, --launcher and --local-rank to ``parser``."""
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
    return parser


def load_config(args):
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    # The config's custom_imports may have registered checkpoint loaders:
    # every checkpoint this run reads is loaded with weights_only=True ...
    register_safe_loaders()
    # ... and those it writes must load that way too.
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(h.get('type') == SAFE_HOOK for h in hooks):
        hooks.append(dict(type=SAFE_HOOK))
    cfg.custom_hooks = hooks
    return cfg


def _setup_training(cfg, args):
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if not torch.cuda.is_available():
            # mmengine's AmpOptimWrapper needs a GPU, and mmcv's CPU ops
            # (nms, RoIAlign) have no bfloat16 kernels for torch.autocast.
            raise ValueError('--amp needs a GPU: mmengine\'s AmpOptimWrapper '
                             'does not run on the CPU')
        if wrapper == 'OptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
        elif wrapper != 'AmpOptimWrapper':
            raise ValueError('--amp needs optim_wrapper.type OptimWrapper, '
                             f'but the config has {wrapper}')
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume


def _setup_testing(cfg, args):
    cfg.load_from = args.checkpoint
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file, but got {args.out}')
        # mmdet's own format (RLE masks, no ground truth) for detection
        dump = dict(
            type='DumpDetResults'
            if cfg.get('default_scope') == 'mmdet' else 'DumpResults',
            out_file_path=args.out)
        evaluator = cfg.test_evaluator
        cfg.test_evaluator = (list(evaluator) if isinstance(
            evaluator, (list, tuple)) else [evaluator]) + [dump]


def build_runner(args, mode):
    """The runner for ``tools/train.py`` (``mode='train'``) or
    ``tools/test.py`` (``mode='test'``)."""
    if 'LOCAL_RANK' not in os.environ:  # launchers that pass --local-rank
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = load_config(args)
    if mode == 'train':
        _setup_training(cfg, args)
    else:
        _setup_testing(cfg, args)
    if args.launcher != 'none' and not torch.cuda.is_available():
        from carafe_mm.engine import init_cpu_distributed
        init_cpu_distributed(args.launcher)
        # The defaults the runner gives DDP when there is no wrapper config.
        wrapper = dict(cfg.get('model_wrapper_cfg', None) or {})
        if wrapper.get('type', 'MMDistributedDataParallel') == \
                'MMDistributedDataParallel':
            wrapper['type'] = 'CPUDistributedDataParallel'
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters',
                           cfg.get('find_unused_parameters', False))
        cfg.model_wrapper_cfg = wrapper
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


@contextmanager
def explain_unsafe_checkpoint():
    """Exit with the message of a checkpoint that carafe_mm's loaders
    refused (unsafe, empty or truncated: the message names the file and
    what to do), without a traceback."""
    try:
        yield
    except (UnsafeCheckpointError, CorruptCheckpointError) as e:
        raise SystemExit(f'error: {e}') from e
