_base_ = './segmentation/upernet_r50-carafe_4xb4-160k_ade20k-512x512.py'
