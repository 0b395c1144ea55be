# UperNet with pixel-shuffle in the PPM, the FPN and the FUSE (the CARAFE
# sites), for comparison with the CARAFE row.
_base_ = '../upernet_r50_4xb4-80k_ade20k-512x512.py'
up = dict(type='PixelShuffle')
model = dict(
    decode_head=dict(
        type='UpsamplerUPerHead',
        ppm_upsample_cfg=up,
        fpn_upsample_cfg=up,
        fuse_upsample_cfg=up))
