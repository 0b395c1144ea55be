# Toy UperNet, the baseline: bilinear resizing in the PPM, FPN and FUSE.
_base_ = './_base_/upernet_r18_toy.py'
