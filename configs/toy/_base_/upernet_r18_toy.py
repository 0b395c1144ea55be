# UperNet shrunk to run on 2 CPU cores in minutes: ResNet-18 (V1c) from
# scratch (no download), BN instead of SyncBN, 64-channel head, 96×96 crops
# of the toy ADE20K-layout dataset written by tools/data/make_toy_ade20k.py.
# The leaf configs choose the head's upsamplers.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'
# CheckSegMap, after LoadAnnotations: a label map of the wrong size, channels
# or values is an error that names the file (carafe_mm/datasets).
custom_imports = dict(
    imports=['carafe_mm.mmseg', 'carafe_mm.datasets.check_seg_map'],
    allow_failed_imports=False)
custom_hooks = [dict(type='SafeCheckpointHook')]

norm_cfg = dict(type='BN', requires_grad=True)
crop_size = (96, 96)
data_root = 'data/toy_ade20k/'
metainfo = dict(
    classes=('sky', 'ground', 'square', 'disk'),
    palette=[[120, 170, 230], [110, 90, 60], [220, 60, 50], [60, 200, 90]])

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(depth=18, norm_cfg=norm_cfg, init_cfg=None),
    decode_head=dict(
        type='UpsamplerUPerHead',
        in_channels=[64, 128, 256, 512],
        channels=64,
        num_classes=4,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=256, channels=32, num_classes=4, norm_cfg=norm_cfg))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=len(metainfo['classes'])),
    dict(
        type='RandomResize',
        scale=(128, 128),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='CheckSegMap', num_classes=len(metainfo['classes'])),
    dict(type='PackSegInputs')
]
# ADE20K's layout and label convention (0 = unlabelled, reduce_zero_label),
# read by BaseSegDataset: ADE20KDataset only takes subsets of ADE's classes.
dataset = dict(
    type='BaseSegDataset',
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True,
    data_root=data_root,
    metainfo=metainfo)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        **dataset,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        **dataset,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 400
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=max_iters,
        by_epoch=False)
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
