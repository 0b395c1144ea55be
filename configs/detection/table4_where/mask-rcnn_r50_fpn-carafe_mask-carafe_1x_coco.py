# Table 4: CARAFE in both the FPN and the mask head (the headline model).
_base_ = '../mask-rcnn_r50_fpn-carafe_1x_coco.py'
