_base_ = '../table4_where/mask-rcnn_r50_fpn_mask-carafe_1x_coco.py'
