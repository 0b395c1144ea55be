"""Checks of COCO annotation files and semantic segmentation label maps that
need neither mmdet nor mmseg: each says, in words, what mmdet's
``CocoDataset`` or mmseg's ``LoadAnnotations`` would crash on or silently
drop. ``tools/data/check_dataset.py`` reports them per file before a run;
:class:`CheckedCocoDataset` and :class:`CheckSegMap` apply them while
training.
"""
import json
import math
from numbers import Real

import numpy as np

COCO_KEYS = ('images', 'annotations', 'categories')

# What mmdet's CocoDataset does with an annotation, by reason.
CRASH = 'crash'  # a KeyError or TypeError deep inside mmdet
DROP = 'drop'  # silently left out of the training targets


def json_error_message(path, exc):
    """The message for a JSON file that does not parse: the file, and for a
    ``json.JSONDecodeError`` the line and column, e.g. ``a.json is not valid
    JSON: Expecting ',' delimiter at line 3, column 17``."""
    if isinstance(exc, json.JSONDecodeError):
        if not exc.doc.strip():
            return f'{path} is empty (expected a JSON object)'
        return (f'{path} is not valid JSON: {exc.msg} at line {exc.lineno}, '
                f'column {exc.colno}')
    return f'{path} is not valid JSON: {exc}'


def coco_structure_problems(data, need_annotations=True):
    """What is wrong with the top level of a parsed COCO instances file.

    Args:
        data: The parsed JSON.
        need_annotations (bool): Whether ``annotations`` must be present
            (not for image-info files such as COCO's test-dev, read in test
            mode). Defaults to True.

    Returns:
        list[str]: One message per problem; empty when the file has the
        ``images``, ``annotations`` and ``categories`` lists mmdet reads,
        at least one image, and the keys mmdet reads in every image and
        category.
    """
    if not isinstance(data, dict):
        return [
            f'the top level is a JSON {type(data).__name__}, not an object '
            f'with {", ".join(COCO_KEYS)}'
        ]
    needed = COCO_KEYS if need_annotations else ('images', 'categories')
    problems = []
    missing = [key for key in needed if key not in data]
    if missing:
        problems.append(
            f'no {" or ".join(repr(key) for key in missing)} key (a COCO '
            f'instances file has {", ".join(COCO_KEYS)}; it has '
            f'{", ".join(repr(key) for key in data) or "no keys"})')
    for key in COCO_KEYS:
        if key in data and not isinstance(data[key], list):
            problems.append(f'{key!r} is a JSON {type(data[key]).__name__}, '
                            'not a list')
    images = data.get('images')
    if isinstance(images, list):
        if not images:
            problems.append("'images' is empty")
        problems += _entries_missing_keys(
            images, 'image', ('id', 'file_name', 'height', 'width'))
    categories = data.get('categories')
    if isinstance(categories, list):
        problems += _entries_missing_keys(categories, 'category',
                                          ('id', 'name'))
    return problems


def _entries_missing_keys(entries, what, keys):
    bad = [(i, entry) for i, entry in enumerate(entries)
           if not isinstance(entry, dict) or any(k not in entry for k in keys)]
    if not bad:
        return []
    i, entry = bad[0]
    if isinstance(entry, dict):
        lacks = ', '.join(k for k in keys if k not in entry)
        example = f'{what} {i} has no {lacks}'
    else:
        example = f'{what} {i} is a JSON {type(entry).__name__}'
    return [
        f'{len(bad)} {what} entries lack {", ".join(keys)} (e.g. {example})'
    ]


def _is_number(value):
    return isinstance(value, Real) and not isinstance(value, bool)


def coco_annotation_problem(ann, image, category_ids):
    """Why mmdet's ``CocoDataset`` would crash on or leave out an annotation.

    The checks follow ``CocoDataset.parse_data_info``: a box is kept when it
    overlaps the image, is at least 1 pixel wide and high, has a positive
    ``area`` and a known category. A NaN / inf box is usually dropped by
    that test, but an infinite width or height passes it and reaches the
    loss: that one is a ``CRASH``, as are missing keys and non-numbers.

    Args:
        ann (dict): One entry of the file's ``annotations``.
        image (dict | None): The entry of ``images`` with the annotation's
            ``image_id``, None when there is none.
        category_ids (set[int]): The ids of the file's ``categories``.

    Returns:
        tuple[str, str, str] | None: ``(CRASH or DROP, kind, detail)``, e.g.
        ``(DROP, 'degenerate bbox', 'bbox [1, 2, 0, 5] has width or height
        <= 0')``; None for an annotation mmdet keeps (and for ``ignore``
        ones, which it skips by design).
    """
    if not isinstance(ann, dict):
        return (CRASH, 'not an object',
                f'is a JSON {type(ann).__name__}, not an object')
    if ann.get('ignore', False):
        return None
    missing = [
        key for key in ('image_id', 'bbox', 'area', 'category_id')
        if key not in ann
    ]
    if missing:
        return CRASH, 'missing keys', f'has no {", ".join(missing)}'
    if image is None:
        return DROP, 'unknown image_id', (
            f'refers to image_id {ann["image_id"]!r}, which is not in '
            "'images'")
    bbox = ann['bbox']
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(_is_number(v) for v in bbox)):
        return (CRASH, 'malformed bbox',
                f'bbox {bbox!r} is not 4 numbers [x, y, w, h]')
    width, height = image.get('width'), image.get('height')
    area = ann['area']
    if not (_is_number(width) and _is_number(height)):
        return CRASH, 'malformed image size', (
            f'has an image of size {width!r}x{height!r}, not numbers')
    if not _is_number(area):
        return CRASH, 'malformed area', f'area {area!r} is not a number'
    x, y, w, h = bbox
    # CocoDataset's test, in its order: Python's min / max keep or drop a
    # NaN by argument order, which decides what a NaN / inf box becomes.
    overlap = (
        max(0,
            min(x + w, width) - max(x, 0)) *
        max(0,
            min(y + h, height) - max(y, 0)))
    kept = overlap != 0 and not (area <= 0 or w < 1 or h < 1)
    if not all(math.isfinite(v) for v in bbox):
        if kept and ann['category_id'] in category_ids:
            # e.g. an infinite width: the box reaches the loss
            return CRASH, 'infinite bbox kept', (
                f'bbox {list(bbox)} is infinite but mmdet keeps it')
        return DROP, 'NaN/inf bbox', f'bbox {list(bbox)} has NaN or inf'
    if w <= 0 or h <= 0:
        return DROP, 'degenerate bbox', (
            f'bbox {list(bbox)} has width or height <= 0')
    if overlap == 0:
        return DROP, 'bbox outside the image', (
            f'bbox {list(bbox)} is outside the {width}x{height} image')
    if w < 1 or h < 1:
        return DROP, 'bbox under 1 pixel', (
            f'bbox {list(bbox)} is less than 1 pixel wide or high')
    if area <= 0:
        return DROP, 'area <= 0', f'area {area!r} is not positive'
    if ann['category_id'] not in category_ids:
        return DROP, 'unknown category_id', (
            f'category_id {ann["category_id"]!r} is not in '
            "'categories'")
    return None


def duplicate_ids(entries):
    """The ids that occur more than once among ``entries`` (dicts)."""
    seen, duplicates = set(), []
    for entry in entries:
        key = entry.get('id') if isinstance(entry, dict) else None
        if key in seen:
            duplicates.append(key)
        seen.add(key)
    return duplicates


def missing_classes(classes, categories):
    """The names in ``classes`` (a dataset's metainfo) that no category of
    the file has: mmdet gives them no annotations."""
    names = {c.get('name') for c in categories if isinstance(c, dict)}
    return [name for name in classes if name not in names]


def seg_map_shape_problem(shape, image_shape, seg_map_path, img_path):
    """Why a label map of ``shape`` does not fit its image, or None.

    Args:
        shape (tuple[int]): The label map's array shape, as decoded.
        image_shape (tuple[int]): ``(H, W)`` of the image.
        seg_map_path (str): The label map's file, for the message.
        img_path (str): The image's file, for the message.
    """
    if len(shape) == 3:
        return (f'{seg_map_path} has {shape[2]} channels ({shape[0]}x'
                f'{shape[1]}x{shape[2]}); a label map must be single-channel '
                'class indices (an RGB colour rendering of the labels is not '
                'one)')
    if len(shape) != 2:
        return f'{seg_map_path} has shape {tuple(shape)}, expected (H, W)'
    if tuple(shape) != tuple(image_shape[:2]):
        return (f'{seg_map_path} is {shape[1]}x{shape[0]} (WxH) but its '
                f'image {img_path} is {image_shape[1]}x{image_shape[0]}')
    return None


def label_values(label):
    """The distinct values of an integer label map, sorted."""
    label = np.asarray(label)
    if label.dtype == np.uint8:  # bincount is much faster than unique
        return np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    return np.unique(label)


def train_labels(values, reduce_zero_label=False, label_map=None):
    """Map raw label values to the ones mmseg's ``LoadAnnotations`` trains
    on: with ``reduce_zero_label`` 0 becomes 255 and the rest shift down by
    one (255 stays 255), then ``label_map`` (old -> new) applies.

    Returns:
        dict[int, int]: raw value -> training value.
    """
    mapped = {}
    for raw in (int(v) for v in values):
        value = raw % 256  # LoadAnnotations casts to uint8
        if reduce_zero_label:
            value = 255 if value in (0, 255) else value - 1
        if label_map:
            value = label_map.get(value, value)
        mapped[raw] = value
    return mapped


def out_of_range(values, num_classes, ignore_index=255):
    """The values (training values) that are neither a class index in
    ``[0, num_classes)`` nor ``ignore_index``."""
    return [
        int(v) for v in values
        if not (0 <= v < num_classes or v == ignore_index)
    ]


def describe_values(values, limit=8):
    values = [int(v) for v in values]
    text = ', '.join(str(v) for v in values[:limit])
    return text + (f', ... ({len(values)} values)'
                   if len(values) > limit else '')
