"""Write a small synthetic COCO-format instance dataset: coloured squares,
disks and triangles on textured backgrounds, with boxes and polygon masks.

    python tools/data/make_toy_coco.py [--out data/toy_coco] [--train 96]
        [--val 24] [--size 128] [--seed 0]

Layout (what ``configs/toy`` reads):

    data/toy_coco/train/000000.png ...
    data/toy_coco/val/000000.png ...
    data/toy_coco/annotations/instances_train.json
    data/toy_coco/annotations/instances_val.json
"""
import argparse
import json
import math
import os
import os.path as osp

import cv2
import numpy as np

CLASSES = ('square', 'disk', 'triangle')


def shape_polygon(kind, cx, cy, size, angle):
    """The outline of a shape as an (M, 2) float array of (x, y)."""
    if kind == 'disk':
        t = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        radius = size / 2
    elif kind == 'square':
        t = np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
        radius = size / math.sqrt(2)
    else:  # triangle
        t = np.array([-0.5, 1 / 6, 5 / 6]) * math.pi
        radius = size / math.sqrt(3)
    t = t + angle
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], 1)


def background(rng, size):
    """A smooth colour gradient with noise."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    mix = (xs * rng.uniform(-1, 1) + ys * rng.uniform(-1, 1))[..., None]
    mix = (mix - mix.min()) / (np.ptp(mix) + 1e-6)
    img = c0 * (1 - mix) + c1 * mix + rng.normal(0, 8, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image(rng, size, max_objects=4):
    img = background(rng, size)
    objects, boxes = [], []
    for _ in range(rng.integers(1, max_objects + 1)):
        for _attempt in range(20):  # objects do not overlap
            kind = CLASSES[rng.integers(len(CLASSES))]
            s = rng.uniform(0.18, 0.45) * size
            cx, cy = rng.uniform(s / 2 + 2, size - s / 2 - 2, 2)
            poly = shape_polygon(kind, cx, cy, s, rng.uniform(0, 2 * math.pi))
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            if all(x1 < bx0 - 2 or x0 > bx1 + 2 or y1 < by0 - 2 or y0 > by1 + 2
                   for bx0, by0, bx1, by1 in boxes):
                break
        else:
            continue
        boxes.append((x0, y0, x1, y1))
        color = tuple(int(c) for c in rng.uniform(0, 255, 3))
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)], color)
        objects.append((kind, poly))
    return img, objects


def write_split(rng, out, split, count, size):
    os.makedirs(osp.join(out, split), exist_ok=True)
    images, annotations = [], []
    for image_id in range(count):
        img, objects = make_image(rng, size)
        file_name = f'{image_id:06d}.png'
        cv2.imwrite(osp.join(out, split, file_name), img)
        images.append(
            dict(id=image_id, file_name=file_name, height=size, width=size))
        for kind, poly in objects:
            poly = np.clip(poly, 0, size - 1)
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            area = 0.5 * abs(
                np.dot(poly[:, 0], np.roll(poly[:, 1], 1)) -
                np.dot(poly[:, 1], np.roll(poly[:, 0], 1)))
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    image_id=image_id,
                    category_id=CLASSES.index(kind) + 1,
                    bbox=[
                        float(x0),
                        float(y0),
                        float(x1 - x0),
                        float(y1 - y0)
                    ],
                    area=float(area),
                    segmentation=[poly.round(2).flatten().tolist()],
                    iscrowd=0))
    categories = [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(CLASSES)
    ]
    os.makedirs(osp.join(out, 'annotations'), exist_ok=True)
    with open(osp.join(out, 'annotations', f'instances_{split}.json'),
              'w') as f:
        json.dump(
            dict(
                images=images, annotations=annotations, categories=categories),
            f)
    return len(images), len(annotations)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/toy_coco')
    parser.add_argument('--train', type=int, default=96)
    parser.add_argument('--val', type=int, default=24)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    for name in ('train', 'val', 'size'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be >= 1')
    rng = np.random.default_rng(args.seed)
    for split, count in (('train', args.train), ('val', args.val)):
        n_img, n_ann = write_split(rng, args.out, split, count, args.size)
        print(f'{args.out}/{split}: {n_img} images, {n_ann} instances')


if __name__ == '__main__':
    main()
