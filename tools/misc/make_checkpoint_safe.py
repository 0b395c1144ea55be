"""Rewrite a checkpoint you trust so that it loads with
``torch.load(weights_only=True)`` (torch >= 2.6's default).

    python tools/misc/make_checkpoint_safe.py IN.pth OUT.pth --trust

Reading IN.pth unpickles it with ``weights_only=False``, which runs any code
it holds: --trust says that you trust where it comes from. Do not use it on
a file carafe_mm refused to load unless you do. The output keeps tensors
and plain Python values; numpy values become Python numbers / tensors and
mmengine HistoryBuffers tagged dicts (restored by SafeCheckpointHook on
resume).
"""
import argparse
import os.path as osp
import sys

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from carafe_mm.compat import to_safe  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src')
    parser.add_argument('dst')
    parser.add_argument(
        '--trust',
        action='store_true',
        help='unpickle src with weights_only=False, which runs any code it '
        'holds: only for a file whose origin you trust')
    args = parser.parse_args(argv)
    if not args.trust:
        parser.error(f'reading {args.src} unpickles it with weights_only='
                     'False, which runs any code it holds; pass --trust only '
                     'if you trust where it comes from')
    checkpoint = torch.load(args.src, map_location='cpu', weights_only=False)
    torch.save(to_safe(checkpoint), args.dst)
    torch.load(args.dst, map_location='cpu', weights_only=True)  # check
    print(f'wrote {args.dst}, which loads with weights_only=True')


if __name__ == '__main__':
    main()
