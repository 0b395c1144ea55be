# Table 3: NearestConv in the mask head (14×14 -> 28×28), nearest FPN.
_base_ = '../mask-rcnn_r50_fpn_1x_coco.py'
model = dict(
    roi_head=dict(
        mask_head=dict(
            type='UpsamplerMaskHead', upsample_cfg=dict(type='NearestConv'))))
