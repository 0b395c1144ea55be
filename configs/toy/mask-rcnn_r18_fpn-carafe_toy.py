# Toy Mask R-CNN with CARAFE in the FPN and in the mask head.
_base_ = './_base_/mask-rcnn_r18_fpn_toy.py'
carafe = dict(type='CARAFE', compressed_channels=32)
model = dict(
    neck=dict(upsample_cfg=dict(_delete_=True, **carafe)),
    roi_head=dict(
        mask_head=dict(
            upsample_cfg=dict(_delete_=True, scale_factor=2, **carafe))))
