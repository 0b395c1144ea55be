_base_ = './detection/faster-rcnn_r50_fpn_1x_coco.py'
