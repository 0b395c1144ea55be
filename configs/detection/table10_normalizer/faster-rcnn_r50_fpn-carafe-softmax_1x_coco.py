# Table 10: CARAFE with the softmax kernel normaliser.
_base_ = '../faster-rcnn_r50_fpn-carafe_1x_coco.py'
model = dict(neck=dict(upsample_cfg=dict(normalizer='softmax')))
