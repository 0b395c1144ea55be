import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'needs_cuda: the test needs a CUDA device; skipped, and '
        'reported as skipped, where there is none')


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason='needs a CUDA device, none is available')
    for item in items:
        if 'needs_cuda' in item.keywords:
            item.add_marker(skip)
