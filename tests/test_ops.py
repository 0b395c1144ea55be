"""The CARAFE op: compiled kernels vs the reference vs hand-computed cases.

Shape letters: N batch, C channels, G groups, H×W input, s scale, k kernel.
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

import carafe_mm.ops as ops
from carafe_mm.ops import carafe, carafe_reference
from .utils import cpu_and_cuda, make_inputs, run_python

pytestmark = pytest.mark.skipif(
    not ops.extension_available(),
    reason=f'carafe_mm._C did not load: {ops.extension_error()}')


def carafe_loops(features, masks, k, g, s):
    """CARAFE straight from the paper's formula, one output value at a
    time; an oracle independent of unfold/einsum."""
    n, c, h, w = features.shape
    r = k // 2
    out = torch.zeros(n, c, s * h, s * w, dtype=features.dtype)
    for b, ch, oy, ox in itertools.product(
            range(n), range(c), range(s * h), range(s * w)):
        grp = ch // (c // g)
        acc = 0.0
        for ky, kx in itertools.product(range(k), range(k)):
            iy, ix = oy // s + ky - r, ox // s + kx - r
            if 0 <= iy < h and 0 <= ix < w:
                acc += (
                    masks[b, grp * k * k + ky * k + kx, oy, ox] *
                    features[b, ch, iy, ix])
        out[b, ch, oy, ox] = acc
    return out


def compiled(features, masks, k, g, s):
    return torch.ops.carafe_mm.carafe_forward(features, masks, k, g, s)


def grads(fn, features, masks, k, g, s, grad_output=None):
    features = features.detach().requires_grad_()
    masks = masks.detach().requires_grad_()
    out = fn(features, masks, k, g, s)
    if grad_output is None:
        grad_output = torch.randn(
            out.shape,
            generator=torch.Generator().manual_seed(1),
            dtype=torch.float64).to(out)
    out.backward(grad_output)
    return out, features.grad, masks.grad


# ---------------------------------------------------------------------------
# hand-computed cases


@pytest.mark.parametrize('k,g,s', [(1, 1, 2), (3, 2, 2), (5, 1, 3), (3, 3, 1)])
def test_reference_matches_formula(k, g, s):
    features, masks = make_inputs(2, 6, 3, 4, k, g, s, normalise=False)
    expected = carafe_loops(features, masks, k, g, s)
    torch.testing.assert_close(
        carafe_reference(features, masks, k, g, s), expected)
    torch.testing.assert_close(compiled(features, masks, k, g, s), expected)


@pytest.mark.parametrize('device', cpu_and_cuda())
@pytest.mark.parametrize('s', [1, 2, 3, 4])
def test_k1_ones_is_nearest_upsampling(device, s):
    features, _ = make_inputs(2, 5, 7, 6, 1, 1, s, torch.float32, device)
    masks = torch.ones(2, 1, s * 7, s * 6, device=device)
    expected = F.interpolate(features, scale_factor=s, mode='nearest')
    torch.testing.assert_close(
        carafe(features, masks, 1, 1, s), expected, rtol=0, atol=0)


@pytest.mark.parametrize('device', cpu_and_cuda())
@pytest.mark.parametrize('ky,kx', [(1, 1), (0, 0), (0, 2), (2, 1)])
def test_one_hot_tap_is_shifted_nearest(device, ky, kx):
    """A one-hot kernel at tap (ky, kx) copies input pixel
    (oy // s + ky - 1, ox // s + kx - 1), zero outside."""
    k, s, h, w = 3, 2, 5, 6
    features, _ = make_inputs(1, 4, h, w, k, 1, s, torch.float32, device)
    masks = torch.zeros(1, k * k, s * h, s * w, device=device)
    masks[:, ky * k + kx] = 1
    padded = F.pad(features, (1, 1, 1, 1))
    shifted = padded[..., ky:ky + h, kx:kx + w]
    expected = F.interpolate(shifted, scale_factor=s, mode='nearest')
    torch.testing.assert_close(
        carafe(features, masks, k, 1, s), expected, rtol=0, atol=0)


@pytest.mark.parametrize('device', cpu_and_cuda())
@pytest.mark.parametrize('k,s', [(3, 2), (5, 2), (7, 3)])
def test_uniform_masks_are_a_box_filter(device, k, s):
    features, _ = make_inputs(2, 3, 9, 8, k, 1, s, torch.float64, device)
    masks = torch.full((2, k * k, s * 9, s * 8),
                       1.0 / (k * k),
                       dtype=torch.float64,
                       device=device)
    box = F.avg_pool2d(
        features, k, stride=1, padding=k // 2, count_include_pad=True)
    expected = F.interpolate(box, scale_factor=s, mode='nearest')
    torch.testing.assert_close(carafe(features, masks, k, 1, s), expected)


def test_groups_use_their_own_kernels():
    """Channel c uses the kernels of group c // (C / G): give group 1
    one-hot centre kernels and group 0 zeros."""
    k, g, s = 3, 2, 2
    features, _ = make_inputs(1, 4, 3, 3, k, g, s)
    masks = torch.zeros(1, g * k * k, 6, 6, dtype=torch.float64)
    masks[:, k * k + 4] = 1  # group 1, centre tap
    out = carafe(features, masks, k, g, s)
    torch.testing.assert_close(out[:, :2], torch.zeros_like(out[:, :2]))
    torch.testing.assert_close(out[:, 2:],
                               F.interpolate(features[:, 2:], scale_factor=2))


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
    k, g, s = 3, 2, 2
    features, masks = make_inputs(2, 4, 6, 5, k, g, s, device=device)
    expected = grads(carafe_reference, features, masks, k, g, s)
    # The same values in other layouts: a transposed view, a strided slice
    # and channels_last.
    f_t = features.transpose(2, 3).contiguous().transpose(2, 3)
    m_wide = torch.zeros(
        2, 2 * masks.shape[1], 12, 10, dtype=masks.dtype, device=device)
    m_wide[:, ::2] = masks
    m_slice = m_wide[:, ::2]
    assert not f_t.is_contiguous() and not m_slice.is_contiguous()
    f_cl = features.contiguous(memory_format=torch.channels_last)
    m_cl = masks.contiguous(memory_format=torch.channels_last)
    go = torch.randn(
        2,
        4,
        12,
        10,
        generator=torch.Generator().manual_seed(1),
        dtype=torch.float64).to(device)
    go_t = go.transpose(0, 1).contiguous().transpose(0, 1)
    for f, m in [(f_t, m_slice), (f_cl, m_cl)]:
        actual = grads(compiled, f, m, k, g, s, go_t)
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e)


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


@pytest.mark.parametrize('device', cpu_and_cuda())
@pytest.mark.parametrize('shape', [(0, 4, 5, 6), (2, 0, 5, 6), (2, 4, 0, 6)])
def test_empty_inputs(device, shape):
    """The empty batch (a mask head with no RoIs), no channels, no rows."""
    n, c, h, w = shape
    k, g, s = 3, 1, 2
    features = torch.randn(shape, device=device, requires_grad=True)
    masks = torch.randn(
        n, k * k, s * h, s * w, device=device, requires_grad=True)
    for fn in (carafe, carafe_reference):
        out = fn(features, masks, k, g, s)
        assert out.shape == (n, c, s * h, s * w)
        out.sum().backward()
        assert features.grad.shape == features.shape
        assert masks.grad.shape == masks.shape
        assert not features.grad.any() and not masks.grad.any()
        features.grad = masks.grad = None


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

GOOD = dict(n=2, c=4, h=3, w=5, k=3, g=2, s=2)


def call_with(fn, **change):
    p = {**GOOD, **change}
    features = p['features'] if 'features' in p else torch.zeros(
        p['n'], p['c'], p['h'], p['w'])
    masks = p['masks'] if 'masks' in p else torch.zeros(
        p['n'], p['g'] * p['k']**2, p['s'] * p['h'], p['s'] * p['w'])
    return fn(features, masks, p['k'], p['g'], p['s'])


ERROR_CASES = [
    (dict(features=torch.zeros(4, 3, 5)), ValueError,
     r'features must be a 4-D tensor \(N, C, H, W\), but got a 3-D'),
    (dict(masks=torch.zeros(2, 18, 6)), ValueError,
     r'masks must be a 4-D tensor'),
    (dict(masks=torch.zeros(2, 17, 6, 10)), ValueError,
     r'masks must have group_size \* kernel_size\*\*2 = 18 channels, '
     r'but got 17'),
    (dict(masks=torch.zeros(2, 18, 6, 11)), ValueError,
     r'masks must be scale_factor \(2\) times the spatial size of features, '
     r'\(6, 10\), but got \(6, 11\)'),
    (dict(masks=torch.zeros(3, 18, 6, 10)), ValueError,
     r'masks must have the same batch size as features \(2\), but got 3'),
    (dict(k=4, masks=torch.zeros(2, 32, 6, 10)), ValueError,
     r'kernel_size must be a positive odd integer, but got 4'),
    (dict(k=-1, masks=torch.zeros(2, 2, 6, 10)), ValueError,
     r'kernel_size must be a positive odd integer, but got -1'),
    (dict(g=3, masks=torch.zeros(2, 27, 6, 10)), ValueError,
     r'the channels of features \(C = 4\) must be divisible by group_size '
     r'\(3\)'),
    (dict(g=0, masks=torch.zeros(2, 1, 6, 10)), ValueError,
     r'group_size must be a positive integer, but got 0'),
    (dict(s=0, masks=torch.zeros(2, 18, 0, 0)), ValueError,
     r'scale_factor must be a positive integer, but got 0'),
    (dict(masks=torch.zeros(2, 18, 6, 10, dtype=torch.float64)), TypeError,
     r'masks must have the same dtype as features \(.*[Ff]loat.*\), '
     r'but got .*[Dd]ouble|float64'),
    (dict(
        features=torch.zeros(2, 4, 3, 5, dtype=torch.int64),
        masks=torch.zeros(2, 18, 6, 10, dtype=torch.int64)), TypeError,
     r'features must be float32, float64, float16 or bfloat16'),
    (dict(masks=torch.zeros(2, 18, 6, 10, device='meta')), ValueError,
     r'masks must be on the same device as features \(cpu\), but got meta'),
]


@pytest.mark.parametrize('change,error,match', ERROR_CASES)
@pytest.mark.parametrize(
    'fn', [compiled, carafe, carafe_reference],
    ids=['compiled', 'carafe', 'reference'])
def test_bad_arguments_raise_clear_errors(fn, change, error, match):
    with pytest.raises(error, match='carafe: ' + match):
        call_with(fn, **change)


@pytest.mark.parametrize(
    'fn', [carafe, carafe_reference], ids=['carafe', 'reference'])
def test_non_integer_arguments(fn):
    with pytest.raises(
            TypeError,
            match='carafe: kernel_size must be an '
            'integer, but got float 3.0'):
        call_with(fn, k=3.0, masks=torch.zeros(2, 18, 6, 10))
    with pytest.raises(
            TypeError,
            match='carafe: features must be a '
            'torch.Tensor, but got list'):
        fn([1.0], torch.zeros(1, 1, 1, 1), 1, 1, 1)


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


# ---------------------------------------------------------------------------
# backends


def test_set_backend():
    features, masks = make_inputs(1, 2, 3, 3, 3, 1, 2)
    assert ops.get_backend() == 'auto'
    try:
        ops.set_backend('reference')
        assert ops.get_backend() == 'reference'
        # The compiled op is recognisable by its autograd node (in eager
        # mode carafe() runs it through carafe_mm's CarafeFunction).
        out = carafe(features.requires_grad_(), masks, 3, 1, 2)
        assert 'Carafe' not in out.grad_fn.name()
        ops.set_backend('compiled')
        out = carafe(features, masks, 3, 1, 2)
        assert out.grad_fn.name() == 'CarafeFunctionBackward'
        with pytest.raises(ValueError, match="the backend must be one of"):
            ops.set_backend('fast')
    finally:
        ops.set_backend('auto')


def test_backend_environment_variable():
    code = ('import carafe_mm.ops as o; print(o.get_backend())')
    assert run_python(code, CARAFE_MM_BACKEND='reference').stdout.strip() \
        == 'reference'
    bad = run_python(code, CARAFE_MM_BACKEND='fastest')
    assert bad.returncode != 0
    assert 'CARAFE_MM_BACKEND must be one of' in bad.stderr


def test_fallback_without_extension_warns_once():
    # Make `import carafe_mm._C` fail as it does where the extension was
    # never built.
    code = '''
import sys, warnings
sys.modules['carafe_mm._C'] = None
import torch
import carafe_mm.ops as o
assert not o.extension_available()
f, m = torch.randn(1, 2, 3, 3), torch.rand(1, 9, 6, 6)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    a = o.carafe(f, m, 3, 1, 2)
    b = o.carafe(f, m, 3, 1, 2)
messages = [str(w.message) for w in caught if 'carafe_mm' in str(w.message)]
assert len(messages) == 1, messages
assert 'falling back' in messages[0], messages
assert torch.equal(a, o.carafe_reference(f, m, 3, 1, 2))
o.set_backend('compiled')
try:
    o.carafe(f, m, 3, 1, 2)
except RuntimeError as e:
    assert 'failed to load' in str(e), e
else:
    raise AssertionError('compiled backend without extension did not raise')
print('ok')
'''
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ok'


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
