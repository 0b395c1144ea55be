_base_ = '../faster-rcnn_r50_fpn-carafe_1x_coco.py'
