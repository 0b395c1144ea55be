"""Parameters and FLOPs per input pixel of every registered upsampler.

Counted by mmengine's complexity analyser (``get_model_complexity_info``),
which sees the CARAFE op through ``carafe_mm.models.complexity``. FLOPs
follow the paper's convention, 2 × multiply-adds.

    python tools/analysis/upsampler_complexity.py [--channels 256] \
        [--scale-factor 2] [--markdown out.md]
"""
import argparse
import logging
import os
import sys

import torch

sys.path.insert(
    0,
    os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from mmengine.analysis import get_model_complexity_info  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.registry import MODELS  # noqa: E402

from carafe_mm.models import UPSAMPLERS  # noqa: E402

# The paper's Table 1 (C = 256, s = 2), per input pixel.
PAPER = {'CARAFE': ('74k', '199k'), 'Deconv': ('590k', '1180k')}


def complexity(name, channels, scale_factor, size=32):
    model = MODELS.build(
        dict(type=name, channels=channels, scale_factor=scale_factor))
    model.eval()
    inputs = (torch.randn(1, channels, size, size), )
    info = get_model_complexity_info(
        model, inputs=inputs, show_table=False, show_arch=False)
    return info['params'], 2 * info['flops'] / size**2


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--scale-factor', type=int, default=2)
    parser.add_argument('--markdown', help='also write the table here')
    args = parser.parse_args()
    # The analyser warns about every op it does not count (adds, softmax...).
    MMLogger.get_current_instance().setLevel(logging.ERROR)

    lines = [
        f'| upsampler | params (C = {args.channels}, σ = '
        f'{args.scale_factor}) | FLOPs per input pixel | paper '
        '(params / FLOPs) |', '|---|---|---|---|'
    ]
    for name in UPSAMPLERS:
        params, flops = complexity(name, args.channels, args.scale_factor)
        paper = ' / '.join(PAPER[name]) if name in PAPER else ''
        lines.append(f'| {name} | {params / 1e3:.1f}k | {flops / 1e3:.1f}k '
                     f'| {paper} |')
    table = '\n'.join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(table + '\n')


if __name__ == '__main__':
    main()
