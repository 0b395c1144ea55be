# Mask R-CNN R50-FPN 1x with CARAFE in the FPN and in the mask head, as
# mmdet's official CARAFE model (configs/carafe): its checkpoints load into
# this config.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(
    imports=['carafe_mm.mmdet', 'carafe_mm.datasets.checked_coco_dataset'],
    allow_failed_imports=False)
custom_hooks = [dict(type='SafeCheckpointHook')]

model = dict(
    # The official models pad to 64; UpsamplerFPN itself works at any size.
    data_preprocessor=dict(pad_size_divisor=64),
    # CARAFE's defaults are the paper's and the official model's (k_up = 5,
    # k_enc = 3, C_m = 64; the mask head upsamples 2×), so only the types are
    # named and `--cfg-options model.neck.upsample_cfg.type=DySample
    # model.roi_head.mask_head.upsample_cfg.type=DySample` swaps them.
    neck=dict(type='UpsamplerFPN', upsample_cfg=dict(type='CARAFE')),
    roi_head=dict(
        mask_head=dict(
            type='UpsamplerMaskHead', upsample_cfg=dict(type='CARAFE'))))

# CheckedCocoDataset: CocoDataset whose errors and warnings name
# the annotation file (carafe_mm/datasets).
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader
