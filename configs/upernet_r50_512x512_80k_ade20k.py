_base_ = './segmentation/upernet_r50_4xb4-80k_ade20k-512x512.py'
