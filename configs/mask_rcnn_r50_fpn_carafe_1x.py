_base_ = './detection/mask-rcnn_r50_fpn-carafe_1x_coco.py'
