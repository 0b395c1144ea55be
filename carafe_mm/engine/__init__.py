"""Training-engine pieces shared by the detection and segmentation
integrations (need mmengine only)."""
from .safe_checkpoint_hook import SafeCheckpointHook, from_safe, to_safe

__all__ = ['SafeCheckpointHook', 'from_safe', 'to_safe']
