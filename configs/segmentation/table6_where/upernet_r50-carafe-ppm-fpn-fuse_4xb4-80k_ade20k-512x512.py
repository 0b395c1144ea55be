_base_ = '../upernet_r50-carafe_4xb4-80k_ade20k-512x512.py'
