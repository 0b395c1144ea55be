_base_ = './detection/mask-rcnn_r50_fpn_1x_coco.py'
