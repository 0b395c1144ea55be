# dysample-dyscope in the FPN of Faster R-CNN (its authors' benchmark).
_base_ = '../faster-rcnn_r50_fpn-carafe_1x_coco.py'
model = dict(
    neck=dict(
        upsample_cfg=dict(
            _delete_=True, type='DySample', style='lp', groups=4,
            dyscope=True)))
