"""Train the same toy model with different upsamplers and compare them.

    python tools/compare_upsamplers.py [--task det|mask|seg]
        [--upsamplers Nearest CARAFE ...] [--epochs N] [--iters N]
        [--work-dir work_dirs/compare] [--data-root DIR]

Each upsampler replaces every learned-upsampling site of the toy config
(``det``: the FPN of Faster R-CNN; ``mask``: the FPN and the mask head of
Mask R-CNN; ``seg``: UperNet's PPM, FPN and FUSE), the model is trained with
tools/train.py and evaluated, and a side-by-side table of parameters,
training time and the final metrics is printed. The toy data comes from
tools/data/make_toy_coco.py (det, mask) or make_toy_ade20k.py (seg).
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TASKS = {
    'det':
    dict(
        config='configs/toy/faster-rcnn_r18_fpn-nearest_toy.py',
        metrics=('coco/bbox_mAP', 'coco/bbox_mAP_50'),
        data_root='data/toy_coco'),
    'mask':
    dict(
        config='configs/toy/mask-rcnn_r18_fpn-nearest_toy.py',
        metrics=('coco/bbox_mAP', 'coco/segm_mAP'),
        data_root='data/toy_coco'),
    'seg':
    dict(
        config='configs/toy/upernet_r18-bilinear_toy.py',
        metrics=('mIoU', 'aAcc'),
        data_root='data/toy_ade20k'),
}


def set_upsampler(cfg, task, upsampler):
    """Put ``upsampler`` (a type name) in every upsampling site of cfg."""
    up = dict(type=upsampler)
    if task == 'seg':
        head = cfg.model.decode_head
        for site in ('ppm_upsample_cfg', 'fpn_upsample_cfg',
                     'fuse_upsample_cfg'):
            head[site] = None if upsampler == 'bilinear' else dict(up)
        return
    cfg.model.neck.upsample_cfg = dict(up)
    if task == 'mask':
        mask_up = dict(up, scale_factor=2)
        if upsampler == 'Deconv':
            mask_up['kernel_size'] = 2  # mmdet's mask-head deconvolution
        cfg.model.roi_head.mask_head.upsample_cfg = mask_up


def data_options(task, data_root):
    root = data_root.rstrip('/') + '/'
    options = {
        f'{split}_dataloader.dataset.data_root': root
        for split in ('train', 'val', 'test')
    }
    if task != 'seg':
        ann = root + 'annotations/instances_val.json'
        options['val_evaluator.ann_file'] = ann
        options['test_evaluator.ann_file'] = ann
    return options


def last_metrics(work_dir, keys):
    """The last validation metrics logged under work_dir."""
    found = {}
    for dirpath, _, files in os.walk(work_dir):
        if 'scalars.json' in files:
            with open(osp.join(dirpath, 'scalars.json')) as f:
                for line in f:
                    record = json.loads(line)
                    if keys[0] in record:
                        found = record
    return {k: found.get(k, float('nan')) for k in keys}


def count_parameters(cfg):
    from mmengine.registry import MODELS, DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    return sum(p.numel() for p in model.parameters())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--task', choices=list(TASKS), default='det')
    parser.add_argument(
        '--upsamplers',
        nargs='+',
        default=None,
        help='default: Nearest CARAFE (seg: bilinear '
        'CARAFE); "bilinear" is mmseg\'s resize for seg')
    parser.add_argument(
        '--epochs',
        type=int,
        default=None,
        help='epochs (det, mask); default: the config\'s')
    parser.add_argument(
        '--iters',
        type=int,
        default=None,
        help='iterations (seg); default: the config\'s')
    parser.add_argument('--work-dir', default='work_dirs/compare')
    parser.add_argument('--data-root', default=None)
    args = parser.parse_args(argv)

    from mmengine.config import Config

    import carafe_mm.models  # noqa: F401
    task = TASKS[args.task]
    upsamplers = args.upsamplers or (['bilinear', 'CARAFE'] if args.task
                                     == 'seg' else ['Nearest', 'CARAFE'])
    data_root = args.data_root or task['data_root']
    if not osp.isdir(data_root):
        tool = 'make_toy_ade20k' if args.task == 'seg' else 'make_toy_coco'
        parser.error(f'no dataset at {data_root}: run python tools/data/'
                     f'{tool}.py first (or pass --data-root)')
    rows = []
    for upsampler in upsamplers:
        cfg = Config.fromfile(osp.join(ROOT, task['config']))
        set_upsampler(cfg, args.task, upsampler)
        cfg.merge_from_dict(data_options(args.task, data_root))
        if args.epochs is not None:
            cfg.train_cfg.max_epochs = args.epochs
            cfg.train_cfg.val_interval = args.epochs
            cfg.default_hooks.checkpoint.interval = args.epochs
        if args.iters is not None:
            cfg.train_cfg.max_iters = args.iters
            cfg.train_cfg.val_interval = args.iters
            cfg.default_hooks.checkpoint.interval = args.iters
        work_dir = osp.abspath(osp.join(args.work_dir, args.task, upsampler))
        os.makedirs(work_dir, exist_ok=True)
        config_path = osp.join(work_dir, f'{args.task}-{upsampler}.py')
        cfg.dump(config_path)
        params = count_parameters(cfg)
        print(
            f'== {args.task}: training with {upsampler} ({config_path})',
            flush=True)
        start = time.time()
        subprocess.run([
            sys.executable,
            osp.join(ROOT, 'tools', 'train.py'), config_path, '--work-dir',
            work_dir
        ],
                       cwd=os.getcwd(),
                       check=True)
        rows.append((upsampler, params, time.time() - start,
                     last_metrics(work_dir, task['metrics'])))

    header = ('| upsampler | params (M) | train+eval time (s) | ' +
              ' | '.join(task['metrics']) + ' |')
    print()
    print(header)
    print('|' + '---|' * (header.count('|') - 1))
    for upsampler, params, seconds, metrics in rows:
        print(f'| {upsampler} | {params / 1e6:.3f} | {seconds:.0f} | ' +
              ' | '.join(f'{metrics[k]:.4g}' for k in task['metrics']) + ' |')
    return rows


if __name__ == '__main__':
    main()
