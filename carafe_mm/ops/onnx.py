"""CARAFE in ONNX, with standard operators only (default domain).

Shape letters: N batch, C channels, G groups, Cg = C / G, H×W input size,
s scale factor, k kernel size, p = k // 2.

An ONNX runtime has no kernel for ``carafe_mm::carafe_forward``, so the
export writes the op with operators every runtime has, in a constant number
of nodes whatever k:

1. ``Conv`` of every channel with the k² one-hot k×k filters (zero padding
   p): the k×k neighbourhood of every pixel, (N·C, k², H, W);
2. ``Reshape`` + ``Transpose`` of it to (N, G, H, W, Cg, k²) and of the
   masks to (N, G, H, W, k², s²);
3. one batched ``MatMul``: for every input pixel, its Cg neighbourhoods
   times its s² kernels, (N, G, H, W, Cg, s²);
4. ``Transpose`` + ``Reshape`` of the sub-pixels into place, (N, C, sH, sW).

Every size comes from the inputs' shapes at run time (nothing is frozen to
the export size: dynamic N, H, W work), and the result is the op's up to
the order of the float additions (the one-hot filters copy values exactly;
a non-finite feature, though, reaches its neighbours' columns as 0·inf =
NaN). Half-precision inputs are computed in float32, as the compiled
kernels accumulate. The cost is in ``docs/performance.md``.

How each exporter gets there:

* ``torch.onnx.export(..., dynamo=True)`` (the default): while it runs,
  :func:`carafe_mm.ops.carafe` computes with :func:`carafe_matmul`, the
  steps above in PyTorch operators, which torch's ONNX library translates
  one for one (:func:`export_with_matmul` decides);
* ``dynamo=False`` (TorchScript, what mmdeploy drives): the traced graph
  keeps the op, translated by :func:`carafe_symbolic`, registered here with
  ``torch.onnx.register_custom_op_symbolic`` for every opset; an opset older
  than :data:`MIN_OPSET` raises an error that names the op.

Eager and ``torch.compile`` runs, and ``torch.export`` outside ONNX, keep
the compiled kernels.
"""
import torch
import torch.nn.functional as F

from ._checks import as_int, check_carafe_args
from ._extension import extension_available, has_kernel

#: The oldest ONNX opset the legacy translation supports: its Slice takes
#: starts and ends as inputs (opset 10 on); 11 is mmdeploy's default and
#: the oldest one tested.
MIN_OPSET = 11

OP_NAME = 'carafe_mm::carafe_forward'


def export_with_matmul(device_type):
    """Whether :func:`carafe_mm.ops.carafe` computes with
    :func:`carafe_matmul` instead of the compiled op: during
    ``torch.onnx.export``, except under the legacy exporter's tracing of the
    op, which :func:`carafe_symbolic` translates."""
    if not torch.onnx.is_in_onnx_export():
        return False
    return not (torch.jit.is_tracing() and has_kernel(device_type))


def one_hot_filters(kernel_size, dtype, device=None):
    """(k², 1, k, k): filter ky·k + kx is 1 at (ky, kx), 0 elsewhere."""
    k = kernel_size
    return torch.eye(k * k, dtype=dtype, device=device).reshape(k * k, 1, k, k)


def carafe_matmul(features, masks, kernel_size, group_size, scale_factor):
    """CARAFE as a one-hot convolution (the neighbourhoods) and a batched
    matrix product (the reassembly), in operators that export to standard
    ONNX ones with dynamic shapes; see the module's docstring.

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
    k, g, s = kernel_size, group_size, scale_factor
    # (N·C, k², H, W): channel ky·k + kx is the neighbour (ky - p, kx - p)
    cols = F.conv2d(
        features.reshape(n * c, 1, h, w),
        one_hot_filters(k, features.dtype, features.device),
        padding=k // 2)
    # (N, G, Cg, k², H, W) -> (N, G, H, W, Cg, k²)
    cols = cols.reshape(n, g, c // g, k * k, h, w).permute(0, 1, 4, 5, 2, 3)
    # (N, G, k², H, s, W, s) -> (N, G, H, W, k², s, s)
    kernels = masks.reshape(n, g, k * k, h, s, w, s)
    kernels = kernels.permute(0, 1, 3, 5, 2, 4, 6)
    # (N, G, H, W, k², s²)
    kernels = kernels.reshape(n, g, h, w, k * k, s * s)
    # (N, G, H, W, Cg, s²) -> (N, G, H, W, Cg, s, s)
    out = torch.matmul(cols, kernels).reshape(n, g, h, w, c // g, s, s)
    # (N, G, Cg, H, s, W, s) -> (N, C, sH, sW)
    out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(n, c, s * h, s * w)
    return out.to(dtype)


def _check_opset(opset):
    if opset < MIN_OPSET:
        raise ValueError(
            f'{OP_NAME}: its ONNX translation needs opset {MIN_OPSET} or '
            f'newer, but the export asked for opset {opset}; pass '
            'opset_version=17 (or newer) to torch.onnx.export')


@torch.onnx.symbolic_helper.parse_args('v', 'v', 'i', 'i', 'i')
def carafe_symbolic(g, features, masks, kernel_size, group_size, scale_factor):
    """The legacy (TorchScript) exporter's translation of the op: the graph
    of :func:`carafe_matmul`, node by node."""
    _check_opset(g.opset)
    k, s, k2 = kernel_size, scale_factor, kernel_size**2

    def ints(*values):
        return g.op(
            'Constant', value_t=torch.tensor(values, dtype=torch.int64))

    def reshape(x, *dims):
        return g.op('Reshape', x, g.op('Concat', *dims, axis_i=0))

    # N, C, H, W of features, at run time, each of shape (1,)
    shape = g.op('Shape', features)
    n, c, h, w = (g.op('Slice', shape, ints(i), ints(i + 1)) for i in range(4))
    cg = g.op('Div', c, ints(group_size))
    # computed in float32, whatever the inputs' float type
    float32 = torch.onnx.TensorProtoDataType.FLOAT
    dtype = torch.onnx.JitScalarType.from_value(
        features, torch.onnx.JitScalarType.FLOAT).onnx_type()
    features, masks = (
        g.op('Cast', x, to_i=float32) for x in (features, masks))
    # (N·C, 1, H, W) -> (N·C, k², H, W)
    cols = g.op(
        'Conv',
        g.op('Reshape', features, ints(-1, 1, 0, 0)),
        g.op('Constant', value_t=one_hot_filters(k, torch.float32)),
        pads_i=[k // 2] * 4)
    # (N, G, Cg, k², H, W) -> (N, G, H, W, Cg, k²)
    cols = g.op(
        'Transpose',
        reshape(cols, n, ints(group_size), cg, ints(k2), h, w),
        perm_i=[0, 1, 4, 5, 2, 3])
    # (N, G, k², H, s, W, s) -> (N, G, H, W, k², s, s) -> (..., k², s²)
    kernels = g.op(
        'Transpose',
        reshape(masks, n, ints(group_size, k2), h, ints(s), w, ints(s)),
        perm_i=[0, 1, 3, 5, 2, 4, 6])
    kernels = reshape(kernels, n, ints(group_size), h, w, ints(k2, s * s))
    # (N, G, H, W, Cg, s²) -> (N, G, H, W, Cg, s, s)
    out = reshape(
        g.op('MatMul', cols, kernels), n, ints(group_size), h, w, cg,
        ints(s, s))
    # (N, G, Cg, H, s, W, s) -> (N, C, sH, sW)
    out = g.op('Transpose', out, perm_i=[0, 1, 4, 2, 5, 3, 6])
    out = reshape(out, n, c, g.op('Mul', h, ints(s)), g.op('Mul', w, ints(s)))
    return g.op('Cast', out, to_i=dtype)


if extension_available():
    # Registered at the oldest opset the exporter knows, so that an opset
    # too old reaches _check_opset's message.
    torch.onnx.register_custom_op_symbolic(OP_NAME, carafe_symbolic, 7)
