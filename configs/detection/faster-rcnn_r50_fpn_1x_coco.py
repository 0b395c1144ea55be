# Baseline: mmdet's Faster R-CNN R50-FPN 1x (nearest upsampling in the FPN),
# with checkpoints that load under torch >= 2.6.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['carafe_mm.mmdet'], allow_failed_imports=False)
custom_hooks = [dict(type='SafeCheckpointHook')]
