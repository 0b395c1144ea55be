# Toy Faster R-CNN with CARAFE in the FPN.
_base_ = './_base_/faster-rcnn_r18_fpn_toy.py'
model = dict(neck=dict(upsample_cfg=dict(type='CARAFE')))
