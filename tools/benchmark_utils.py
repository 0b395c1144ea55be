"""What tools/benchmark_op.py and tools/benchmark_model.py share: the
devices to run on, the timer and the peak memory of one call."""
import json
import subprocess
import sys

import torch
from torch.utils import benchmark

DEVICES = ('cpu', 'cuda')


def add_devices_argument(parser):
    parser.add_argument(
        '--devices',
        nargs='+',
        choices=DEVICES,
        default=None,
        help='default: cpu, and cuda when available')


def chosen_devices(parser, devices):
    """The devices to benchmark: ``devices`` as given on the command line
    (a usage error where it names CUDA and there is none), by default the
    CPU, and CUDA when available."""
    if devices is None:
        return ['cpu', 'cuda'] if torch.cuda.is_available() else ['cpu']
    if 'cuda' in devices and not torch.cuda.is_available():
        reason = (f'torch {torch.__version__} is built without CUDA' if
                  torch.version.cuda is None else 'no CUDA device is visible')
        parser.error(f'--devices cuda: {reason}; benchmark the CPU with '
                     '--devices cpu')
    return devices


def median_time(fn, repeat):
    """Median seconds per call of ``fn()``, measured with
    ``torch.utils.benchmark.Timer.blocked_autorange`` over about ``repeat``
    calls' worth of time after a warm-up call, at torch's thread count.
    The timer synchronizes CUDA around each block of calls."""
    timer = benchmark.Timer(
        stmt='fn()', globals=dict(fn=fn), num_threads=torch.get_num_threads())
    warm_up = timer.timeit(1).median
    return timer.blocked_autorange(min_run_time=repeat * warm_up).median


def cuda_peak_mb(fn):
    """The peak of CUDA memory allocated while ``fn()`` runs, above what
    was allocated before, in MiB."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def _proc_status_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'no {field} in /proc/self/status')


def cpu_peak_mb(fn):
    """The peak resident set (Linux VmHWM) while ``fn()`` runs, above the
    resident set before, in MiB. Memory that the process freed earlier and
    reuses does not count: call it in a fresh process
    (:func:`in_fresh_process`)."""
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak resident set to the current one
    before = _proc_status_kib('VmRSS')
    fn()
    return (_proc_status_kib('VmHWM') - before) / 1024


def in_fresh_process(script, option, spec):
    """Run ``python script option JSON(spec)`` and return the number it
    prints last (the script's child mode measures one thing)."""
    result = subprocess.run([sys.executable, script, option,
                             json.dumps(spec)],
                            capture_output=True,
                            text=True,
                            check=True)
    return float(result.stdout.strip().splitlines()[-1])
