"""Mixed-precision training on the CPU."""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAutocastOptimWrapper(OptimWrapper):
    """``--amp`` without a GPU: the forward runs under
    ``torch.autocast('cpu', dtype=torch.bfloat16)`` (mmengine's
    ``AmpOptimWrapper`` needs a GPU). bfloat16 has float32's range, so there
    is no loss scaling."""

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast(
                'cpu', dtype=torch.bfloat16):
            yield
