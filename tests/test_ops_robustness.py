"""The op on hostile arguments: no crash, a correct result or a clear error;
the CPU output cache's settings; small calls stay on the calling thread.

Shape letters: N batch, C channels, G groups, H×W input, s scale, k kernel.
"""
import json
import textwrap
import warnings

import numpy as np
import pytest
import torch

import carafe_mm.ops as ops
from carafe_mm.ops import carafe, carafe_reference
from .utils import make_inputs, run_python

pytestmark = pytest.mark.skipif(
    not ops.extension_available(),
    reason=f'carafe_mm._C did not load: {ops.extension_error()}')

FORWARD = torch.ops.carafe_mm.carafe_forward
BACKWARD = torch.ops.carafe_mm.carafe_backward


def run_isolated(code, **env):
    """Run ``code`` in a fresh interpreter (a crash fails the test, with its
    signal, instead of killing pytest); return its stdout."""
    result = run_python(textwrap.dedent(code), **env)
    assert result.returncode == 0, (
        f'exit code {result.returncode} (negative: killed by that signal)\n'
        f'{result.stdout[-3000:]}\n{result.stderr[-3000:]}')
    return result.stdout


# The reproductions reported against earlier versions: each one crashed.
REPORTED_CRASHES = '''
import torch
import carafe_mm.ops
from carafe_mm.ops import carafe
op = torch.ops.carafe_mm
cases = [
    lambda: carafe(torch.randn(1, 1, 4, 4), torch.ones(1, 1, 4, 4), 1, 1,
                   2**62 + 1),
    lambda: op.carafe_backward(torch.ones(1, 1, 4, 4), torch.randn(1, 1, 4, 4),
                               torch.ones(1, 1, 4, 4), 1, 1, 2**62 + 1),
    lambda: carafe(torch.randn(8, 1, 2, 2), torch.ones(8, 1, 2, 2),
                   2**63 - 1, 1, 1),
    lambda: carafe(torch.randn(1, 1, 2, 2), torch.ones(1, 1, 2, 2),
                   2**63 - 1, 1, 1),
    lambda: op.carafe_forward(torch.randn(1, 4, 0, 4),
                              torch.ones(1, 1, 0, 8), 1, 1, 2**61),
]
for case in cases:
    try:
        case()
    except ValueError as e:
        print(str(e).splitlines()[0])
    else:
        print('no error')
'''


def test_reported_crashes_raise_value_errors():
    lines = run_isolated(REPORTED_CRASHES).strip().splitlines()
    assert len(lines) == 5, lines
    for line in lines[:2]:
        assert line == ('carafe: scale_factor (4611686018427387905) times the '
                        'spatial size of features (4, 4) must be at most '
                        '2**63 - 1')
    for line in lines[2:4]:
        assert line.startswith('carafe: group_size * kernel_size**2 must be '
                               'at most 2**63 - 1')
    assert 'must be at most 2**63 - 1' in lines[4]


@pytest.mark.parametrize('fn', [carafe, carafe_reference, FORWARD])
@pytest.mark.parametrize(
    'value, error, message',
    [(True, TypeError, 'kernel_size must be an integer, but got True'),
     (2.5, TypeError, 'kernel_size must be an integer, but got float 2.5'),
     (2**63, ValueError, r'kernel_size must be at most 2\*\*63 - 1'),
     (-1, ValueError, 'kernel_size must be a positive odd integer')])
def test_bad_integer_arguments(fn, value, error, message):
    features, masks = make_inputs(1, 2, 3, 3, 1, 1, 1)
    with pytest.raises(error, match=message):
        fn(features, masks, value, 1, 1)


def test_raw_op_refuses_numpy_floats_instead_of_truncating():
    features, masks = make_inputs(1, 2, 3, 3, 3, 1, 2)
    with pytest.raises(RuntimeError, match="argument 'scale_factor'"):
        FORWARD(features, masks, 3, 1, np.float32(2.5))
    with pytest.raises(TypeError, match='scale_factor must be an integer'):
        carafe(features, masks, 3, 1, np.float32(2.5))
    # carafe() takes numpy integers.
    torch.testing.assert_close(
        carafe(features, masks, np.int64(3), 1, np.int32(2)),
        carafe_reference(features, masks, 3, 1, 2))


def test_backward_op_refuses_bool():
    features, masks = make_inputs(1, 2, 3, 3, 3, 1, 2)
    grad = torch.zeros(1, 2, 6, 6, dtype=features.dtype)
    with pytest.raises(
            TypeError, match='group_size must be an integer, but '
            'got True'):
        BACKWARD(grad, features, masks, 3, True, 2)


def test_meta_tensors_use_the_fake_kernel_without_warning():
    features = torch.empty(2, 4, 5, 6, device='meta')
    masks = torch.empty(2, 2 * 9, 10, 12, device='meta')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = carafe(features, masks, 3, 2, 2)
    assert out.shape == (2, 4, 10, 12) and out.device.type == 'meta'


# A seeded fuzz of a few hundred calls, valid and not, in a subprocess: each
# must match the reference or raise ValueError / TypeError.
FUZZ = '''
import json, random, sys
import numpy as np
import torch
import carafe_mm.ops
from carafe_mm.ops import carafe, carafe_reference
op = torch.ops.carafe_mm
rng = random.Random(int(sys.argv[1]))
HUGE = [0, -1, -2**63, 2**31, 2**32 + 1, 2**62 + 1, 2**63 - 1, 2**63]
ODD = [True, False, 2.5, 3.0, np.float32(2.5), np.int64(3), None, '3']
def pick(valid):
    r = rng.random()
    return (valid if r < 0.8 else rng.choice(HUGE) if r < 0.9
            else rng.choice(ODD))
counts = dict(ok=0, refused=0)
for case in range(int(sys.argv[2])):
    k, g, s = rng.choice([1, 3, 5]), rng.choice([1, 2]), rng.choice([1, 2, 3])
    n, c, h, w = (rng.choice([0, 1, 2]), g * rng.choice([1, 2]),
                  rng.choice([0, 1, 3]), rng.choice([1, 4]))
    features = torch.randn(n, c, h, w, dtype=torch.float64)
    mh, mw = s * h + rng.choice([0, 0, 0, 1]), s * w
    masks = torch.rand(n, g * k * k + rng.choice([0, 0, 0, -1]), mh, mw,
                       dtype=torch.float64)
    args = (pick(k), pick(g), pick(s))
    fn = rng.choice(['carafe', 'forward', 'backward', 'reference'])
    try:
        if fn == 'carafe':
            out = carafe(features, masks, *args)
        elif fn == 'reference':
            out = carafe_reference(features, masks, *args)
        elif fn == 'forward':
            out = op.carafe_forward(features, masks, *args)
        else:
            grad = torch.randn(n, c, s * h, s * w, dtype=torch.float64)
            out = op.carafe_backward(grad, features, masks, *args)[0]
    except (ValueError, TypeError) as e:
        assert str(e).startswith('carafe'), (fn, args, e)
        counts['refused'] += 1
        continue
    except RuntimeError as e:  # torch's parser: a numpy scalar, None, a str
        assert fn in ('forward', 'backward') and 'Expected a value' in str(
            e), (fn, args, e)
        counts['refused'] += 1
        continue
    assert (k, g, s) == tuple(int(a) for a in args), (fn, args)
    if fn != 'backward':
        expected = carafe_reference(features, masks, k, g, s)
        torch.testing.assert_close(out, expected)
    counts['ok'] += 1
print(json.dumps(counts))
'''


@pytest.mark.parametrize('seed', [0, 1])
def test_fuzz(seed):
    code = FUZZ.replace('int(sys.argv[1])',
                        str(seed)).replace('int(sys.argv[2])', '300')
    counts = json.loads(run_isolated(code).strip().splitlines()[-1])
    # Both outcomes are exercised.
    assert counts["ok"] > 50 and counts["refused"] > 50, counts


# ---------------------------------------------------------------------------
# The CPU output cache

CACHE = '''
import torch
import carafe_mm.ops as ops
try:
    torch.ops.carafe_mm.carafe_forward(torch.randn(1, 1, 2, 2),
                                       torch.ones(1, 1, 2, 2), 1, 1, 1)
except ValueError as e:
    print(e)
else:
    print('ok', ops.cpu_cache_info()['limit_bytes'])
'''


@pytest.mark.parametrize('value', ['abc', '-1', '1e9', '', '2097152', ' 5'])
def test_cache_setting_is_validated(value):
    out = run_isolated(CACHE, CARAFE_MM_CPU_CACHE_MB=value).strip()
    assert out == ('carafe: CARAFE_MM_CPU_CACHE_MB must be a whole number of '
                   f"MiB from 0 (no cache) to 1048576, but got '{value}'")


@pytest.mark.parametrize('value, limit', [('0', 0), ('64', 64 << 20),
                                          (None, 256 << 20)])
def test_cache_setting_is_taken(value, limit):
    env = {} if value is None else dict(CARAFE_MM_CPU_CACHE_MB=value)
    assert run_isolated(CACHE, **env).strip() == f'ok {limit}'


def test_cache_is_bounded_and_emptied():
    code = '''
    import json
    import torch
    import carafe_mm.ops as ops
    masks = torch.ones(1, 1, 128, 256)
    for i in range(1, 41):  # 40 output sizes: 2, 4, ... 80 MiB
        out = ops.carafe(torch.randn(1, 16 * i, 64, 128), masks, 1, 1, 2)
        del out
    full = ops.cpu_cache_info()
    ops.empty_cache()
    print(json.dumps([full, ops.cpu_cache_info()]))
    '''
    full, empty = json.loads(
        run_isolated(code, CARAFE_MM_CPU_CACHE_MB='16').strip())
    assert full['limit_bytes'] == 16 << 20
    assert 0 < full['cached_bytes'] <= 16 << 20
    assert empty == dict(cached_bytes=0, limit_bytes=16 << 20)


def test_cached_output_is_reused_and_correct():
    features, masks = make_inputs(2, 64, 40, 40, 3, 1, 2, torch.float32)
    first = carafe(features, masks, 3, 1, 2)  # 1.6 MiB: not cached
    expected = first.clone()
    del first
    big_features = features.repeat(1, 4, 1, 1)
    out = carafe(big_features, masks, 3, 1, 2)  # 6.6 MiB: cached when freed
    del out
    assert ops.cpu_cache_info()['cached_bytes'] > 0
    again = carafe(big_features, masks, 3, 1, 2)
    torch.testing.assert_close(again[:, :64], expected)
    ops.empty_cache()


THREADS = '''
import torch
import carafe_mm.ops as ops

def threads():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) for line in f
                    if line.startswith('Threads:'))

torch.set_num_threads(2)
features, masks = torch.randn(2, 8, 6, 6), torch.rand(2, 25, 12, 12)
before = threads()
for _ in range(50):
    out = ops.carafe(features.requires_grad_(), masks, 5, 1, 2)
    out.sum().backward()
small = threads()
features, masks = torch.randn(2, 64, 64, 64), torch.rand(2, 25, 128, 128)
ops.carafe(features, masks, 5, 1, 2)
print(before, small, threads())
'''


@pytest.mark.skipif(
    torch.get_num_threads() < 2
    or 'OpenMP' not in torch.__config__.parallel_info(),
    reason='needs two OpenMP threads')
def test_small_calls_do_not_start_the_thread_pool():
    # OpenMP starts its worker threads at the first parallel region.
    before, small, large = map(int, run_isolated(THREADS).split())
    assert small == before
    assert large > before


@pytest.mark.parametrize('fn', [carafe, carafe_reference])
def test_huge_negative_integer_arguments(fn):
    features, masks = make_inputs(1, 2, 3, 3, 1, 1, 1)
    with pytest.raises(
            ValueError,
            match=r'scale_factor must be a positive integer, but got '
            r'-1180591620717411303424'):
        fn(features, masks, 1, 1, -2**70)
