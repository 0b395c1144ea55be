# Toy Mask R-CNN, the baseline: nearest in the FPN, deconvolution in the
# mask head.
_base_ = './_base_/mask-rcnn_r18_fpn_toy.py'
