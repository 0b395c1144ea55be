"""The pure-PyTorch reference and what carafe() does with any backend:
hand-computed cases, errors, the choice of backend, the fallback and
autocast. Runs without carafe_mm._C (test_runs_without_the_extension proves
it); tests of the compiled op itself are in test_ops.py.

Shape letters: N batch, C channels, G groups, H×W input, s scale, k kernel.
"""
import importlib
import itertools
import os
import re
import warnings
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.nn.functional as F

import carafe_mm.ops as ops
from carafe_mm.ops import carafe, carafe_reference
from .utils import (compiled, cpu_and_cuda, make_inputs, needs_extension,
                    run_python)

CARAFE_MODULE = importlib.import_module('carafe_mm.ops.carafe')


@pytest.fixture
def restore_backend():
    """Put carafe()'s backend back as the test found it."""
    before = ops.get_backend()
    yield
    ops.set_backend(before)


@pytest.fixture(params=['auto', 'reference'])
def backend(request, restore_backend):
    """carafe() on the backend that 'auto' picks here (the compiled op where
    it loaded, else the fallback) and on the reference."""
    ops.set_backend(request.param)
    return request.param


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


FUNCTIONS = [
    carafe_reference, carafe,
    pytest.param(compiled, marks=needs_extension)
]
FUNCTION_IDS = ['reference', 'carafe', 'compiled']

# ---------------------------------------------------------------------------
# hand-computed cases


@pytest.mark.parametrize('fn', FUNCTIONS, ids=FUNCTION_IDS)
@pytest.mark.parametrize('k,g,s', [(1, 1, 2), (3, 2, 2), (5, 1, 3), (3, 3, 1)])
def test_matches_formula(fn, k, g, s):
    features, masks = make_inputs(2, 6, 3, 4, k, g, s, normalise=False)
    expected = carafe_loops(features, masks, k, g, s)
    torch.testing.assert_close(fn(features, masks, k, g, s), expected)


@pytest.mark.parametrize('device', cpu_and_cuda())
@pytest.mark.parametrize('s', [1, 2, 3, 4])
def test_k1_ones_is_nearest_upsampling(backend, device, s):
    features, _ = make_inputs(2, 5, 7, 6, 1, 1, s, torch.float32, device)
    masks = torch.ones(2, 1, s * 7, s * 6, device=device)
    expected = F.interpolate(features, scale_factor=s, mode='nearest')
    torch.testing.assert_close(
        carafe(features, masks, 1, 1, s), expected, rtol=0, atol=0)


@pytest.mark.parametrize('device', cpu_and_cuda())
@pytest.mark.parametrize('ky,kx', [(1, 1), (0, 0), (0, 2), (2, 1)])
def test_one_hot_tap_is_shifted_nearest(backend, device, ky, kx):
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
def test_uniform_masks_are_a_box_filter(backend, device, k, s):
    features, _ = make_inputs(2, 3, 9, 8, k, 1, s, torch.float64, device)
    masks = torch.full((2, k * k, s * 9, s * 8),
                       1.0 / (k * k),
                       dtype=torch.float64,
                       device=device)
    box = F.avg_pool2d(
        features, k, stride=1, padding=k // 2, count_include_pad=True)
    expected = F.interpolate(box, scale_factor=s, mode='nearest')
    torch.testing.assert_close(carafe(features, masks, k, 1, s), expected)


def test_groups_use_their_own_kernels(backend):
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


# ---------------------------------------------------------------------------
# autocast


@pytest.mark.parametrize('features_dtype', [torch.float32, torch.bfloat16])
def test_autocast_bfloat16_on_cpu(backend, features_dtype):
    """Under torch.autocast('cpu', bfloat16) the op runs in bfloat16 (also
    with bfloat16 features and float32 masks from a softmax); gradients
    reach the inputs in their own dtype."""
    k, g, s = 5, 2, 2
    features, masks = make_inputs(2, 8, 9, 11, k, g, s)
    rounded = [x.to(torch.bfloat16).double() for x in (features, masks)]
    expected = carafe_reference(*rounded, k, g, s)
    features = features.to(features_dtype).requires_grad_()
    masks = masks.float().requires_grad_()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = carafe(features, masks, k, g, s)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)
    out.sum().backward()
    assert features.grad.dtype == features_dtype
    assert masks.grad.dtype == torch.float32


def test_autocast_leaves_float64_alone(backend):
    """torch.autocast never casts float64; nor does carafe()."""
    features, masks = make_inputs(2, 4, 5, 6, 3, 2, 2)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = carafe(features, masks, 3, 2, 2)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, carafe_reference(features, masks, 3, 2, 2))
    # float64 features and float32 masks stay as they are: the usual error
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with pytest.raises(TypeError, match='masks must have the same dtype'):
            carafe(features, masks.float(), 3, 2, 2)


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
@pytest.mark.parametrize('fn', FUNCTIONS, ids=FUNCTION_IDS)
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


# ---------------------------------------------------------------------------
# backends


def test_set_backend(restore_backend):
    features, masks = make_inputs(1, 2, 3, 3, 3, 1, 2)
    ops.set_backend('reference')
    assert ops.get_backend() == 'reference'
    # The compiled op is recognisable by its autograd node (in eager mode
    # carafe() runs it through carafe_mm's CarafeFunction).
    out = carafe(features.requires_grad_(), masks, 3, 1, 2)
    assert 'Carafe' not in out.grad_fn.name()
    with pytest.raises(ValueError, match='the backend must be one of'):
        ops.set_backend('fast')


@needs_extension
def test_compiled_backend(restore_backend):
    features, masks = make_inputs(1, 2, 3, 3, 3, 1, 2)
    ops.set_backend('compiled')
    out = carafe(features.requires_grad_(), masks, 3, 1, 2)
    assert out.grad_fn.name() == 'CarafeFunctionBackward'


@pytest.mark.skipif(
    ops.extension_available(),
    reason='checks a build without carafe_mm._C (see '
    'test_runs_without_the_extension)')
def test_compiled_backend_without_the_extension_is_an_error(restore_backend):
    features, masks = make_inputs(1, 2, 3, 3, 3, 1, 2)
    ops.set_backend('compiled')
    with pytest.raises(RuntimeError, match='carafe_mm._C failed to load'):
        carafe(features, masks, 3, 1, 2)


def test_auto_backend_falls_back_with_one_warning(restore_backend,
                                                  monkeypatch):
    """'auto' runs the compiled op where carafe_mm._C loaded; without it,
    the reference, with a warning the first time only."""
    monkeypatch.setattr(CARAFE_MODULE, '_warned_fallback', set())
    ops.set_backend('auto')
    features, masks = make_inputs(1, 2, 3, 3, 3, 1, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        first = carafe(features.requires_grad_(), masks, 3, 1, 2)
        second = carafe(features, masks, 3, 1, 2)
    messages = [
        str(w.message) for w in caught if 'carafe_mm' in str(w.message)
    ]
    torch.testing.assert_close(first, carafe_reference(features, masks, 3, 1,
                                                       2))
    torch.testing.assert_close(second, first)
    if ops.extension_available():
        assert messages == []
        assert first.grad_fn.name() == 'CarafeFunctionBackward'
    else:
        assert len(messages) == 1, messages
        assert 'carafe_mm._C failed to load' in messages[0]
        assert 'falling back' in messages[0]
        assert 'Carafe' not in first.grad_fn.name()


def test_backend_environment_variable(monkeypatch):
    code = 'import carafe_mm.ops as o; print(o.get_backend())'
    monkeypatch.delenv('CARAFE_MM_BACKEND', raising=False)
    assert run_python(code).stdout.strip() == 'auto'
    monkeypatch.setenv('CARAFE_MM_BACKEND', 'reference')
    assert run_python(code).stdout.strip() == 'reference'
    monkeypatch.setenv('CARAFE_MM_BACKEND', 'fastest')
    bad = run_python(code)
    assert bad.returncode != 0
    assert 'CARAFE_MM_BACKEND must be one of' in bad.stderr


BLOCKER = '''
"""A pytest plugin that makes `import carafe_mm._C` fail, as it does where
the extension was never built."""
import sys

blocked = []


class BlockExtension:

    def find_spec(self, name, path=None, target=None):
        if name == 'carafe_mm._C':
            blocked.append(name)
            raise ImportError('carafe_mm._C is blocked for this test run')
        return None


sys.meta_path.insert(0, BlockExtension())


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f'blocked imports: {len(blocked)}')
'''


def test_runs_without_the_extension(tmp_path, monkeypatch):
    """This module, run by pytest in a fresh process where carafe_mm._C
    cannot load: every test passes, on the fallback."""
    (tmp_path / 'block_carafe_extension.py').write_text(BLOCKER)
    monkeypatch.setenv(
        'PYTHONPATH',
        os.pathsep.join(
            filter(None,
                   [str(tmp_path), os.environ.get('PYTHONPATH')])))
    monkeypatch.delenv('CARAFE_MM_BACKEND', raising=False)
    report = tmp_path / 'report.xml'
    result = run_python(
        'import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))', '-p',
        'block_carafe_extension', '-q', '-m', 'not needs_cuda', '-k',
        'not test_runs_without_the_extension', f'--junitxml={report}',
        'tests/test_reference.py')
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    blocked = re.search(r'blocked imports: (\d+)', result.stdout)
    assert blocked and int(blocked.group(1)) > 0, result.stdout[-4000:]
    outcomes = {}
    for case in ET.parse(report).iter('testcase'):
        outcome = [
            child.tag for child in case
            if child.tag in ('failure', 'error', 'skipped')
        ]
        outcomes[case.get('name')] = outcome[0] if outcome else 'passed'
    for name in ('test_compiled_backend_without_the_extension_is_an_error',
                 'test_auto_backend_falls_back_with_one_warning'):
        assert outcomes[name] == 'passed', name
    skipped = {
        name
        for name, outcome in outcomes.items() if outcome != 'passed'
    }
    assert all('compiled' in name for name in skipped), skipped
