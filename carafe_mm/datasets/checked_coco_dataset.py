"""mmdet's ``CocoDataset`` with errors and warnings that name the file."""
import functools
import json
import warnings
from collections import Counter

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.registry import DATASETS

from .checks import (CRASH, coco_annotation_problem, coco_structure_problems,
                     duplicate_ids, json_error_message, missing_classes)


class CheckedCOCO(COCO):
    """mmdet's COCO API that checks the file it reads.

    It raises ``ValueError`` naming the file for what would otherwise fail
    later without the file's name (invalid JSON, a missing ``images`` /
    ``annotations`` / ``categories`` key, annotations without a ``bbox``,
    an infinite box ...), and warns, with the file's name and the counts,
    about the annotations mmdet leaves out (degenerate, NaN or out-of-image
    boxes, unknown categories or images).

    Args:
        annotation_file (str): The (local) file to read.
        source (str, optional): The name to report, e.g. the dataset's
            ``ann_file`` when ``annotation_file`` is a local copy of it.
            Defaults to ``annotation_file``.
        classes (Sequence[str], optional): The dataset's classes; names that
            no category has are an error (a warning with
            ``need_annotations=False``). Defaults to None (not checked).
        need_annotations (bool): Whether the file must have
            ``annotations``; False for test mode, where image-info files
            (COCO test-dev) have none. Defaults to True.
    """

    def __init__(self,
                 annotation_file,
                 source=None,
                 classes=None,
                 need_annotations=True):
        self.source = source or annotation_file
        self.classes = classes
        self.need_annotations = need_annotations
        try:
            super().__init__(annotation_file)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(json_error_message(self.source, e)) from e
        except AssertionError as e:  # pycocotools: the top level is no dict
            raise ValueError(f'{self.source}: {e}') from e

    def createIndex(self):
        problems = coco_structure_problems(self.dataset, self.need_annotations)
        if problems:
            raise ValueError(f'{self.source}: {"; ".join(problems)}')
        self._check_annotations()
        if self.classes is not None:
            absent = missing_classes(self.classes, self.dataset['categories'])
            if absent:
                message = (
                    f'{self.source}: the dataset classes {tuple(absent)} are '
                    'not the name of any category of the file (its '
                    'categories: '
                    f'{[c["name"] for c in self.dataset["categories"]]}); '
                    'they would get no annotations')
                if self.need_annotations:
                    raise ValueError(message)
                warnings.warn(message)
        super().createIndex()

    def _check_annotations(self):
        images = {}
        for image in self.dataset['images']:
            images[image['id']] = image
        duplicates = duplicate_ids(self.dataset['images'])
        if duplicates:
            warnings.warn(
                f'{self.source}: {len(duplicates)} image ids occur more than '
                f'once (e.g. {duplicates[0]!r}); only the last entry of each '
                'is used')
        category_ids = {c['id'] for c in self.dataset['categories']}
        annotations = self.dataset.get('annotations', [])
        crashes, drops, first_drop = [], Counter(), {}
        for i, ann in enumerate(annotations):
            image_id = ann.get('image_id') if isinstance(ann, dict) else None
            problem = coco_annotation_problem(ann, images.get(image_id),
                                              category_ids)
            if problem is None:
                continue
            severity, kind, detail = problem
            name = f'annotation {_ann_name(ann, i)} {detail}'
            if severity == CRASH:
                crashes.append(name)
            else:
                drops[kind] += 1
                first_drop.setdefault(kind, name)
        if crashes:
            more = f' (and {len(crashes) - 3} more)' if len(
                crashes) > 3 else ''
            raise ValueError(
                f'{self.source}: {len(crashes)} annotations would fail '
                f'training: {"; ".join(crashes[:3])}{more}')
        if drops:
            counts = ', '.join(f'{n} {kind}' for kind, n in drops.items())
            examples = '; '.join(first_drop.values())
            warnings.warn(
                f'{self.source}: mmdet leaves out {sum(drops.values())} of '
                f'{len(annotations)} annotations ({counts}), e.g. '
                f'{examples}. `python tools/data/check_dataset.py CONFIG` '
                'lists them all')


def _ann_name(ann, index):
    if isinstance(ann, dict) and 'id' in ann:
        return f'id {ann["id"]!r}'
    return f'#{index}'


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset``, with errors and warnings that name the
    annotation file.

    Reading ``ann_file`` (through :class:`CheckedCOCO`) raises
    ``ValueError`` naming the file for invalid JSON (with line and column),
    a missing ``images``, ``annotations`` (outside test mode) or
    ``categories`` key, no images, annotations mmdet cannot read or would
    keep with an infinite box, and dataset classes that no category of the
    file has. It warns, naming the
    file and the counts, about the annotations ``CocoDataset`` leaves out by
    design (boxes that are NaN, empty, under 1 pixel or outside the image,
    unknown categories or images). A training set with no image left after
    ``filter_cfg`` raises ``ValueError`` instead of mmengine's "need at least
    one array to concatenate". Otherwise it is ``CocoDataset``: the same
    arguments and the same samples.
    """

    def load_data_list(self):
        self.COCOAPI = functools.partial(
            CheckedCOCO,
            source=self.ann_file,
            classes=self.metainfo['classes'],
            need_annotations=not self.test_mode)
        return super().load_data_list()

    def filter_data(self):
        data_list = super().filter_data()
        if not data_list:
            raise ValueError(
                f'{self.ann_file}: no image is left of {len(self.data_list)} '
                f'after filter_cfg={self.filter_cfg}: none has an annotation '
                f'of the classes {tuple(self.metainfo["classes"])} that mmdet '
                'keeps')
        return data_list
