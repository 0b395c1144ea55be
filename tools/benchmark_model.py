"""End-to-end cost of CARAFE: inference images/s and peak training memory
of Faster / Mask R-CNN (R50-FPN) with nearest vs CARAFE and UperNet (R50)
with bilinear vs CARAFE, built from carafe_mm's configs.

    python tools/benchmark_model.py [--devices cpu cuda] \
        [--models faster mask upernet] [--size H W] [--iters N] \
        [--markdown out.md]

Weights are random (no download). So that the heads do their full work, the
detectors keep their 100 best detections whatever the score (a random
model's scores would fall under the 0.05 threshold and skip the mask head).
CPU defaults to smaller images (512×768, detection; 512×512, UperNet) and
batch 1; GPU to 800×1216 / 512×512. Peak training memory is one training
step of batch 2 with random targets: ``max_memory_allocated`` on GPU, the
growth of the peak resident set (VmHWM) in a fresh process on CPU.
Inference times are medians by ``torch.utils.benchmark`` after a warm-up.
"""
import argparse
import json
import os.path as osp
import sys

import torch
from benchmark_utils import (add_devices_argument, chosen_devices, cpu_peak_mb,
                             cuda_peak_mb, in_fresh_process, median_time)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MODELS = {
    'faster': [
        ('FPN (mmdet, nearest)', 'configs/faster_rcnn_r50_fpn_1x.py'),
        ('FPN_CARAFE structure, Nearest',
         'configs/detection/table2_fpn_upsampler/'
         'faster-rcnn_r50_fpn-nearest_1x_coco.py'),
        ('CARAFE', 'configs/faster_rcnn_r50_fpn_carafe_1x.py'),
    ],
    'mask': [
        ('FPN nearest + deconv (mmdet)', 'configs/mask_rcnn_r50_fpn_1x.py'),
        ('CARAFE (FPN + mask head)', 'configs/mask_rcnn_r50_fpn_carafe_1x.py'),
    ],
    'upernet': [
        ('bilinear (mmseg)', 'configs/upernet_r50_512x512_80k_ade20k.py'),
        ('CARAFE (PPM + FPN + FUSE)',
         'configs/upernet_r50_carafe_512x512_80k_ade20k.py'),
    ],
}


def build_model(config, device):
    from mmengine.config import Config
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(osp.join(ROOT, config))
    model_cfg = cfg.model
    model_cfg.backbone.init_cfg = None
    if 'pretrained' in model_cfg:
        model_cfg.pretrained = None
    if cfg.default_scope == 'mmdet':
        model_cfg.test_cfg.rcnn.score_thr = 0.0
    else:  # pad to a multiple of 32 instead of a fixed crop size
        model_cfg.data_preprocessor.size = None
        model_cfg.data_preprocessor.size_divisor = 32
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = ROOT_MODELS.build(model_cfg)
    model.init_weights()
    return model.to(device), cfg.default_scope


def make_batch(scope, size, batch, device, with_mask):
    h, w = size
    if scope == 'mmdet':
        from mmdet.testing import demo_mm_inputs
        packed = demo_mm_inputs(
            batch_size=batch,
            image_shapes=[(3, h, w)] * batch,
            num_items=[5] * batch,
            num_classes=80,
            with_mask=with_mask)
        return packed
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for _ in range(batch):
        s = SegDataSample(
            metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, h, w)))
        samples.append(s)
    return dict(
        inputs=[
            torch.randint(0, 255, (3, h, w), dtype=torch.uint8)
            for _ in range(batch)
        ],
        data_samples=samples)


def inference_speed(model, scope, size, device, iters):
    """Images per second: one over the median time of a batch-1 predict."""
    model.eval()
    packed = make_batch(scope, size, 1, device, False)
    data = model.data_preprocessor(packed, False)
    with torch.no_grad():
        return 1.0 / median_time(lambda: model(**data, mode='predict'), iters)


def train_step(model, scope, size, device, with_mask):
    model.train()
    packed = make_batch(scope, size, 2, device, with_mask)
    data = model.data_preprocessor(packed, True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()


def train_memory_child(spec):
    """One training step in this fresh process; prints its peak resident
    growth."""
    config, size, with_mask = json.loads(spec)
    model, scope = build_model(config, 'cpu')
    print(
        cpu_peak_mb(lambda: train_step(model, scope, size, 'cpu', with_mask)))


def train_memory(config, scope, model, size, device, with_mask):
    if device == 'cuda':
        peak = cuda_peak_mb(
            lambda: train_step(model, scope, size, device, with_mask))
        model.zero_grad(set_to_none=True)
        return peak
    return in_fresh_process(__file__, '--_train-memory',
                            [config, list(size), with_mask])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_devices_argument(parser)
    parser.add_argument(
        '--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        '--size',
        nargs=2,
        type=int,
        default=None,
        help='image height and width')
    parser.add_argument('--iters', type=int, default=None)
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--markdown', help='also write the table here')
    parser.add_argument('--_train-memory', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._train_memory:
        return train_memory_child(args._train_memory)

    import logging

    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.ERROR)
    devices = chosen_devices(parser, args.devices)
    header = ('| device | model | upsampling | image | inference img/s | '
              'vs first row | train peak MB (batch 2) |')
    lines = [header, '|' + '---|' * (header.count('|') - 1)]
    print(header, flush=True)
    for device in devices:
        for family in args.models:
            if args.size:
                size = tuple(args.size)
            elif family == 'upernet':
                size = (512, 512)
            else:
                size = (512, 768) if device == 'cpu' else (800, 1216)
            iters = args.iters or (5 if device == 'cpu' else 50)
            first = None
            for name, config in MODELS[family]:
                model, scope = build_model(config, device)
                speed = inference_speed(model, scope, size, device, iters)
                first = first or speed
                memory = float('nan') if args.no_memory else train_memory(
                    config, scope, model, size, device, family == 'mask')
                line = (f'| {device} | {family} | {name} | '
                        f'{size[0]}×{size[1]} | {speed:.2f} | '
                        f'{100 * (speed / first - 1):+.1f}% | {memory:.0f} |')
                print(line, flush=True)
                lines.append(line)
                del model
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
