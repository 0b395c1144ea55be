# a2u in the FPN of Faster R-CNN (its authors' benchmark).
_base_ = '../faster-rcnn_r50_fpn-carafe_1x_coco.py'
model = dict(
    neck=dict(
        upsample_cfg=dict(
            _delete_=True, type='A2U', up_kernel=5, affinity_kernel=3,
            rank=1)))
