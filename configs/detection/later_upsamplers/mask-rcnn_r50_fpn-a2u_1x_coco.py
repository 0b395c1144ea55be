# a2u in the FPN and the mask head of Mask R-CNN.
_base_ = '../mask-rcnn_r50_fpn-carafe_1x_coco.py'
model = dict(
    neck=dict(
        upsample_cfg=dict(
            _delete_=True, type='A2U', up_kernel=5, affinity_kernel=3,
            rank=1)),
    roi_head=dict(
        mask_head=dict(
            upsample_cfg=dict(
                _delete_=True,
                type='A2U',
                up_kernel=5,
                affinity_kernel=3,
                rank=1,
                scale_factor=2))))
