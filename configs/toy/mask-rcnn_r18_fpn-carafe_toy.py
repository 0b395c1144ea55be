# Toy Mask R-CNN with CARAFE in the FPN and in the mask head.
_base_ = './_base_/mask-rcnn_r18_fpn_toy.py'
model = dict(
    neck=dict(upsample_cfg=dict(type='CARAFE')),
    roi_head=dict(
        mask_head=dict(
            # replaces the base's Deconv and its kernel_size
            upsample_cfg=dict(_delete_=True, type='CARAFE'))))
