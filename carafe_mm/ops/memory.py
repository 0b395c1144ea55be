"""The CPU op's output-block cache (see ``csrc/cpu/output_allocator.h``).

Outputs of 2 MiB or more are kept when freed, for reuse by the next output of
the same size, up to ``CARAFE_MM_CPU_CACHE_MB`` MiB (default 256; 0 turns the
cache off; read once, when the first output is allocated; a value that is not
a whole number from 0 to 1048576 makes every op call raise a ``ValueError``
naming it).
"""
import torch

from ._extension import extension_available


def empty_cache():
    """Free the CPU output blocks carafe_mm keeps for reuse (as
    ``torch.cuda.empty_cache`` does for the CUDA caching allocator).
    Tensors in use are not affected."""
    if extension_available():
        torch.ops.carafe_mm.empty_cache()


def cpu_cache_info():
    """``dict(cached_bytes=..., limit_bytes=...)``: the bytes of freed CPU
    outputs held for reuse now, and the most it holds."""
    if not extension_available():
        return dict(cached_bytes=0, limit_bytes=0)
    cached, limit = torch.ops.carafe_mm.cpu_cache_info()
    return dict(cached_bytes=cached, limit_bytes=limit)
