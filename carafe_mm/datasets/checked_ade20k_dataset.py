"""mmseg's ``ADE20KDataset`` whose pipeline names a bad label file."""
from mmcv.transforms import LoadAnnotations as MMCVLoadAnnotations
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS

from .check_seg_map import CheckSegMap


@DATASETS.register_module()
class CheckedADE20KDataset(ADE20KDataset):
    """``ADE20KDataset`` with a :class:`CheckSegMap` right after each
    ``LoadAnnotations`` of its pipeline, for the dataset's classes and
    ``ignore_index``: a label map of the wrong size, channels or values is a
    ``ValueError`` that names the file instead of an error deep inside mmseg.

    A config swaps it in by type alone (``dataset=dict(
    type='CheckedADE20KDataset')``), keeping mmseg's pipelines as they are.
    Arguments as ``ADE20KDataset``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        transforms = self.pipeline.transforms
        for i in reversed(range(len(transforms))):
            following = transforms[i + 1] if i + 1 < len(transforms) else None
            if isinstance(transforms[i], MMCVLoadAnnotations) and \
                    not isinstance(following, CheckSegMap):
                transforms.insert(
                    i + 1,
                    CheckSegMap(
                        num_classes=len(self.metainfo['classes']),
                        ignore_index=self.ignore_index))
