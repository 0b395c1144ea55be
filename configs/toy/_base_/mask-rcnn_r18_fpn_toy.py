# Mask R-CNN on the toy COCO dataset: the toy Faster R-CNN plus mmdet's
# mask branch (14×14 RoI features, 4 convs, 2× upsampling to 28×28). The
# leaf configs choose the FPN's and the mask head's upsamplers.
_base_ = './faster-rcnn_r18_fpn_toy.py'

model = dict(
    type='MaskRCNN',
    roi_head=dict(
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=64,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='UpsamplerMaskHead',
            num_convs=2,
            in_channels=64,
            conv_out_channels=64,
            num_classes=3,  # square, disk, triangle
            upsample_cfg=dict(type='Deconv', kernel_size=2, scale_factor=2),
            loss_mask=dict(
                type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(rcnn=dict(mask_size=28)),
    test_cfg=dict(rcnn=dict(mask_thr_binary=0.5)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_evaluator = dict(metric=['bbox', 'segm'])
test_evaluator = val_evaluator
