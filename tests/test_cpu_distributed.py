"""CPUDistributedDataParallel: DDP without device ids, SyncBN made BN."""
import textwrap

from .utils import run_python

CODE = '''
import socket
import torch
import torch.distributed as dist
import torch.nn as nn
from carafe_mm.compat import CPUDistributedDataParallel
with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
dist.init_process_group(
    'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4))
wrapped = CPUDistributedDataParallel(model, device_ids=[0])
print(sorted({type(m).__name__ for m in wrapped.modules()}))
out = wrapped(torch.randn(2, 3, 5, 5))
out.sum().backward()
print(tuple(out.shape), wrapped.module[1].weight.grad is not None)
dist.destroy_process_group()
'''


def test_sync_batchnorm_becomes_batchnorm():
    result = run_python(textwrap.dedent(CODE))
    assert result.returncode == 0, result.stderr[-3000:]
    types, shape = result.stdout.strip().splitlines()
    # mmengine's revert_sync_batchnorm makes _BatchNormXd layers
    assert 'SyncBatchNorm' not in types and '_BatchNormXd' in types, types
    assert shape == '(2, 4, 5, 5) True'
