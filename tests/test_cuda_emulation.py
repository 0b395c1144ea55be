"""The CUDA kernels (carafe_mm/csrc/cuda) run on the CPU under the emulation
of tests/cuda_emu: the CUDA test cases of test_ops.py, checked against the
reference, with every device buffer bounds-checked and poison-filled.

$CARAFE_MM_EMU_KERNELS names another .cu file to test in place of the
project's (a scratch copy with a deliberate bug must make these tests fail).

Shape letters: N batch, C channels, G groups, H×W input, s scale, k kernel.
"""
import hashlib
import itertools
import os

import pytest
import torch

from carafe_mm.ops import carafe_reference
from .cuda_emu import KERNELS, load
from .utils import check_other_layouts, grads, make_inputs

# Few SMs, so that the grids are small and the grid-stride loops go round.
SM_COUNT = 2


@pytest.fixture(scope='module')
def emu():
    source = os.environ.get('CARAFE_MM_EMU_KERNELS', KERNELS)
    name = 'carafe_mm_emu'
    if os.path.abspath(source) != KERNELS:
        path = os.path.abspath(source).encode()
        name += '_' + hashlib.sha1(path).hexdigest()[:8]
    lib = load(source, name=name)
    previous = lib.configure(SM_COUNT)
    yield lib
    lib.configure(previous)


class EmulatedCarafe(torch.autograd.Function):
    """The emulated forward and backward ops, as one differentiable op."""

    @staticmethod
    def forward(ctx, ops, features, masks, k, g, s):
        ctx.save_for_backward(features, masks)
        ctx.ops, ctx.args = ops, (k, g, s)
        return ops.carafe_forward(features, masks, k, g, s)

    @staticmethod
    def backward(ctx, grad_output):
        features, masks = ctx.saved_tensors
        grad_features, grad_masks = ctx.ops.carafe_backward(
            grad_output, features, masks, *ctx.args)
        return None, grad_features, grad_masks, None, None, None


def emulated(emu):
    return lambda *args: EmulatedCarafe.apply(emu.ops, *args)


def assert_matches_reference(emu, features, masks, k, g, s, **tol):
    expected = grads(carafe_reference, features, masks, k, g, s)
    actual = grads(emulated(emu), features, masks, k, g, s)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, **tol)


@pytest.mark.parametrize(
    'k,g,s', list(itertools.product([1, 3, 5, 7], [1, 2, 4], [1, 2, 3, 4])))
def test_matches_reference(emu, k, g, s):
    features, masks = make_inputs(2, 3 * g, 5, 7, k, g, s)
    assert_matches_reference(emu, features, masks, k, g, s)


@pytest.mark.parametrize(
    'shape',
    [
        (1, 6, 37, 41, 5, 2, 2),  # many blocks, grid-stride loops
        (3, 5, 1, 1, 3, 1, 2),  # a single pixel: every tap but the centre pads
        (2, 7, 2, 19, 7, 7, 3),  # k larger than the input, one channel a group
        (1, 2, 4, 3, 21, 2, 1),  # G·k² = 882 mask channels
        (1, 9, 6, 5, 3, 3, 5),  # C/G = 3: channel blocks with a remainder
        (1, 40, 3, 4, 3, 1, 2),  # C/G = 40: two full channel blocks and a part
        (2, 4, 6, 7, 11, 2, 2),  # k = 11
        (1, 3, 12, 13, 9, 1, 4),  # k = 9, s = 4
    ])
def test_matches_reference_odd_shapes(emu, shape):
    n, c, h, w, k, g, s = shape
    features, masks = make_inputs(n, c, h, w, k, g, s)
    assert_matches_reference(emu, features, masks, k, g, s)


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5),
                                       (torch.bfloat16, 2e-2),
                                       (torch.float16, 2e-3)])
def test_low_precision_within_tolerance(emu, dtype, tol):
    k, g, s = 5, 2, 2
    features, masks = make_inputs(2, 8, 9, 11, k, g, s)
    go = torch.randn(2, 8, 18, 22, dtype=torch.float64)
    # The reference on the values rounded to dtype: what an exact
    # fp32-accumulating kernel gives before its output is rounded.
    rounded = [x.to(dtype).double() for x in (features, masks, go)]
    expected = grads(carafe_reference, *rounded[:2], k, g, s, rounded[2])
    actual = grads(
        emulated(emu), features.to(dtype), masks.to(dtype), k, g, s,
        go.to(dtype))
    for a, e in zip(actual, expected):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double(), e, rtol=tol, atol=tol)


def test_non_contiguous_and_channels_last(emu):
    # the launchers make them contiguous on the device
    check_other_layouts(emulated(emu))


def test_unaligned_inputs(emu):
    """Inputs that start one element into their storage: the kernels'
    paired loads fall back to single ones."""
    k, g, s = 5, 1, 2
    features, masks = make_inputs(1, 4, 5, 6, k, g, s, torch.float32)
    shifted = [
        torch.empty(x.numel() + 1, dtype=x.dtype)[1:].view_as(x).copy_(x)
        for x in (features, masks)
    ]
    assert all(x.is_contiguous() and x.data_ptr() % 8 for x in shifted)
    assert_matches_reference(emu, *shifted, k, g, s)


@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('k,g,s', [(3, 1, 2), (5, 2, 2), (1, 1, 3), (3, 3, 1)])
def test_gradcheck(emu, seed, k, g, s):
    features, masks = make_inputs(
        1, 3 * g, 4, 3, k, g, s, seed=seed, normalise=False)
    assert torch.autograd.gradcheck(
        emulated(emu),
        (features.requires_grad_(), masks.requires_grad_(), k, g, s),
        fast_mode=True)


@pytest.mark.parametrize('shape', [(0, 4, 5, 6), (2, 0, 5, 6), (2, 4, 0, 6)])
def test_empty_inputs(emu, shape):
    """The empty batch (a mask head with no RoIs), no channels, no rows."""
    n, c, h, w = shape
    k, g, s = 3, 1, 2
    features = torch.randn(shape)
    masks = torch.randn(n, k * k, s * h, s * w)
    out, grad_features, grad_masks = grads(
        emulated(emu), features, masks, k, g, s)
    assert out.shape == (n, c, s * h, s * w)
    assert grad_features.shape == features.shape
    assert grad_masks.shape == masks.shape
    assert not grad_features.any() and not grad_masks.any()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_matches_compiled_cpu_op(emu, dtype):
    features, masks = make_inputs(2, 32, 13, 17, 5, 4, 2, dtype)
    cpu = grads(torch.ops.carafe_mm.carafe_forward, features, masks, 5, 4, 2)
    emulated_ = grads(emulated(emu), features, masks, 5, 4, 2)
    for a, b in zip(emulated_, cpu):
        torch.testing.assert_close(a, b)


def launches_on_one_sm(emu, features, masks, k, g, s):
    """Check the kernels against the reference on an emulated device of one
    SM, and return the traffic log of their launches."""
    previous = emu.configure(1)
    try:
        emu.trace(True)
        assert_matches_reference(emu, features, masks, k, g, s)
    finally:
        emu.trace(False)
        emu.configure(previous)
    return emu.pop_log()


def test_grid_stride_loops_cover_every_element(emu):
    """On one emulated SM a grid has 32 blocks of 256 threads, fewer than
    the work items of each kernel: each thread goes round its loop several
    times, and every output element is still written exactly once."""
    n, c, h, w, k, g, s = 1, 16, 96, 96, 1, 1, 2
    features, masks = make_inputs(n, c, h, w, k, g, s, torch.float32)
    launches = launches_on_one_sm(emu, features, masks, k, g, s)
    # forward, then the two backward kernels; the output, grad_masks and
    # grad_features written once each
    stored = [c * s * h * s * w, g * k * k * s * h * s * w, c * h * w]
    assert len(launches) == len(stored)
    for launch, elements in zip(launches, stored):
        assert launch['threads'] == 32 * 256 < elements
        assert launch['global_store']['bytes'] == 4 * elements


def test_tiled_kernels_loop_over_tiles(emu):
    """The tiled kernels (k = 3, s = 2) on one emulated SM: 36 tiles for a
    grid of 32 blocks, and every output element stored exactly once."""
    n, c, h, w, k, g, s = 2, 8, 48, 96, 3, 1, 2
    features, masks = make_inputs(n, c, h, w, k, g, s, torch.float32)
    launches = launches_on_one_sm(emu, features, masks, k, g, s)
    # the backward writes grad_masks and grad_features in one launch
    stored = [
        n * c * s * h * s * w, n * g * k * k * s * h * s * w + n * c * h * w
    ]
    assert [launch['kernel'].split('<')[0] for launch in launches] == [
        'carafe_forward_tiled_kernel', 'carafe_backward_tiled_kernel'
    ]
    for launch, elements in zip(launches, stored):
        assert launch['grid'][0] == 32
        assert launch['global_store']['bytes'] == 4 * elements


@pytest.mark.parametrize('h, warps', [(16, 8), (5, 3)])
def test_tiled_backward_shuffles_once_per_warp_and_channel(emu, h, warps):
    """The tiled backward's grad_features threads combine their two output
    row parities with one shuffle per channel; warps whose rows are all
    below the image skip the channel loop (5 rows: the warps of rows 0-1,
    2-3 and 4-5 of the 16-row tile run)."""
    c = 3
    features, masks = make_inputs(1, c, h, 16, 5, 1, 2, torch.float32)
    emu.trace(True)
    try:
        assert_matches_reference(emu, features, masks, 5, 1, 2)
    finally:
        emu.trace(False)
    forward, backward = emu.pop_log()
    assert forward['warp_collectives'] == 0
    assert backward['warp_collectives'] == warps * c
