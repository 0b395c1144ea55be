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
import glob
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
        config='configs/toy/mask-rcnn_r18_fpn-nearest_mask-deconv_toy.py',
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
    """The last validation metrics of the newest run logged in work_dir."""
    runs = sorted((osp.getmtime(path), path) for path in glob.glob(
        osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    found = {}
    if runs:
        with open(runs[-1][1]) as f:
            for line in f:
                record = json.loads(line)
                if keys[0] in record:
                    found = record
    return {k: found.get(k, float('nan')) for k in keys}


def set_length(cfg, length, by_epoch):
    """Train for ``length`` epochs (or iterations), validate and save once
    at the end, and stretch the schedulers that ran to the old end."""
    key = 'max_epochs' if by_epoch else 'max_iters'
    old = cfg.train_cfg[key]
    cfg.train_cfg[key] = length
    cfg.train_cfg.val_interval = length
    cfg.default_hooks.checkpoint.interval = length
    for scheduler in cfg.param_scheduler:
        if scheduler.get('by_epoch', True) != by_epoch:
            continue  # e.g. an iteration-based warm-up of an epoch schedule
        if scheduler.get('end', None) == old or scheduler.get('end',
                                                              0) > length:
            scheduler.end = length
        if scheduler.get('T_max', None) == old:
            scheduler.T_max = length


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
    from carafe_mm.models import UPSAMPLERS
    task = TASKS[args.task]
    upsamplers = args.upsamplers or (['bilinear', 'CARAFE'] if args.task
                                     == 'seg' else ['Nearest', 'CARAFE'])
    known = UPSAMPLERS + (('bilinear', ) if args.task == 'seg' else ())
    for upsampler in upsamplers:
        if upsampler not in known:
            parser.error(f'unknown upsampler {upsampler!r} for --task '
                         f'{args.task}; choose from {", ".join(known)}')
    if args.task == 'seg' and args.epochs is not None:
        parser.error('--epochs is for det and mask; seg trains by --iters')
    if args.task != 'seg' and args.iters is not None:
        parser.error('--iters is for seg; det and mask train by --epochs')
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
            set_length(cfg, args.epochs, by_epoch=True)
        if args.iters is not None:
            set_length(cfg, args.iters, by_epoch=False)
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
