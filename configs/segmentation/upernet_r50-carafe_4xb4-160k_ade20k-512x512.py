# UperNet R50 with CARAFE in the PPM, the FPN and the FUSE, 160k iterations.
_base_ = './upernet_r50_4xb4-160k_ade20k-512x512.py'
carafe = dict(
    type='CARAFE',
    up_kernel=5,
    up_group=1,
    encoder_kernel=3,
    encoder_dilation=1,
    compressed_channels=64)
model = dict(
    decode_head=dict(
        type='UpsamplerUPerHead',
        ppm_upsample_cfg=carafe,
        fpn_upsample_cfg=carafe,
        fuse_upsample_cfg=carafe))
