# Table 4: CARAFE in the FPN only (deconvolution in the mask head).
_base_ = '../mask-rcnn_r50_fpn-carafe_1x_coco.py'
model = dict(
    roi_head=dict(
        mask_head=dict(
            _delete_=True,
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=80,
            loss_mask=dict(
                type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))))
