# Baseline: mmseg's UperNet R50, ADE20K 512×512, 80k iterations (bilinear
# upsampling everywhere), with checkpoints that load under torch >= 2.6.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(
    imports=['carafe_mm.mmseg', 'carafe_mm.datasets.checked_ade20k_dataset'],
    allow_failed_imports=False)
custom_hooks = [dict(type='SafeCheckpointHook')]

# CheckedADE20KDataset: ADE20KDataset whose pipeline names a label
# map of the wrong size, channels or values (carafe_mm/datasets).
train_dataloader = dict(dataset=dict(type='CheckedADE20KDataset'))
val_dataloader = dict(dataset=dict(type='CheckedADE20KDataset'))
test_dataloader = val_dataloader
