# Baseline: mmdet's Mask R-CNN R50-FPN 1x (nearest in the FPN, deconvolution
# in the mask head), with checkpoints that load under torch >= 2.6.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['carafe_mm.mmdet'], allow_failed_imports=False)
custom_hooks = [dict(type='SafeCheckpointHook')]
