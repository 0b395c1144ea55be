# Baseline: mmseg's UperNet R50, ADE20K 512×512, 80k iterations (bilinear
# upsampling everywhere), with checkpoints that load under torch >= 2.6.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['carafe_mm.mmseg'], allow_failed_imports=False)
custom_hooks = [dict(type='SafeCheckpointHook')]
