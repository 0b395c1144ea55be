"""tools/benchmark_op.py and tools/benchmark_model.py: the helpers they
share (tools/benchmark_utils.py) and their device check."""
import argparse
import importlib.util
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch

from .utils import REPO, run_python

TOOLS = osp.join(REPO, 'tools')


def load_benchmark_utils():
    spec = importlib.util.spec_from_file_location(
        'benchmark_utils', osp.join(TOOLS, 'benchmark_utils.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_median_time_is_seconds_per_call():
    median_time = load_benchmark_utils().median_time
    # blocked_autorange may time blocks of several calls; the result is
    # still one call's time
    seconds = median_time(lambda: time.sleep(0.02), 3)
    assert 0.02 <= seconds < 0.1


def test_cpu_peak_memory_of_one_call():
    code = f'''
import sys
import torch
sys.path.insert(0, {TOOLS!r})
from benchmark_utils import cpu_peak_mb
kept = []
print(cpu_peak_mb(lambda: kept.append(torch.ones(32 * 2**20))))  # 128 MiB
'''
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert 120 < float(result.stdout.split()[-1]) < 200


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU case')
@pytest.mark.parametrize('tool', ['benchmark_op.py', 'benchmark_model.py'])
def test_cuda_without_cuda_is_a_clear_error(tool):
    result = subprocess.run(
        [sys.executable,
         osp.join(TOOLS, tool), '--devices', 'cuda'],
        capture_output=True,
        text=True,
        timeout=300)
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert f'{tool}: error: --devices cuda: ' in result.stderr
    assert (f'torch {torch.__version__} is built without CUDA' in result.stderr
            or 'no CUDA device is visible' in result.stderr)


def test_devices_are_cpu_or_cuda():
    parser = argparse.ArgumentParser()
    load_benchmark_utils().add_devices_argument(parser)
    assert parser.parse_args(['--devices', 'cpu']).devices == ['cpu']
    assert parser.parse_args([]).devices is None
    with pytest.raises(SystemExit):
        parser.parse_args(['--devices', 'gpu'])
