# Table 2: Nearest in the FPN top-down pathway, in the FPN_CARAFE
# structure of the CARAFE row (P6 inside the top-down path).
_base_ = '../faster-rcnn_r50_fpn-carafe_1x_coco.py'
model = dict(neck=dict(upsample_cfg=dict(_delete_=True, type='Nearest')))
