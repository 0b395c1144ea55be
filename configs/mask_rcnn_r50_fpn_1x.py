# The name promised by the README; see detection/.
_base_ = './detection/mask-rcnn_r50_fpn_1x_coco.py'
