"""The tensor-in, tensors-out modules that are exported for mmseg's
segmentors and mmdet's detectors."""
import torch.nn as nn


class CarafeOp(nn.Module):
    """:func:`carafe_mm.ops.carafe` as a module, (features, masks) ->
    output, to export or time the op on its own."""

    def __init__(self, kernel_size, group_size, scale_factor):
        super().__init__()
        self.args = (kernel_size, group_size, scale_factor)

    def forward(self, features, masks):
        from carafe_mm.ops import carafe
        return carafe(features, masks, *self.args)


class SegmentorLogits(nn.Module):
    """A segmentor in mmseg's tensor mode: image (N, 3, H, W) -> the decode
    head's logits (N, K, H/4, W/4), before resizing and argmax."""

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor
        self.train(segmentor.training)

    def forward(self, inputs):
        return self.segmentor(inputs, mode='tensor')


class DetectorRawOutputs(nn.Module):
    """A detector up to its dense head's raw outputs: image (N, 3, H, W) ->
    the neck's levels, then the dense head's (RPN's for two-stage detectors)
    outputs per level, flattened; no anchors, decoding or NMS."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector
        self.head_name = ('rpn_head' if getattr(detector, 'rpn_head', None)
                          is not None else 'bbox_head')
        self.train(detector.training)

    @property
    def head(self):
        return getattr(self.detector, self.head_name)

    def forward(self, inputs):
        feats = tuple(self.detector.extract_feat(inputs))
        outs = self.head(feats)
        return feats + tuple(t for per_level in outs for t in per_level)

    def output_names(self, inputs):
        """Names of the outputs for ``inputs``: feat0..., then cls_score0...,
        bbox_pred0... (and out2_0... for a third output of the head)."""
        feats = tuple(self.detector.extract_feat(inputs))
        kinds = ('cls_score', 'bbox_pred')
        names = [f'feat{i}' for i in range(len(feats))]
        for j, per_level in enumerate(self.head(feats)):
            kind = kinds[j] if j < len(kinds) else f'out{j}_'
            names += [f'{kind}{i}' for i in range(len(per_level))]
        return names


def exportable(model):
    """Wrap an mmseg segmentor or an mmdet detector in a module whose
    ``forward`` takes the image tensor and returns tensors.

    Returns:
        tuple[nn.Module, str]: the module and the task, 'seg' or 'det'.
    """
    try:
        from mmseg.models.segmentors import BaseSegmentor
    except ImportError:
        BaseSegmentor = ()
    try:
        from mmdet.models.detectors import BaseDetector
    except ImportError:
        BaseDetector = ()
    if BaseSegmentor and isinstance(model, BaseSegmentor):
        return SegmentorLogits(model), 'seg'
    if BaseDetector and isinstance(model, BaseDetector):
        if not (hasattr(model, 'rpn_head') or hasattr(model, 'bbox_head')):
            raise TypeError(f'{type(model).__name__} has neither an rpn_head '
                            'nor a bbox_head to export')
        return DetectorRawOutputs(model), 'det'
    raise TypeError('exportable: expected an mmseg segmentor or an mmdet '
                    f'detector, but got {type(model).__name__}')
