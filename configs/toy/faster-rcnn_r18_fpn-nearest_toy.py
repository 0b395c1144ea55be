# Toy Faster R-CNN, nearest-neighbour upsampling in the FPN (the baseline).
_base_ = './_base_/faster-rcnn_r18_fpn_toy.py'
