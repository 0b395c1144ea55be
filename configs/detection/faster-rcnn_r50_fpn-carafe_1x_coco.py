# Faster R-CNN R50-FPN 1x with CARAFE in the FPN, as mmdet's official CARAFE
# model (configs/carafe): its checkpoints load into this config.
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(
    imports=['carafe_mm.mmdet', 'carafe_mm.datasets.checked_coco_dataset'],
    allow_failed_imports=False)
custom_hooks = [dict(type='SafeCheckpointHook')]

model = dict(
    # The official models pad to 64; UpsamplerFPN itself works at any size.
    data_preprocessor=dict(pad_size_divisor=64),
    neck=dict(
        type='UpsamplerFPN',
        # CARAFE's defaults are the paper's and the official model's
        # (k_up = 5, k_enc = 3, C_m = 64), so only the type is named and
        # `--cfg-options model.neck.upsample_cfg.type=DySample` swaps it.
        upsample_cfg=dict(type='CARAFE')))

# CheckedCocoDataset: CocoDataset whose errors and warnings name
# the annotation file (carafe_mm/datasets).
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
