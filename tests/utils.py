import pytest


def cpu_and_cuda():
    """Device parametrisation: 'cpu', and 'cuda' marked needs_cuda."""
    return ('cpu', pytest.param('cuda', marks=pytest.mark.needs_cuda))
