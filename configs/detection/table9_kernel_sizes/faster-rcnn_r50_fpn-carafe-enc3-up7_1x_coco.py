# Table 9: CARAFE with k_enc = 3, k_up = 7.
_base_ = '../faster-rcnn_r50_fpn-carafe_1x_coco.py'
model = dict(neck=dict(upsample_cfg=dict(encoder_kernel=3, up_kernel=7)))
