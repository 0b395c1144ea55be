"""A pipeline check of semantic segmentation label maps (mmseg registry)."""
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from .checks import (describe_values, label_values, out_of_range,
                     seg_map_shape_problem)


@TRANSFORMS.register_module()
class CheckSegMap(BaseTransform):
    """Raise ``ValueError`` naming the label file when the label map just
    loaded would fail later in training without its name.

    Put it right after mmseg's ``LoadAnnotations``. It checks ``gt_seg_map``
    against the image (``ori_shape``, so it may follow a ``Resize`` of the
    image as in mmseg's test pipelines) and the classes: a colour (RGB)
    label PNG, a label map of another size than its image ("stack expects
    each tensor to be equal size" when batched) and values that are neither
    a class index nor the ignore index ("Target 199 is out of bounds" in the
    loss). The values checked are those ``LoadAnnotations`` produced, after
    ``reduce_zero_label`` and the dataset's ``label_map``.

    Required Keys:

    - gt_seg_map (without it, e.g. at inference, the step does nothing)
    - seg_map_path
    - ori_shape
    - img_path (optional, for the message)

    Args:
        num_classes (int): The number of classes of the dataset (and the
            decode head).
        ignore_index (int): The label the loss ignores. Defaults to 255.
    """

    def __init__(self, num_classes, ignore_index=255):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) \
                or num_classes < 1:
            raise ValueError('CheckSegMap: num_classes must be a positive '
                             f'int, but got {num_classes!r}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results):
        if 'gt_seg_map' not in results:  # inference: no LoadAnnotations
            return results
        label = results['gt_seg_map']
        path = results.get('seg_map_path')
        problem = seg_map_shape_problem(label.shape, results['ori_shape'],
                                        path, results.get('img_path'))
        if problem is not None:
            raise ValueError(problem)
        bad = out_of_range(
            label_values(label), self.num_classes, self.ignore_index)
        if bad:
            reduced = ' after reduce_zero_label' if results.get(
                'reduce_zero_label') else ''
            raise ValueError(
                f'{path} has label values {describe_values(bad)}{reduced}, '
                f'outside the {self.num_classes} classes [0, '
                f'{self.num_classes}) and the ignore index '
                f'{self.ignore_index}')
        return results

    def __repr__(self):
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')
