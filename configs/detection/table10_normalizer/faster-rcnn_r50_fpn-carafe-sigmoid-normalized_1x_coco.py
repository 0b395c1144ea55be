# Table 10: CARAFE with the sigmoid_normalized kernel normaliser.
_base_ = '../faster-rcnn_r50_fpn-carafe_1x_coco.py'
model = dict(neck=dict(upsample_cfg=dict(normalizer='sigmoid_normalized')))
