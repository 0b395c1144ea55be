"""Make the CARAFE op visible to mmengine's complexity counter.

``mmengine.analysis.get_model_complexity_info`` (and ``FlopAnalyzer``) trace
the model with TorchScript and count the ops they have a handle for; the
compiled op ``carafe_mm::carafe_forward`` is added to their defaults here.
A reassembly costs k² multiply-adds per output value. (The pure-PyTorch
reference is counted through its einsum, to the same number.)
"""
from math import prod

from mmengine.analysis import complexity_analysis
from mmengine.analysis.jit_handles import generic_activation_jit, get_shape

OP_NAME = 'carafe_mm::carafe_forward'


def carafe_flop_jit(inputs, outputs):
    """Multiply-adds of ``carafe_forward(features, masks, k, G, s)``:
    output numel × k²."""
    kernel_size = inputs[2].toIValue()
    return prod(get_shape(outputs[0])) * kernel_size * kernel_size


# mmengine 0.10.7 has a public way to add a handle to one analyser
# (FlopAnalyzer(...).set_op_handle, flop_count(supported_ops=...)), but
# get_model_complexity_info, the function mmengine documents and our tools
# call, builds its analysers itself and takes no handles: they copy these
# module-level (private) default tables, the only place a handle reaches
# every analyser built afterwards.
complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS[OP_NAME] = carafe_flop_jit
complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS[OP_NAME] = \
    generic_activation_jit()
