"""Check a config's datasets before a long run: every file that would crash
training or be silently left out of it.

    python tools/data/check_dataset.py CONFIG [--split train val test]
        [--workers 8] [--decode-images] [--cfg-options k=v ...]

The datasets are built from the config's ``{split}_dataloader.dataset``
through the mmdet / mmseg registries (``data_root``, ``data_prefix``,
``ann_file``, ``metainfo`` and the pipeline's loading steps as training
would use them), then checked file by file:

* COCO (``CocoDataset`` and subclasses): the annotation file parses (else
  the line and column), has ``images``, ``annotations`` and ``categories``,
  the dataset's classes are categories of the file; every annotation mmdet
  cannot read or leaves out (NaN / inf, empty, sub-pixel or out-of-image
  boxes, unknown ``category_id`` or ``image_id``), an infinite box it would
  keep, duplicate ids; every
  image exists, is readable and has the size the file says.
* Semantic segmentation (``BaseSegDataset`` and subclasses, e.g. ADE20K):
  every image and label map exists and is readable; each label map is
  single-channel, the size of its image, and its values, after
  ``reduce_zero_label`` and the dataset's ``label_map``, are class indices
  ``[0, num_classes)`` or the ignore index; label maps without an image.
* Both: the model's ``num_classes`` against the dataset's classes, and the
  dataset's own loader run once (its length after ``filter_cfg``).

Images are checked from their headers (PIL reads the size without decoding)
unless ``--decode-images``; label maps are decoded as mmseg does. One line
per problem, naming the file, then a summary. Exit status: 0 when nothing
was found, 1 when something was, 2 for bad arguments.
"""
import argparse
import contextlib
import copy
import json
import multiprocessing
import os
import os.path as osp
import sys
import warnings
from collections import Counter

from mmengine.config import Config, DictAction
from mmengine.registry import DATASETS, init_default_scope
from PIL import Image

from carafe_mm.datasets import checks

SPLITS = ('train', 'val', 'test')
KINDS = {'error': ('error', 'errors'), 'dropped': ('left out', 'left out')}
HEAD_KEYS = ('bbox_head', 'mask_head', 'decode_head', 'auxiliary_head')


class Report:
    """The problems of one dataset, in the order found."""

    def __init__(self):
        self.lines = []  # (file, kind, text)
        self.notes = []

    def add(self, file, kind, text):
        self.lines.append((file, kind, text))
        print(f'  {text}', flush=True)

    def note(self, text):
        self.notes.append(text)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0].replace('\n', ' '))
    parser.add_argument('config', help='the training config')
    parser.add_argument(
        '--split',
        nargs='+',
        choices=SPLITS,
        default=list(SPLITS),
        help='the dataloaders to check (default: all the config has)')
    parser.add_argument(
        '--workers',
        type=int,
        default=min(8,
                    os.cpu_count() or 1),
        help='processes reading the files (default: min(8, CPUs))')
    parser.add_argument(
        '--decode-images',
        action='store_true',
        help='decode every image as LoadImageFromFile does (slower), not '
        'just its header')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, as in tools/train.py')
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error('--workers must be >= 0')
    if not osp.isfile(args.config):
        parser.error(f'no config file {args.config}')
    return args


# Files: each function returns (problems, info) and runs in a worker.


def image_size(path):
    """``(H, W)`` of an image from its header, as decoding with its EXIF
    orientation gives it (what LoadImageFromFile returns)."""
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # rotated 90°
            width, height = height, width
    return height, width


def read_image(path, decode, decode_args):
    """``(H, W)`` of an image, or raise with the reason it is unreadable."""
    if not osp.isfile(path):
        raise FileNotFoundError('does not exist')
    if not decode:
        try:
            return image_size(path)
        except OSError as e:  # PIL.UnidentifiedImageError included
            raise ValueError(f'is not a readable image ({e})') from e
    import mmcv
    with open(path, 'rb') as f:
        content = f.read()
    try:
        image = mmcv.imfrombytes(content, **decode_args)
    except Exception as e:
        raise ValueError(f'is not a readable image ({e})') from e
    if image is None:
        raise ValueError('is not a readable image (decoding failed)')
    return image.shape[:2]


def check_coco_image(task):
    """One image of a COCO file: exists, readable, the size it says."""
    path, width, height, decode, decode_args = task
    try:
        shape = read_image(path, decode, decode_args)
    except (ValueError, FileNotFoundError) as e:
        return [(path, 'error', f'{path} {e}')]
    if (height, width) != tuple(shape):
        return [(path, 'error',
                 f'{path} is {shape[1]}x{shape[0]} but the annotation file '
                 f'says {width}x{height}: its boxes and masks would not '
                 'match the image')]
    return []


def check_seg_sample(task):
    """One image and its label map, as mmseg's loading steps read them."""
    import mmcv
    import numpy as np
    (img_path, seg_map_path, reduce_zero_label, label_map, num_classes,
     ignore_index, backend, decode, decode_args) = task
    problems = []
    try:
        image_shape = read_image(img_path, decode, decode_args)
    except (ValueError, FileNotFoundError) as e:
        problems.append((img_path, 'error', f'{img_path} {e}'))
        image_shape = None
    if seg_map_path is None:
        return problems
    if not osp.isfile(seg_map_path):
        return problems + [(seg_map_path, 'error',
                            f'{seg_map_path} does not exist (the label '
                            f'map of {img_path})')]
    with open(seg_map_path, 'rb') as f:
        content = f.read()
    try:
        label = mmcv.imfrombytes(content, flag='unchanged', backend=backend)
    except Exception as e:
        label = None
        reason = str(e)
    else:
        reason = 'decoding failed'
    if label is None:
        return problems + [
            (seg_map_path, 'error', f'{seg_map_path} is not a readable image '
             f'({reason})')
        ]
    label = np.asarray(label).squeeze()  # as LoadAnnotations
    if label.dtype != np.uint8:
        top = int(label.max()) if label.size else 0
        if not np.issubdtype(label.dtype, np.integer) or top > 255 or \
                int(label.min()) < 0:
            problems.append((seg_map_path, 'error',
                             f'{seg_map_path} is {label.dtype} with values up '
                             f'to {top}; LoadAnnotations casts it to uint8, '
                             'so values outside 0..255 wrap around'))
    if label.ndim != 2:
        shape_problem = checks.seg_map_shape_problem(label.shape, (),
                                                     seg_map_path, img_path)
        return problems + [(seg_map_path, 'error', shape_problem)]
    if image_shape is not None:
        shape_problem = checks.seg_map_shape_problem(label.shape, image_shape,
                                                     seg_map_path, img_path)
        if shape_problem:
            problems.append((seg_map_path, 'error', shape_problem))
    values = checks.label_values(label)
    mapped = checks.train_labels(values, reduce_zero_label, label_map)
    invalid = set(
        checks.out_of_range(set(mapped.values()), num_classes, ignore_index))
    bad = [raw for raw, value in mapped.items() if value in invalid]
    if bad:
        if reduce_zero_label:
            valid = (f'0 (ignored), 1..{num_classes} (classes 0..'
                     f'{num_classes - 1} after reduce_zero_label) and 255')
        else:
            valid = f'0..{num_classes - 1} and {ignore_index} (ignored)'
        if label_map:
            valid += ', before the label_map of the dataset\'s classes'
        problems.append((seg_map_path, 'error', f'{seg_map_path} has values '
                         f'{checks.describe_values(bad)} outside the '
                         f'{num_classes} classes (valid: {valid})'))
    return problems


def run_tasks(function, tasks, workers):
    """``function`` over ``tasks`` (in order), in ``workers`` processes when
    there are enough tasks to be worth it."""
    if workers > 1 and len(tasks) >= 64:
        context = multiprocessing.get_context('fork')
        with context.Pool(workers) as pool:
            yield from pool.imap(function, tasks, chunksize=16)
    else:
        yield from map(function, tasks)


# Datasets.


def leaf_datasets(cfg):
    """The dataset configs under wrappers (RepeatDataset, ConcatDataset,
    ClassBalancedDataset...)."""
    if 'datasets' in cfg:
        for sub in cfg['datasets']:
            yield from leaf_datasets(sub)
    elif 'dataset' in cfg:
        yield from leaf_datasets(cfg['dataset'])
    else:
        yield cfg


def find_transform(dataset, name):
    pipeline = getattr(dataset, 'pipeline', None)
    for transform in getattr(pipeline, 'transforms', []):
        if type(transform).__name__ == name:
            return transform
    return None


def image_decode_args(dataset):
    """The arguments LoadImageFromFile decodes images with."""
    load = find_transform(dataset, 'LoadImageFromFile')
    return dict(
        flag=getattr(load, 'color_type', 'color'),
        backend=getattr(load, 'imdecode_backend', 'cv2'))


def run_loader(dataset, report, source):
    """The dataset's own loading, once; its warnings are ours already."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(None):
        warnings.simplefilter('ignore')  # pycocotools prints, mmdet warns
        try:
            dataset.full_init()
        except Exception as e:
            report.add(
                source, 'error', f'{type(dataset).__name__} fails to load: '
                f'{type(e).__name__}: {e}')
            return None
    return len(dataset)


def check_coco(dataset, report, args):
    ann_file = dataset.ann_file
    try:
        with open(ann_file, 'rb') as f:
            content = f.read()
    except OSError as e:
        report.add(ann_file, 'error',
                   f'{ann_file} cannot be read: {e.strerror or e}')
        return
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        report.add(ann_file, 'error', checks.json_error_message(ann_file, e))
        return
    problems = checks.coco_structure_problems(
        data, need_annotations=not dataset.test_mode)
    for problem in problems:
        report.add(ann_file, 'error', f'{ann_file}: {problem}')
    if problems:  # the annotations cannot be checked against the rest
        return
    images = [i for i in data.get('images', []) if isinstance(i, dict)]
    categories = [c for c in data.get('categories', []) if isinstance(c, dict)]
    annotations = data.get('annotations', [])
    classes = dataset.metainfo.get('classes', ())
    absent = checks.missing_classes(classes, categories)
    if absent:
        report.add(
            ann_file, 'error',
            f'{ann_file}: the dataset classes {tuple(absent)} are not the '
            'name of any category (the categories: '
            f'{[c.get("name") for c in categories]}); they get no '
            'annotations')
    for what, entries in (('image', images), ('annotation', annotations),
                          ('category', categories)):
        duplicates = checks.duplicate_ids(entries)
        if duplicates:
            report.add(
                ann_file, 'error',
                f'{ann_file}: {len(duplicates)} {what} ids occur more than '
                f'once: {checks.describe_values(duplicates)}')
    by_id = {i.get('id'): i for i in images}
    category_ids = {c.get('id') for c in categories}
    names = {c.get('id'): c.get('name') for c in categories}
    counts, other_classes, used_images = Counter(), Counter(), set()
    for index, ann in enumerate(annotations):
        image_id = ann.get('image_id') if isinstance(ann, dict) else None
        image = by_id.get(image_id)
        problem = checks.coco_annotation_problem(ann, image, category_ids)
        if problem is None:
            if isinstance(ann, dict) and not ann.get('ignore', False):
                used_images.add(image_id)
                if names[ann['category_id']] not in classes:
                    other_classes[names[ann['category_id']]] += 1
            continue
        severity, kind, detail = problem
        counts[kind] += 1
        where = (f' (image {image.get("file_name")})'
                 if image is not None else '')
        name = (f'id {ann["id"]!r}'
                if isinstance(ann, dict) and 'id' in ann else f'#{index}')
        consequence = ('training would fail on it'
                       if severity == checks.CRASH else 'mmdet leaves it out')
        report.add(
            ann_file, 'error' if severity == checks.CRASH else 'dropped',
            f'{ann_file}: annotation {name}{where} {detail}: {consequence}')
    if other_classes:
        report.note(
            f'{sum(other_classes.values())} annotations of categories that '
            'are not dataset classes, left out by design: ' +
            ', '.join(f'{n} {c!r}' for c, n in other_classes.items()))
    unannotated = sum(1 for i in images if i.get('id') not in used_images)
    if unannotated and not dataset.test_mode:
        report.note(f'{unannotated} of {len(images)} images have no '
                    'annotation mmdet keeps (they train as background, or '
                    'filter_empty_gt leaves them out)')
    report.note(f'{len(images)} images, {len(annotations)} annotations')
    prefix = dataset.data_prefix.get('img', '')
    decode_args = image_decode_args(dataset)
    tasks = [(osp.join(prefix, str(i.get('file_name'))), i.get('width'),
              i.get('height'), args.decode_images, decode_args)
             for i in images]
    for problems in run_tasks(check_coco_image, tasks, args.workers):
        for problem in problems:
            report.add(*problem)
    if not problems_in(report, ann_file):
        size = run_loader(dataset, report, ann_file)
        if size is not None:
            report.note(f'{size} samples after the dataset\'s filter_cfg')


def problems_in(report, file):
    return any(f == file and kind == 'error' for f, kind, _ in report.lines)


def check_seg(dataset, report, args):
    img_dir = dataset.data_prefix.get('img_path', '')
    seg_dir = dataset.data_prefix.get('seg_map_path', '')
    source = dataset.ann_file or img_dir
    if not dataset.ann_file and not osp.isdir(img_dir):
        report.add(img_dir, 'error', f'{img_dir} is not a directory')
        return
    size = run_loader(dataset, report, source)
    if size is None:
        return
    if size == 0:
        report.add(
            source, 'error', f'{source}: no images (img_suffix '
            f'{dataset.img_suffix!r})')
        return
    infos = [dataset.get_data_info(i) for i in range(size)]
    num_classes = len(dataset.metainfo['classes'])
    load = find_transform(dataset, 'LoadAnnotations')
    backend = getattr(load, 'imdecode_backend', 'pillow')
    zero = getattr(load, 'reduce_zero_label', None)
    if zero is not None and zero != dataset.reduce_zero_label:
        report.add(
            source, 'error', f'LoadAnnotations has reduce_zero_label={zero} '
            f'but the dataset {dataset.reduce_zero_label}: mmseg stops '
            'with an AssertionError')
    decode_args = image_decode_args(dataset)
    tasks = [(info['img_path'], info.get('seg_map_path'),
              info.get('reduce_zero_label',
                       False), info.get('label_map'), num_classes,
              dataset.ignore_index, backend, args.decode_images, decode_args)
             for info in infos]
    for problems in run_tasks(check_seg_sample, tasks, args.workers):
        for problem in problems:
            report.add(*problem)
    if seg_dir and not dataset.ann_file and osp.isdir(seg_dir):
        used = {osp.normpath(info.get('seg_map_path', '')) for info in infos}
        for root, _, files in sorted(os.walk(seg_dir)):
            for name in sorted(files):
                path = osp.join(root, name)
                if name.endswith(dataset.seg_map_suffix) and \
                        osp.normpath(path) not in used:
                    report.add(
                        path, 'dropped', f'{path} has no image in {img_dir} '
                        f'(suffix {dataset.img_suffix!r}): it is not used')
    report.note(f'{size} images, {num_classes} classes, reduce_zero_label='
                f'{dataset.reduce_zero_label}, ignore index '
                f'{dataset.ignore_index}')


def check_num_classes(cfg, classes, report):
    """The model heads' num_classes against the dataset's classes."""
    model = cfg.get('model', {})
    heads = []
    for parent in (model, model.get('roi_head') or {}):
        for key in HEAD_KEYS:
            for head in (parent.get(key) if isinstance(parent.get(key), list)
                         else [parent.get(key)]):
                if isinstance(head, dict) and 'num_classes' in head:
                    heads.append((key, head['num_classes']))
    for key, num in heads:
        if num != len(classes):
            report.add(
                cfg.filename, 'error',
                f'{cfg.filename}: model {key}.num_classes is {num} but the '
                f'dataset has {len(classes)} classes {tuple(classes)}')


def build_dataset(dataset_cfg):
    dataset_cfg = copy.deepcopy(dataset_cfg)
    dataset_cfg['lazy_init'] = True
    return DATASETS.build(dataset_cfg)


def check_split(cfg, split, args):
    print(f'{split}:', flush=True)
    report = Report()
    dataset_cfgs = list(leaf_datasets(cfg[f'{split}_dataloader']['dataset']))
    for dataset_cfg in dataset_cfgs:
        try:
            dataset = build_dataset(dataset_cfg)
        except Exception as e:
            report.add(
                cfg.filename, 'error', f'{split}_dataloader.dataset '
                f'({dataset_cfg.get("type")}) cannot be built: '
                f'{type(e).__name__}: {e}')
            continue
        kind = kind_of(dataset)
        paths = ', '.join(f'{key} {value}'
                          for key, value in dataset.data_prefix.items())
        report.note(f'{type(dataset).__name__}: '
                    f'{dataset.ann_file or "no ann_file"}; {paths}')
        if kind == 'coco':
            check_coco(dataset, report, args)
        elif kind == 'seg':
            check_seg(dataset, report, args)
        else:
            report.note('not a COCO or segmentation dataset: only its '
                        'loader was run')
            size = run_loader(dataset, report, cfg.filename)
            if size is not None:
                report.note(f'{size} samples')
        if split == 'train':
            check_num_classes(cfg, dataset.metainfo.get('classes', ()), report)
    if not report.lines:
        print('  no problems', flush=True)
    return report


def kind_of(dataset):
    if 'mmdet' in sys.modules:
        from mmdet.datasets import CocoDataset, CocoPanopticDataset
        if isinstance(dataset, CocoDataset) and not isinstance(
                dataset, CocoPanopticDataset):  # another annotation format
            return 'coco'
    if 'mmseg' in sys.modules:
        from mmseg.datasets import BaseSegDataset
        if isinstance(dataset, BaseSegDataset):
            return 'seg'
    return None


def summarize(reports):
    print('\nSummary:')
    files, kinds = set(), Counter()
    for split, report in reports.items():
        if report is None:
            continue
        if isinstance(report, str):
            print(f'  {split}: the same dataset as {report}')
            continue
        counts = Counter(kind for _, kind, _ in report.lines)
        found = ', '.join(f'{counts[kind]} {label[counts[kind] > 1]}'
                          for kind, label in KINDS.items() if counts[kind])
        print(f'  {split}: {found or "no problems"}')
        for note in report.notes:
            print(f'    {note}')
        files.update(f for f, _, _ in report.lines)
        kinds.update(counts)
    total = sum(kinds.values())
    if total:
        print(f'{total} problems in {len(files)} files (errors: training '
              'would crash or learn from wrong data; left out: mmdet / mmseg '
              'would silently not use it)')
    else:
        print('No problems found.')
    return total


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    reports, seen = {}, {}
    for split in args.split:
        loader = cfg.get(f'{split}_dataloader')
        if not loader or not loader.get('dataset'):
            print(f'{split}: the config has no {split}_dataloader.dataset')
            continue
        key = repr(loader['dataset'].to_dict(
        ) if hasattr(loader['dataset'], 'to_dict') else loader['dataset'])
        if key in seen:
            print(f'{split}: the same dataset as {seen[key]}')
            reports[split] = seen[key]
            continue
        seen[key] = split
        reports[split] = check_split(cfg, split, args)
    return 1 if summarize(reports) else 0


if __name__ == '__main__':
    sys.exit(main())
