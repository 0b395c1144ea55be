# Table 4: CARAFE in the mask head only (nearest FPN).
_base_ = '../mask-rcnn_r50_fpn_1x_coco.py'
model = dict(
    roi_head=dict(
        mask_head=dict(
            type='UpsamplerMaskHead',
            upsample_cfg=dict(
                type='CARAFE',
                scale_factor=2,
                up_kernel=5,
                up_group=1,
                encoder_kernel=3,
                encoder_dilation=1,
                compressed_channels=64))))
