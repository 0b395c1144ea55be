# Table 6: CARAFE in the PPM + FPN of UperNet,
# bilinear elsewhere.
_base_ = '../upernet_r50_4xb4-80k_ade20k-512x512.py'
model = dict(
    decode_head=dict(
        type='UpsamplerUPerHead',
        ppm_upsample_cfg=dict(type='CARAFE'),
        fpn_upsample_cfg=dict(type='CARAFE')))
