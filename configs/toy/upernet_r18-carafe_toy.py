# Toy UperNet with CARAFE in the PPM, the FPN and the FUSE.
_base_ = './_base_/upernet_r18_toy.py'
carafe = dict(type='CARAFE', compressed_channels=32)
model = dict(
    decode_head=dict(
        ppm_upsample_cfg=carafe,
        fpn_upsample_cfg=carafe,
        fuse_upsample_cfg=carafe))
