# Table 8: CARAFE with C_m = 64 compressed channels.
_base_ = '../faster-rcnn_r50_fpn-carafe_1x_coco.py'
model = dict(neck=dict(upsample_cfg=dict(compressed_channels=64)))
