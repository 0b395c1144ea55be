# Table 2, CARAFE row: the headline model.
_base_ = '../faster-rcnn_r50_fpn-carafe_1x_coco.py'
