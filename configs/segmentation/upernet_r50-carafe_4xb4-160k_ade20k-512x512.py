# UperNet R50 with CARAFE in the PPM, the FPN and the FUSE, 160k iterations.
_base_ = './upernet_r50_4xb4-160k_ade20k-512x512.py'
# CARAFE's defaults are the paper's (k_up = 5, k_enc = 3, C_m = 64), so only
# the types are named and one key swaps a site, e.g. `--cfg-options
# model.decode_head.fuse_upsample_cfg.type=DySample`.
model = dict(
    decode_head=dict(
        type='UpsamplerUPerHead',
        ppm_upsample_cfg=dict(type='CARAFE'),
        fpn_upsample_cfg=dict(type='CARAFE'),
        fuse_upsample_cfg=dict(type='CARAFE')))
