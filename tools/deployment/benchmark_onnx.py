"""CPU latency of onnxruntime next to PyTorch, measured in one run: the
CARAFE op, the CARAFE upsampler and a whole UperNet with CARAFE in the PPM,
the FPN and the FUSE (the toy config's), each exported with dynamic sizes.

    python tools/deployment/benchmark_onnx.py [--repeats 10] [--markdown F]

PyTorch runs the compiled op; onnxruntime runs the standard-operator
translation (carafe_mm/ops/onnx.py). Medians of ``--repeats`` runs after a
warm-up, both runtimes on ``--threads`` threads (torch's default number
if not given).
"""
import argparse
import os.path as osp
import platform
import tempfile

import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def cases():
    """(name, module, export input shapes, benchmark input shapes)."""
    from mmengine.registry import MODELS

    import carafe_mm.models  # noqa: F401
    from carafe_mm.deploy.wrappers import CarafeOp
    yield ('op, N=2 C=256 100×100 k=5 σ=2', CarafeOp(5, 1, 2),
           [(2, 256, 10, 12), (2, 25, 20, 24)], [(2, 256, 100, 100),
                                                 (2, 25, 200, 200)])
    yield ('CARAFE upsampler, C=256 100×100 σ=2',
           MODELS.build(dict(type='CARAFE', channels=256, scale_factor=2)),
           [(1, 256, 10, 12)], [(1, 256, 100, 100)])
    for size in (128, 256):
        yield (f'UperNet R18 toy, CARAFE in PPM+FPN+FUSE, {size}×{size}',
               toy_upernet(), [(1, 3, 96, 96)], [(1, 3, size, size)])


def toy_upernet():
    import logging

    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import MODELS, init_default_scope

    from carafe_mm.deploy import exportable
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/toy/upernet_r18-carafe_toy.py'))
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return exportable(model.eval())[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--markdown', help='also write the table here')
    parser.add_argument(
        '--threads',
        type=int,
        help='threads of both runtimes (default: torch\'s default)')
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f'--repeats must be >= 1, but got {args.repeats}')
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f'--threads must be >= 1, but got {args.threads}')
        torch.set_num_threads(args.threads)
    import onnxruntime

    from carafe_mm.deploy import compare_with_onnxruntime, export_onnx
    lines = [
        f'Machine: {platform.processor() or platform.machine()}, '
        f'{torch.get_num_threads()} threads, torch {torch.__version__}, '
        f'onnxruntime {onnxruntime.__version__}.', '',
        '| case | PyTorch ms | onnxruntime ms | onnxruntime / PyTorch | '
        'max rel diff |', '|---|---|---|---|---|'
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, module, export_shapes, shapes) in enumerate(cases()):
            module.eval()
            path = osp.join(tmp, f'{i}.onnx')
            with torch.no_grad():
                export_onnx(
                    module,
                    tuple(torch.randn(s) for s in export_shapes),
                    path,
                    dynamic=True)
            (row, ) = compare_with_onnxruntime(
                module, path, [shapes], repeats=args.repeats)
            lines.append(f'| {name} | {row["torch_ms"]:.1f} | '
                         f'{row["ort_ms"]:.1f} | '
                         f'{row["ort_ms"] / row["torch_ms"]:.1f}× | '
                         f'{row["max_rel"]:.1e} |')
            print(lines[-1], flush=True)
    print('\n'.join(lines))
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
