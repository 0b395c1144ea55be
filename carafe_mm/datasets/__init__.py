"""Dataset checks: errors and warnings that name the file.

``carafe_mm.datasets.checks`` needs neither mmdet nor mmseg and is what
``tools/data/check_dataset.py`` reports with. The training-time versions
register in their library's registry, one module each, imported through
``custom_imports``:

* ``carafe_mm.datasets.checked_coco_dataset``: ``CheckedCocoDataset``
  (mmdet), ``CocoDataset`` with errors that name ``ann_file`` and warnings
  about the annotations it leaves out;
* ``carafe_mm.datasets.check_seg_map``: ``CheckSegMap`` (mmseg), a pipeline
  step after ``LoadAnnotations`` that names a label map of the wrong size,
  channels or values;
* ``carafe_mm.datasets.checked_ade20k_dataset``: ``CheckedADE20KDataset``
  (mmseg), ``ADE20KDataset`` that puts ``CheckSegMap`` after its pipeline's
  ``LoadAnnotations``.

carafe_mm's COCO and ADE20K configs use them.
"""
from .checks import (coco_annotation_problem, coco_structure_problems,
                     json_error_message, seg_map_shape_problem)

__all__ = [
    'coco_annotation_problem', 'coco_structure_problems', 'json_error_message',
    'seg_map_shape_problem'
]
