import pytest
import torch


def pytest_configure(config):
    # mmengine logs every parameter's initialisation at INFO level; that
    # output is large and slow to capture.
    import logging

    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    config.addinivalue_line(
        'markers', 'needs_cuda: the test needs a CUDA device; skipped, and '
        'reported as skipped, where there is none')
    config.addinivalue_line(
        'markers', 'slow: an end-to-end run of the tools in subprocesses '
        '(training, testing); `pytest -m "not slow"` leaves them out')


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA device, none is available')
    for item in items:
        if 'needs_cuda' in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_rng():
    """Each test starts from, and leaves behind, the random state it found
    (torch on the CPU and CUDA, numpy, random), so that a test that seeds
    or draws cannot change what another one draws."""
    import random

    import numpy as np
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def _make_toy(tmp_path_factory, tool):
    """A tiny toy dataset written by tools/data/<tool>.py."""
    import subprocess
    import sys

    from .utils import REPO
    out = tmp_path_factory.mktemp(tool)
    subprocess.run([
        sys.executable, f'tools/data/{tool}.py', '--out',
        str(out), '--train', '8', '--val', '4', '--size', '96'
    ],
                   cwd=REPO,
                   check=True,
                   capture_output=True,
                   timeout=120)
    return str(out)


@pytest.fixture(scope='session')
def toy_coco(tmp_path_factory):
    return _make_toy(tmp_path_factory, 'make_toy_coco')


@pytest.fixture(scope='session')
def toy_ade20k(tmp_path_factory):
    return _make_toy(tmp_path_factory, 'make_toy_ade20k')
