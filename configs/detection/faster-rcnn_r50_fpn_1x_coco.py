# Baseline: mmdet's Faster R-CNN R50-FPN 1x (nearest upsampling in the FPN),
# with checkpoints that load under torch >= 2.6.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(
    imports=['carafe_mm.mmdet', 'carafe_mm.datasets.checked_coco_dataset'],
    allow_failed_imports=False)
custom_hooks = [dict(type='SafeCheckpointHook')]

# CheckedCocoDataset: CocoDataset whose errors and warnings name
# the annotation file (carafe_mm/datasets).
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
