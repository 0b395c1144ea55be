# Baseline: mmseg's UperNet R50, ADE20K 512×512, 160k iterations.
_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['carafe_mm.mmseg'], allow_failed_imports=False)
custom_hooks = [dict(type='SafeCheckpointHook')]
