# Table 4: CARAFE in the FPN only; mmdet's deconvolution in the mask head.
_base_ = '../mask-rcnn_r50_fpn_1x_coco.py'
model = dict(
    data_preprocessor=dict(pad_size_divisor=64),  # as the CARAFE models
    neck=dict(type='UpsamplerFPN', upsample_cfg=dict(type='CARAFE')))
