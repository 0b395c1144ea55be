# Mask R-CNN R50-FPN 1x with CARAFE in the FPN and in the mask head, as
# mmdet's official CARAFE model (configs/carafe).
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['carafe_mm.mmdet'], allow_failed_imports=False)
custom_hooks = [dict(type='SafeCheckpointHook')]

carafe = dict(
    type='CARAFE',
    up_kernel=5,
    up_group=1,
    encoder_kernel=3,
    encoder_dilation=1,
    compressed_channels=64)
model = dict(
    # The official models pad to 64; UpsamplerFPN itself works at any size.
    data_preprocessor=dict(pad_size_divisor=64),
    neck=dict(type='UpsamplerFPN', upsample_cfg=carafe),
    roi_head=dict(
        mask_head=dict(
            type='UpsamplerMaskHead',
            upsample_cfg=dict(carafe, scale_factor=2))))
