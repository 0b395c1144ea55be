"""Write a small synthetic semantic segmentation dataset in ADE20K's layout:
sky, ground, squares and disks, with a thin unlabelled border around every
object (label 0, ignored with ``reduce_zero_label=True`` as in ADE20K).

    python tools/data/make_toy_ade20k.py [--out data/toy_ade20k]
        [--train 64] [--val 16] [--size 128] [--seed 0]

Layout (what ``configs/toy/upernet_*`` read, as mmseg's ADE20KDataset):

    data/toy_ade20k/images/training/toy_000000.jpg ...
    data/toy_ade20k/images/validation/toy_000000.jpg ...
    data/toy_ade20k/annotations/training/toy_000000.png ...
    data/toy_ade20k/annotations/validation/toy_000000.png ...

Labels in the PNGs: 0 unlabelled, 1 sky, 2 ground, 3 square, 4 disk.
"""
import argparse
import math
import os
import os.path as osp

import cv2
import numpy as np

CLASSES = ('sky', 'ground', 'square', 'disk')
PALETTE = [(120, 170, 230), (110, 90, 60), (220, 60, 50), (60, 200, 90)]


def make_image(rng, size):
    img = np.zeros((size, size, 3), np.float32)
    label = np.zeros((size, size), np.uint8)
    ys, xs = np.mgrid[0:size, 0:size]
    horizon = (
        size * rng.uniform(0.3, 0.6) +
        size * 0.08 * np.sin(xs / size * 2 * math.pi * rng.uniform(0.5, 2) +
                             rng.uniform(0, 6)))
    sky = ys < horizon
    label[sky], label[~sky] = 1, 2
    for cls, mask in ((0, sky), (1, ~sky)):
        img[mask] = np.array(PALETTE[cls]) + rng.normal(0, 25, 3)
    for _ in range(rng.integers(1, 4)):
        cls = int(rng.integers(2, 4))
        s = rng.uniform(0.12, 0.3) * size
        cx, cy = rng.uniform(s, size - s, 2)
        obj = np.zeros((size, size), np.uint8)
        if CLASSES[cls] == 'disk':
            cv2.circle(obj, (int(cx), int(cy)), int(s / 2), 1, -1)
        else:
            box = cv2.boxPoints(((cx, cy), (s, s), rng.uniform(0, 90)))
            cv2.fillPoly(obj, [np.round(box).astype(np.int32)], 1)
        inside = obj.astype(bool)
        border = cv2.dilate(obj, np.ones((3, 3), np.uint8)).astype(bool)
        img[inside] = np.array(PALETTE[cls]) + rng.normal(0, 25, 3)
        label[border & ~inside] = 0  # unlabelled rim
        label[inside] = cls + 1
    img += rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/toy_ade20k')
    parser.add_argument('--train', type=int, default=64)
    parser.add_argument('--val', type=int, default=16)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    for name in ('train', 'val', 'size'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be >= 1')
    rng = np.random.default_rng(args.seed)
    for split, count in (('training', args.train), ('validation', args.val)):
        for sub in ('images', 'annotations'):
            os.makedirs(osp.join(args.out, sub, split), exist_ok=True)
        for i in range(count):
            img, label = make_image(rng, args.size)
            name = f'toy_{i:06d}'
            cv2.imwrite(
                osp.join(args.out, 'images', split, name + '.jpg'),
                img[..., ::-1])
            cv2.imwrite(
                osp.join(args.out, 'annotations', split, name + '.png'), label)
        print(f'{args.out}/{split}: {count} images')


if __name__ == '__main__':
    main()
