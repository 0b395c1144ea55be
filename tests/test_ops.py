"""The compiled CARAFE op against the reference, and its torch.library
integration (the reference itself, carafe()'s backends, hand-computed cases
and errors: test_reference.py). Skipped where carafe_mm._C did not load.

Shape letters: N batch, C channels, G groups, H×W input, s scale, k kernel.
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

from carafe_mm.ops import carafe, carafe_reference
from .utils import (check_other_layouts, compiled, cpu_and_cuda, grads,
                    make_inputs, needs_extension, run_python)

pytestmark = needs_extension

# ---------------------------------------------------------------------------
# compiled vs reference


@pytest.mark.parametrize('device', cpu_and_cuda())
@pytest.mark.parametrize(
    'k,g,s', list(itertools.product([1, 3, 5, 7], [1, 2, 4], [1, 2, 3, 4])))
def test_matches_reference(device, k, g, s):
    features, masks = make_inputs(2, 3 * g, 5, 7, k, g, s, device=device)
    expected = grads(carafe_reference, features, masks, k, g, s)
    actual = grads(compiled, features, masks, k, g, s)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize('device', cpu_and_cuda())
@pytest.mark.parametrize(
    'shape',
    [
        (1, 6, 37, 41, 5, 2, 2),  # several forward bands and SIMD chunks
        (3, 5, 1, 1, 3, 1, 2),  # a single pixel: every tap but the centre pads
        (2, 7, 2, 19, 7, 7, 3),  # k larger than the input, one channel a group
        (1, 2, 4, 3, 21, 2, 1),  # G·k² = 882 mask channels, beyond mmcv's 384
        (1, 9, 6, 5, 3, 3, 5),  # channel blocks with a remainder
    ])
def test_matches_reference_odd_shapes(device, shape):
    n, c, h, w, k, g, s = shape
    features, masks = make_inputs(n, c, h, w, k, g, s, device=device)
    expected = grads(carafe_reference, features, masks, k, g, s)
    actual = grads(compiled, features, masks, k, g, s)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize('device', cpu_and_cuda())
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5),
                                       (torch.bfloat16, 2e-2),
                                       (torch.float16, 2e-3)])
def test_low_precision_within_tolerance(device, dtype, tol):
    k, g, s = 5, 2, 2
    features, masks = make_inputs(2, 8, 9, 11, k, g, s)
    go = torch.randn(2, 8, 18, 22, dtype=torch.float64)
    expected = grads(carafe_reference, features, masks, k, g, s, go)
    # The reference evaluated on the values rounded to dtype: what an exact
    # fp32-accumulating kernel should give before its output is rounded.
    rounded = [x.to(dtype).double() for x in (features, masks, go)]
    expected = grads(carafe_reference, *rounded[:2], k, g, s, rounded[2])
    actual = grads(compiled, features.to(device, dtype),
                   masks.to(device, dtype), k, g, s, go.to(device, dtype))
    for a, e in zip(actual, expected):
        assert a.dtype == dtype
        torch.testing.assert_close(a.double().cpu(), e, rtol=tol, atol=tol)


@pytest.mark.parametrize('device', cpu_and_cuda())
def test_non_contiguous_and_channels_last(device):
    check_other_layouts(compiled, device)


@pytest.mark.parametrize('device', cpu_and_cuda())
@pytest.mark.parametrize('seed', [0, 1, 2])
@pytest.mark.parametrize('k,g,s', [(3, 1, 2), (5, 2, 2), (1, 1, 3), (3, 3, 1)])
def test_gradcheck(device, seed, k, g, s):
    features, masks = make_inputs(
        1, 3 * g, 4, 3, k, g, s, device=device, seed=seed, normalise=False)
    assert torch.autograd.gradcheck(
        compiled, (features.requires_grad_(), masks.requires_grad_(), k, g, s))


def test_backward_is_deterministic_and_thread_count_independent():
    features, masks = make_inputs(2, 16, 23, 17, 5, 2, 2, torch.float32)
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (before, before, 1):
            torch.set_num_threads(threads)
            runs.append(grads(compiled, features, masks, 5, 2, 2))
    finally:
        torch.set_num_threads(before)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


@pytest.mark.needs_cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    features, masks = make_inputs(2, 32, 13, 17, 5, 4, 2, dtype)
    cpu = grads(compiled, features, masks, 5, 4, 2)
    cuda = grads(compiled, features.cuda(), masks.cuda(), 5, 4, 2)
    for a, b in zip(cuda, cpu):
        torch.testing.assert_close(a.cpu(), b)


# ---------------------------------------------------------------------------
# torch.library integration


@pytest.mark.parametrize('device', cpu_and_cuda())
def test_opcheck(device):
    features, masks = make_inputs(2, 4, 3, 5, 3, 2, 2, device=device)
    torch.library.opcheck(
        torch.ops.carafe_mm.carafe_forward,
        (features.requires_grad_(), masks.requires_grad_(), 3, 2, 2))
    go = torch.randn(2, 4, 6, 10, dtype=torch.float64, device=device)
    torch.library.opcheck(torch.ops.carafe_mm.carafe_backward,
                          (go, features.detach(), masks.detach(), 3, 2, 2))


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        features = torch.empty(2, 8, 5, 7)
        masks = torch.empty(2, 2 * 25, 15, 21)
        out = torch.ops.carafe_mm.carafe_forward(features, masks, 5, 2, 3)
        assert out.shape == (2, 8, 15, 21)
        with pytest.raises(ValueError, match='masks must have group_size'):
            torch.ops.carafe_mm.carafe_forward(features, masks, 5, 1, 3)


def test_torch_compile_fullgraph():
    torch._dynamo.reset()

    def upsample(features, logits):
        masks = F.softmax(logits, dim=1)
        return carafe(features, masks, 5, 1, 2) * 2

    features, logits = make_inputs(
        2, 4, 6, 7, 5, 1, 2, torch.float32, normalise=False)
    compiled_fn = torch.compile(upsample, fullgraph=True)
    f1, l1 = features.clone().requires_grad_(), logits.clone().requires_grad_()
    f2, l2 = features.clone().requires_grad_(), logits.clone().requires_grad_()
    expected = upsample(f1, l1)
    actual = compiled_fn(f2, l2)
    torch.testing.assert_close(actual, expected)
    expected.square().sum().backward()
    actual.square().sum().backward()
    torch.testing.assert_close(f2.grad, f1.grad)
    torch.testing.assert_close(l2.grad, l1.grad)


# ---------------------------------------------------------------------------
# errors


def test_backward_op_checks_grad_output():
    features, masks = make_inputs(2, 4, 3, 5, 3, 2, 2)
    with pytest.raises(
            ValueError,
            match=r'carafe: grad_output must have '
            r'the shape of the output \[2, 4, 6, 10\], but got '
            r'\[2, 4, 6, 9\]'):
        torch.ops.carafe_mm.carafe_backward(
            torch.zeros(2, 4, 6, 9, dtype=torch.float64), features, masks, 3,
            2, 2)
    with pytest.raises(
            TypeError,
            match='carafe: grad_output must have the '
            'same dtype as features'):
        torch.ops.carafe_mm.carafe_backward(
            torch.zeros(2, 4, 6, 10), features, masks, 3, 2, 2)


@pytest.mark.parametrize(
    'env',
    [
        dict(CARAFE_MM_CPU_ISA='default'),  # the baseline (non-AVX2) kernels
        dict(CARAFE_MM_CPU_CACHE_MB='0'),  # no reuse of freed output blocks
    ])
def test_cpu_kernel_variants_match_reference(env):
    code = '''
import torch
from carafe_mm.ops import carafe_reference
for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4),
                   (torch.bfloat16, 3e-2)):
    for n, c, h, w, k, g, s in ((2, 8, 9, 30, 5, 2, 2), (1, 3, 5, 4, 3, 1, 3),
                                (1, 64, 64, 128, 5, 1, 2)):
        f = torch.randn(n, c, h, w, dtype=torch.float64, requires_grad=True)
        m = torch.rand(n, g * k * k, s * h, s * w, dtype=torch.float64,
                       requires_grad=True)
        go = torch.randn(n, c, s * h, s * w, dtype=torch.float64)
        ref = carafe_reference(f, m, k, g, s)
        ref_grads = torch.autograd.grad(ref, (f, m), go)
        fl = f.detach().to(dtype)
        ml = m.detach().to(dtype)
        for _ in range(2):  # the second round reuses freed output blocks
            out = torch.ops.carafe_mm.carafe_forward(fl, ml, k, g, s)
            grads = torch.ops.carafe_mm.carafe_backward(go.to(dtype), fl, ml,
                                                        k, g, s)
            for a, b in zip((out, *grads), (ref, *ref_grads)):
                torch.testing.assert_close(a.double(), b.detach(), rtol=tol,
                                           atol=tol * b.abs().max().item())
print('ok')
'''
    result = run_python(code, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'
