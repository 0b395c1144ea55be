"""Test (and evaluate) a checkpoint: mmdet 3.3's and mmseg 1.2's
``tools/test.py`` for any config, the library chosen by the config's
``default_scope``; their arguments mean here what they mean there.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--show] [--show-dir DIR] [--wait-time S] [--tta]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

CHECKPOINT is a path, a URL or a model-zoo name (``open-mmlab://...``).
What carafe_mm adds (carafe_mm.compat): every checkpoint loads with
``weights_only=True``, whatever its scheme, and one that is refused ends the
run with a message naming the file (those written by SafeCheckpointHook and
the official mmdet / mmseg ones load; for another checkpoint you trust, see
tools/misc/make_checkpoint_safe.py); without GPUs, ``--launcher pytorch``
(what tools/dist_test.sh passes) or ``slurm`` runs the processes on the CPU
with gloo.
"""
import argparse
import os
import os.path as osp
import sys
import warnings
from copy import deepcopy

from mmengine.config import ConfigDict, DictAction

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from carafe_mm import compat  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='dump the predictions to this .pkl file (mmdet: in the format '
        'of mmdet\'s DumpDetResults); for segmentation, a directory: the '
        'predicted label maps, as mmseg\'s --out')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved (detection: '
        'under work_dir/TIMESTAMP/, as mmdet does)')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value pairs, e.g. '
        'test_dataloader.batch_size=2 model.neck.upsample_cfg.type=Nearest')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument(
        '--tta', action='store_true', help='test time augmentation')
    # torch.distributed.launch passes --local-rank; older ones --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg, args):
    """Turn on the config's visualization hook for --show / --show-dir."""
    hook = cfg.default_hooks.get('visualization', None)
    if hook is None:
        raise ValueError(
            f'--show and --show-dir need default_hooks.visualization in '
            f'{args.config} (mmdet\'s and mmseg\'s default_runtime.py have '
            'it)')
    hook.draw = True
    if args.show:
        hook.show = True
        hook.wait_time = args.wait_time
    if args.show_dir:
        if cfg.get('default_scope') == 'mmseg':
            cfg.visualizer.save_dir = args.show_dir
        else:  # DetVisualizationHook's, under work_dir/TIMESTAMP/
            hook.test_out_dir = args.show_dir


def use_tta(cfg, config):
    """Test the config's ``tta_model`` on its ``tta_pipeline``; for a
    detector whose config has neither, mmdet's default (horizontal flip,
    boxes merged by NMS)."""
    if cfg.get('default_scope') == 'mmdet':
        if cfg.get('tta_model', None) is None:
            warnings.warn(f'{config} has no tta_model: using mmdet\'s '
                          'DetTTAModel (NMS at IoU 0.5, 100 boxes)')
            cfg.tta_model = dict(
                type='DetTTAModel',
                tta_cfg=dict(
                    nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
        if cfg.get('tta_pipeline', None) is None:
            warnings.warn(f'{config} has no tta_pipeline: using the test '
                          'pipeline with and without a horizontal flip')
            dataset = cfg.test_dataloader.dataset
            while 'dataset' in dataset:  # dataset wrappers
                dataset = dataset.dataset
            cfg.tta_pipeline = deepcopy(dataset.pipeline)
            flips = [
                dict(type='RandomFlip', prob=1.),
                dict(type='RandomFlip', prob=0.)
            ]
            pack = dict(
                type='PackDetInputs',
                meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                           'scale_factor', 'flip', 'flip_direction'))
            cfg.tta_pipeline[-1] = dict(
                type='TestTimeAug', transforms=[flips, [pack]])
    missing = [
        key for key in ('tta_model', 'tta_pipeline')
        if cfg.get(key, None) is None
    ]
    if missing:
        raise ValueError(
            f'--tta needs {" and ".join(missing)} in {config} (mmseg\'s '
            'base configs define them: tta_model = dict(type=\'SegTTAModel\')'
            ' and the dataset\'s tta_pipeline)')
    cfg.model = ConfigDict(cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def main(argv=None):
    args = parse_args(argv)

    # load config (this runs its custom_imports; carafe_mm's
    # weights_only=True checkpoint loaders are registered after them)
    # work_dir is determined in this priority: CLI > config > file name
    cfg = compat.load_config(args.config, args.cfg_options, args.work_dir)
    cfg.launcher = args.launcher

    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args)

    if args.tta:
        use_tta(cfg, args.config)

    # dump the predictions
    if args.out is not None:
        if args.out.endswith(('.pkl', '.pickle')):
            dump = dict(
                type='DumpDetResults'
                if cfg.get('default_scope') == 'mmdet' else 'DumpResults',
                out_file_path=args.out)
            evaluator = cfg.test_evaluator
            cfg.test_evaluator = (list(evaluator) if isinstance(
                evaluator, (list, tuple)) else [evaluator]) + [dump]
        elif cfg.get('default_scope') == 'mmseg':  # label maps, as mmseg
            cfg.test_evaluator.output_dir = args.out
            cfg.test_evaluator.keep_results = True
        else:
            raise ValueError(f'--out must be a .pkl file, but got {args.out}')

    with compat.explain_unsafe_checkpoint():
        # build the runner from config (without GPUs, the launcher's
        # processes run on the CPU with gloo)
        runner = compat.build_runner(cfg)

        # start testing
        runner.test()


if __name__ == '__main__':
    main()
