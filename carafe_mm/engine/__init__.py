"""Training-engine pieces shared by the detection and segmentation
integrations (need mmengine only)."""
from .cpu_distributed import CPUDistributedDataParallel, init_cpu_distributed
from .safe_checkpoint_hook import SafeCheckpointHook, from_safe, to_safe

__all__ = [
    'CPUDistributedDataParallel', 'SafeCheckpointHook', 'from_safe',
    'init_cpu_distributed', 'to_safe'
]
