"""Test (evaluate) a checkpoint with mmengine's Runner: detection or
segmentation, as the config's ``default_scope`` decides.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

CHECKPOINT is a path, a URL or a model-zoo name (``open-mmlab://...``). Every
checkpoint loads with ``weights_only=True``, whatever its scheme
(carafe_mm.engine.safe_loading): those written by carafe_mm's
SafeCheckpointHook and the official mmdet / mmseg ones do; for another
checkpoint you trust, see tools/misc/make_checkpoint_safe.py.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from carafe_mm import launch  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument(
        '--out', help='also dump the raw predictions to this .pkl file')
    launch.parse_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with launch.explain_unsafe_checkpoint():
        runner = launch.build_runner(args, mode='test')
        runner.test()


if __name__ == '__main__':
    main()
