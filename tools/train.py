"""Train a model with mmengine's Runner: detection or segmentation, as the
config's ``default_scope`` (inherited from its mmdet / mmseg base) decides.

    python tools/train.py CONFIG [--work-dir DIR] [--amp] [--resume [CKPT]]
        [--cfg-options k=v ...] [--launcher none|pytorch|slurm|mpi]

Multi-GPU: tools/dist_train.sh (torchrun); Slurm: tools/slurm_train.sh.
Without GPUs, ``--launcher pytorch`` runs the processes on the CPU with the
gloo backend. Checkpoints are written with carafe_mm's SafeCheckpointHook,
so they load under torch >= 2.6's ``weights_only=True``, and every checkpoint
read (pretrained backbones from URLs and model zoos, ``load_from``,
``--resume``) is loaded that way (carafe_mm.engine.safe_loading).
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from carafe_mm import launch  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='automatic mixed precision training')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from this checkpoint, or from the latest one in the '
        'work dir when no path is given')
    launch.parse_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    with launch.explain_unsafe_checkpoint():
        runner = launch.build_runner(args, mode='train')
        runner.train()


if __name__ == '__main__':
    main()
