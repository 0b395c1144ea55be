_base_ = './detection/faster-rcnn_r50_fpn-carafe_1x_coco.py'
