"""CARAFE in ONNX, with standard operators only (default domain).

Shape letters: N batch, C channels, G groups, Cg = C / G, H×W input size,
s scale factor, k kernel size, p = k // 2.

An ONNX runtime has no kernel for ``carafe_mm::carafe_forward``, so the
export writes the op with operators every runtime has. Output pixel
(s·y + i, s·x + j) is ``sum over taps (ky, kx) of padded[y + ky, x + kx] ·
mask[ky·k + kx, s·y + i, s·x + j]``; for each of the k² taps, the k×k
zero-padded neighbourhood's shifted copy ``padded[ky:ky + H, kx:kx + W]``
(a Slice with constant starts and ends) is multiplied, broadcast over the
s×s sub-pixels and the Cg channels of each group, by the tap's mask
channel, and the k² products are added:

    Pad -> k² × (Slice, Reshape, Slice of masks, Mul, Add) -> Reshape

Every size comes from the input's shape at run time (nothing is frozen to
the export size: dynamic N, H, W work), and the result is exact up to the
order of the float additions. Half-precision inputs are computed in
float32, as the compiled kernels accumulate.

How each exporter gets there:

* ``torch.onnx.export(..., dynamo=True)`` (the default): while it runs,
  :func:`carafe_mm.ops.carafe` computes with :func:`carafe_taps`, the
  formulation above in PyTorch operators, which torch's ONNX library
  translates one for one (:func:`export_with_taps` decides);
* ``dynamo=False`` (TorchScript, what mmdeploy drives): the traced graph
  keeps the op, translated by :func:`carafe_symbolic`, registered here with
  ``torch.onnx.register_custom_op_symbolic`` for every opset; opsets older
  than :data:`MIN_OPSET` raise an error that names the op.

Eager and ``torch.compile`` runs keep the compiled kernels.
"""
import torch
import torch.nn.functional as F

from ._checks import as_int, check_carafe_args
from ._extension import extension_available, has_kernel

#: The oldest ONNX opset the translation supports (Pad and Slice take their
#: pads / starts / ends as inputs from opset 11 on).
MIN_OPSET = 11

OP_NAME = 'carafe_mm::carafe_forward'


def export_with_taps(device_type):
    """Whether :func:`carafe_mm.ops.carafe` computes with :func:`carafe_taps`
    instead of the compiled op: during ``torch.onnx.export``, except under the
    legacy exporter's tracing of the op, which :func:`carafe_symbolic`
    translates."""
    if not torch.onnx.is_in_onnx_export():
        return False
    return not (torch.jit.is_tracing() and has_kernel(device_type))


def carafe_taps(features, masks, kernel_size, group_size, scale_factor):
    """CARAFE as a sum over the k² taps of broadcast products, in operators
    that export to standard ONNX ones with dynamic shapes.

    Same signature and values as :func:`carafe_mm.ops.carafe`.
    """
    kernel_size = as_int('kernel_size', kernel_size)
    group_size = as_int('group_size', group_size)
    scale_factor = as_int('scale_factor', scale_factor)
    check_carafe_args(features, masks, kernel_size, group_size, scale_factor)
    dtype = features.dtype
    if dtype in (torch.float16, torch.bfloat16):
        features, masks = features.float(), masks.float()
    n, c, h, w = features.shape
    k, g, s, p = kernel_size, group_size, scale_factor, kernel_size // 2
    # (N, C, H + 2p, W + 2p)
    padded = F.pad(features, (p, p, p, p))
    # (N, G, k², H, s, W, s): row s·y + i of the masks is sub-pixel i of y
    kernels = masks.reshape(n, g, k * k, h, s, w, s)
    out = None
    for ky in range(k):
        for kx in range(k):
            # (N, C, H, W): the neighbour (ky - p, kx - p) of every pixel;
            # the ends count from the far edge, so they are constants
            tap = padded[:, :, ky:ky + 1 - k or None, kx:kx + 1 - k or None]
            # (N, G, Cg, H, 1, W, 1) × (N, G, 1, H, s, W, s)
            term = tap.reshape(n, g, c // g, h, 1, w, 1) * \
                kernels[:, :, ky * k + kx:ky * k + kx + 1]
            out = term if out is None else out + term
    # (N, G, Cg, H, s, W, s) -> (N, C, sH, sW)
    return out.reshape(n, c, s * h, s * w).to(dtype)


def _check_opset(opset):
    if opset < MIN_OPSET:
        raise ValueError(
            f'{OP_NAME}: its ONNX translation needs opset {MIN_OPSET} or '
            f'newer, but the export asked for opset {opset}; pass '
            f'opset_version={max(MIN_OPSET, 17)} (or newer) to '
            'torch.onnx.export')


@torch.onnx.symbolic_helper.parse_args('v', 'v', 'i', 'i', 'i')
def carafe_symbolic(g, features, masks, kernel_size, group_size, scale_factor):
    """The legacy (TorchScript) exporter's translation of the op: the graph
    of :func:`carafe_taps`, built node by node."""
    _check_opset(g.opset)
    k, s, p = kernel_size, scale_factor, kernel_size // 2

    def ints(*values):
        return g.op(
            'Constant', value_t=torch.tensor(values, dtype=torch.int64))

    def dim(shape, i):
        return g.op('Slice', shape, ints(i), ints(i + 1))

    # (4,): N, C, H, W of features, at run time
    shape = g.op('Shape', features)
    n, c, h, w = (dim(shape, i) for i in range(4))
    cg = g.op('Div', c, ints(group_size))
    padded = g.op('Pad', features, ints(0, 0, p, p, 0, 0, p, p))
    # (N, G, k², H, s, W, s)
    kernels = g.op(
        'Reshape', masks,
        g.op(
            'Concat',
            n,
            ints(group_size, k * k),
            h,
            ints(s),
            w,
            ints(s),
            axis_i=0))
    tap_shape = g.op(
        'Concat', n, ints(group_size), cg, h, ints(1), w, ints(1), axis_i=0)
    out = None
    for ky in range(k):
        for kx in range(k):
            t = ky * k + kx
            ends = [
                end + 1 - k or torch.iinfo(torch.int64).max for end in (ky, kx)
            ]
            # (N, G, Cg, H, 1, W, 1)
            tap = g.op(
                'Reshape',
                g.op('Slice', padded, ints(ky, kx), ints(*ends), ints(2, 3)),
                tap_shape)
            term = g.op('Mul', tap,
                        g.op('Slice', kernels, ints(t), ints(t + 1), ints(2)))
            out = term if out is None else g.op('Add', out, term)
    # (N, C, sH, sW)
    out_shape = g.op(
        'Concat',
        n,
        c,
        g.op('Mul', h, ints(s)),
        g.op('Mul', w, ints(s)),
        axis_i=0)
    return g.op('Reshape', out, out_shape)


if extension_available():
    # Registered at the oldest opset the exporter knows, so that an opset
    # too old reaches _check_opset's message.
    torch.onnx.register_custom_op_symbolic(OP_NAME, carafe_symbolic, 7)
