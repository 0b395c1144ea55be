# dysample-dyscope in the FPN and the mask head of Mask R-CNN.
_base_ = '../mask-rcnn_r50_fpn-carafe_1x_coco.py'
model = dict(
    neck=dict(
        upsample_cfg=dict(
            _delete_=True, type='DySample', style='lp', groups=4,
            dyscope=True)),
    roi_head=dict(
        mask_head=dict(
            upsample_cfg=dict(
                _delete_=True,
                type='DySample',
                style='lp',
                groups=4,
                dyscope=True,
                scale_factor=2))))
