# Toy UperNet with CARAFE in the PPM, the FPN and the FUSE.
_base_ = './_base_/upernet_r18_toy.py'
model = dict(
    decode_head=dict(
        ppm_upsample_cfg=dict(type='CARAFE'),
        fpn_upsample_cfg=dict(type='CARAFE'),
        fuse_upsample_cfg=dict(type='CARAFE')))
