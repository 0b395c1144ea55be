"""Export an mmseg segmentor or an mmdet detector that uses carafe_mm to
ONNX (standard operators only), check it, and compare it with PyTorch in
onnxruntime.

    python tools/deployment/pytorch2onnx.py CONFIG [CHECKPOINT] --shape H W \
        [--dynamic] [--out model.onnx] [--verify]

Segmentors export whole, in mmseg's tensor mode (image -> logits at 1/4 of
the size); detectors up to their dense head's raw outputs (image -> the
neck's levels, then the RPN's / dense head's class scores and box deltas
per level; anchors, decoding and NMS stay outside the graph), and a mask
head, if there is one, on its own to OUT_mask_head.onnx (RoI features ->
mask logits, any number of RoIs).
"""
import argparse
import os.path as osp

import torch


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='mmdet or mmseg config file')
    parser.add_argument(
        'checkpoint',
        nargs='?',
        help='checkpoint; without one the weights are random')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        required=True,
        metavar=('H', 'W'),
        help='input height and width of the export')
    parser.add_argument(
        '--dynamic',
        action='store_true',
        help='leave the input height and width free in the graph')
    parser.add_argument(
        '--out', default='model.onnx', help='ONNX file to write')
    parser.add_argument(
        '--verify',
        action='store_true',
        help='run onnxruntime on random inputs of the export size and (with '
        '--dynamic) of another size, next to PyTorch')
    parser.add_argument(
        '--verify-shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='the other size of --verify (default: about 1.5 H × 0.75 W, '
        'odd)')
    parser.add_argument(
        '--opset', type=int, help='ONNX opset (default: the exporter\'s)')
    parser.add_argument(
        '--legacy',
        action='store_true',
        help='use the TorchScript exporter (dynamo=False)')
    parser.add_argument(
        '--repeats', type=int, default=5, help='timed runs per runtime')
    parser.add_argument(
        '--threads',
        type=int,
        help='threads of both runtimes in --verify (default: torch\'s '
        'default)')
    args = parser.parse_args()
    for name in ('shape', 'verify_shape'):
        value = getattr(args, name)
        if value is not None and min(value) < 1:
            parser.error(f'--{name.replace("_", "-")} must be positive, but '
                         f'got {value}')
    for name in ('repeats', 'threads'):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f'--{name} must be >= 1, but got {value}')
    return args


def build_model(config, checkpoint):
    import logging

    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    # mmengine logs every parameter's initialisation at INFO level
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    else:
        # the modules' own initialisation; init_weights would download the
        # configs' pretrained backbones
        print('no checkpoint given: exporting random weights')
    return model.eval()


def export_and_verify(args, module, inputs, path, dims, others, **kwargs):
    """Export ``module`` at ``inputs`` to ``path``, check it, and with
    ``--verify`` compare it with PyTorch at the inputs' shapes and at the
    shapes of ``others``."""
    from carafe_mm.deploy import (check_onnx, compare_with_onnxruntime,
                                  export_onnx, format_table)
    with torch.no_grad():
        export_onnx(
            module,
            inputs,
            path,
            dynamic=args.dynamic,
            dims=dims,
            opset=args.opset,
            dynamo=not args.legacy,
            **kwargs)
    model = check_onnx(path)
    opsets = ', '.join(f'{o.domain or "ai.onnx"} {o.version}'
                       for o in model.opset_import)
    print(f'wrote {path} ({osp.getsize(path) / 2**20:.1f} MiB, '
          f'{len(model.graph.node)} nodes, opset {opsets}): onnx.checker '
          'passed, standard operators only')
    if not args.verify:
        return
    shapes = [[tuple(x.shape) for x in inputs]]
    if args.dynamic:
        shapes += [[shape] for shape in others]
    print(
        format_table(
            compare_with_onnxruntime(
                module, path, shapes, repeats=args.repeats)))
    if not args.dynamic:
        print('(exported at a fixed size: run with --dynamic to check '
              'another size)')


def main():
    args = parse_args()
    from carafe_mm.deploy import exportable
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.config, args.checkpoint)
    module, task = exportable(model)
    h, w = args.shape
    example = torch.randn(1, 3, h, w)
    other = args.verify_shape or (h + h // 2 + 1 - h % 2, w * 3 // 4 | 1)
    output_names = None
    if task == 'det':
        with torch.no_grad():
            output_names = module.output_names(example)
    export_and_verify(
        args,
        module, (example, ),
        args.out, (2, 3), [(1, 3, *other)],
        input_names=['image'],
        output_names=output_names)
    mask_head = getattr(getattr(model, 'roi_head', None), 'mask_head', None)
    if mask_head is not None:
        # RoI features -> mask logits, for any number of RoIs
        path = osp.splitext(args.out)[0] + '_mask_head.onnx'
        size = tuple(mask_head.roi_feat_size)
        channels = mask_head.in_channels
        export_and_verify(
            args,
            mask_head, (torch.randn(4, channels, *size), ),
            path, (0, ), [(9, channels, *size)],
            input_names=['roi_features'],
            output_names=['mask_logits'])


if __name__ == '__main__':
    main()
