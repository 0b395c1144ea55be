"""Benchmark the CARAFE op: reference vs compiled (vs mmcv where it runs).

Prints a table of forward and forward+backward times, peak extra memory and
effective bandwidth, with the time of a plain copy of the op's minimum bytes
measured in the same run as a roofline (``x copy``: how many copies' worth of
time the op takes). Optionally writes the table as Markdown and a PNG plot.

    python tools/benchmark_op.py                       # CPU (+ CUDA if any)
    python tools/benchmark_op.py --devices cpu --markdown docs/op_cpu.md \
        --plot docs/op_cpu.png

Cases (k = 5, G = 1, s = 2, as in the paper):
    fpn        N=2,   C=256, 100×100 -> 200×200 (an FPN level)
    mask_head  N=256, C=256, 14×14 -> 28×28     (Mask R-CNN mask head)

Memory: CUDA reports ``max_memory_allocated`` above the inputs; CPU runs each
measurement in a fresh process and reports the growth of its peak resident
set (Linux VmHWM) above the inputs.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from carafe_mm.ops import carafe_reference  # noqa: E402
from carafe_mm.ops import extension_available  # noqa: E402

CASES = {
    'fpn': dict(n=2, c=256, h=100, w=100, k=5, g=1, s=2),
    'mask_head': dict(n=256, c=256, h=14, w=14, k=5, g=1, s=2),
}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def mmcv_carafe():
    """mmcv.ops.carafe where mmcv has compiled CUDA ops, else None."""
    try:
        from mmcv.ops import carafe as fn
        from mmcv.utils import ext_loader
        ext = ext_loader.load_ext('_ext', ['carafe_forward'])
    except Exception:
        return None
    return fn if ext is not None else None


def implementations(device):
    impls = {'reference': carafe_reference}
    if extension_available():
        impls['carafe_mm'] = lambda *a: torch.ops.carafe_mm.carafe_forward(*a)
    if device == 'cuda' and mmcv_carafe() is not None:
        impls['mmcv'] = mmcv_carafe()
    return impls


def make_inputs(case, device, dtype, requires_grad=False):
    p = CASES[case]
    gen = torch.Generator(device=device).manual_seed(0)
    features = torch.randn(
        p['n'], p['c'], p['h'], p['w'], generator=gen, device=device).to(dtype)
    logits = torch.randn(
        p['n'],
        p['g'] * p['k']**2,
        p['s'] * p['h'],
        p['s'] * p['w'],
        generator=gen,
        device=device)
    masks = logits.softmax(1).to(dtype)
    grad_output = torch.randn(
        p['n'],
        p['c'],
        p['s'] * p['h'],
        p['s'] * p['w'],
        generator=gen,
        device=device).to(dtype)
    return (features.requires_grad_(requires_grad),
            masks.requires_grad_(requires_grad), grad_output)


def min_bytes(case, dtype):
    """Bytes the forward must move (read features and masks, write the
    output) and the backward too (read grad_output, features, masks; write
    both gradients)."""
    p = CASES[case]
    size = torch.empty(0, dtype=dtype).element_size()
    f = p['n'] * p['c'] * p['h'] * p['w']
    m = p['n'] * p['g'] * p['k']**2 * p['s']**2 * p['h'] * p['w']
    o = p['n'] * p['c'] * p['s']**2 * p['h'] * p['w']
    forward = (f + m + o) * size
    backward = (o + f + m + f + m) * size
    return forward, forward + backward


class Timer:
    """Median wall time of fn; on CUDA with events and the L2 flushed."""

    def __init__(self, device, repeat):
        self.device, self.repeat = device, repeat
        if device == 'cuda':
            self.flush = torch.empty(
                256 * 2**20, dtype=torch.uint8, device='cuda')

    def __call__(self, fn, repeat=None):
        fn()  # warm-up
        times = []
        for _ in range(repeat or self.repeat):
            if self.device == 'cuda':
                self.flush.zero_()
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


def run_pass(impl, case, features, masks, grad_output, backward):
    p = CASES[case]
    out = impl(features, masks, p['k'], p['g'], p['s'])
    if backward:
        torch.autograd.grad(out, (features, masks), grad_output)


def cpu_peak_memory(impl_name, case, dtype_name, backward):
    """Peak resident growth of one pass, measured in a fresh process."""
    spec = json.dumps([impl_name, case, dtype_name, backward])
    result = subprocess.run([sys.executable, __file__, '--_memory', spec],
                            capture_output=True,
                            text=True,
                            check=True)
    return float(result.stdout.strip().splitlines()[-1])


def proc_status_kib(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'no {field} in /proc/self/status')


def memory_child(spec):
    impl_name, case, dtype_name, backward = json.loads(spec)
    impl = implementations('cpu')[impl_name]
    inputs = make_inputs(case, 'cpu', DTYPES[dtype_name], backward)
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the peak resident set (VmHWM) to the current
    before = proc_status_kib('VmRSS')
    run_pass(impl, case, *inputs, backward)
    print((proc_status_kib('VmHWM') - before) / 1024)


def time_copy(timer, num_bytes, device):
    src = torch.empty(num_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return timer(lambda: dst.copy_(src))


def benchmark(device, cases, dtypes, repeat, reference_repeat, memory):
    timer = Timer(device, repeat)
    rows = []
    for case in cases:
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            fwd_bytes, total_bytes = min_bytes(case, dtype)
            copy_s = time_copy(timer, fwd_bytes, device)
            for name, impl in implementations(device).items():
                if name == 'mmcv' and dtype == torch.bfloat16:
                    continue  # mmcv's op has no bf16 kernel
                reps = reference_repeat if name == 'reference' else None
                features, masks, go = make_inputs(case, device, dtype, True)
                row = dict(
                    device=device,
                    case=case,
                    dtype=dtype_name,
                    impl=name,
                    copy_ms=copy_s * 1e3)
                for backward, key in ((False, 'fwd'), (True, 'fwd_bwd')):
                    with torch.set_grad_enabled(backward):
                        t = timer(
                            lambda: run_pass(impl, case, features, masks, go,
                                             backward), reps)
                    row[f'{key}_ms'] = t * 1e3
                    row[f'{key}_gbs'] = (fwd_bytes if not backward else
                                         total_bytes) / t / 1e9
                    row[f'{key}_x_copy'] = t / copy_s
                    if not memory:
                        row[f'{key}_peak_mb'] = float('nan')
                    elif device == 'cuda':
                        torch.cuda.synchronize()
                        base = torch.cuda.memory_allocated()
                        torch.cuda.reset_peak_memory_stats()
                        with torch.set_grad_enabled(backward):
                            run_pass(impl, case, features, masks, go, backward)
                        torch.cuda.synchronize()
                        row[f'{key}_peak_mb'] = (
                            torch.cuda.max_memory_allocated() - base) / 2**20
                    else:
                        row[f'{key}_peak_mb'] = cpu_peak_memory(
                            name, case, dtype_name, backward)
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


HEADER = ('| device | case | dtype | impl | fwd ms | fwd GB/s | fwd × copy | '
          'fwd peak MB | fwd+bwd ms | fwd+bwd GB/s | fwd+bwd × copy | '
          'fwd+bwd peak MB | speed-up vs reference (fwd / fwd+bwd) |')


def format_row(row, reference=None):
    speedup = ''
    if reference is not None:
        speedup = (f"{reference['fwd_ms'] / row['fwd_ms']:.0f}× / "
                   f"{reference['fwd_bwd_ms'] / row['fwd_bwd_ms']:.0f}×")
    return (f"| {row['device']} | {row['case']} | {row['dtype']} | "
            f"{row['impl']} | {row['fwd_ms']:.2f} | {row['fwd_gbs']:.1f} | "
            f"{row['fwd_x_copy']:.1f} | {row['fwd_peak_mb']:.0f} | "
            f"{row['fwd_bwd_ms']:.2f} | {row['fwd_bwd_gbs']:.1f} | "
            f"{row['fwd_bwd_x_copy']:.1f} | {row['fwd_bwd_peak_mb']:.0f} | "
            f'{speedup} |')


def markdown(rows):
    lines = [HEADER, '|' + '---|' * (HEADER.count('|') - 1)]
    copies = []
    for row in rows:
        ref = next((r for r in rows if r['impl'] == 'reference' and all(
            r[k] == row[k] for k in ('device', 'case', 'dtype'))), None)
        lines.append(format_row(row, ref))
        key = (row['device'], row['case'], row['dtype'])
        if key not in [c[0] for c in copies]:
            copies.append((key, row['copy_ms']))
    lines.append('')
    lines.append('Copy of the forward\'s minimum bytes (features + masks + '
                 'output), measured in the same run: ' +
                 ', '.join(f'{d}/{c}/{t}: {ms:.2f} ms'
                           for (d, c, t), ms in copies) + '.')
    return '\n'.join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    groups = sorted({(r['device'], r['case'], r['dtype']) for r in rows})
    impls = sorted({r['impl'] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.6 * len(groups) + 2.5))
    for ax, key, title in zip(axes, ('fwd_ms', 'fwd_bwd_ms'),
                              ('forward', 'forward + backward')):
        height = 0.8 / len(impls)
        for i, impl in enumerate(impls):
            ys, xs = [], []
            for j, group in enumerate(groups):
                row = next((r for r in rows
                            if r['impl'] == impl and (r['device'], r['case'],
                                                      r['dtype']) == group),
                           None)
                if row is not None:
                    ys.append(j + i * height)
                    xs.append(row[key])
            ax.barh(ys, xs, height=height, label=impl)
        for j, group in enumerate(groups):
            copy = next(r['copy_ms'] for r in rows
                        if (r['device'], r['case'], r['dtype']) == group)
            ax.plot([copy, copy], [j - 0.1, j + 0.8], 'k--', lw=1)
        ax.set_yticks([j + 0.4 - height / 2 for j in range(len(groups))])
        ax.set_yticklabels(['/'.join(g) for g in groups])
        ax.set_xscale('log')
        ax.set_xlabel('ms (log scale; dashed: copy of the minimum bytes)')
        ax.set_title(f'CARAFE {title}')
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--devices',
        nargs='+',
        default=None,
        help='default: cpu, and cuda when available')
    parser.add_argument(
        '--cases', nargs='+', default=list(CASES), choices=list(CASES))
    parser.add_argument(
        '--dtypes', nargs='+', default=['fp32', 'bf16'], choices=list(DTYPES))
    parser.add_argument('--repeat', type=int, default=10)
    parser.add_argument(
        '--reference-repeat',
        type=int,
        default=2,
        help='repeats of the slow reference')
    parser.add_argument(
        '--no-memory',
        action='store_true',
        help='skip the peak memory measurements')
    parser.add_argument('--markdown', help='write the table to this file')
    parser.add_argument('--plot', help='write a PNG plot to this file')
    parser.add_argument('--_memory', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory:
        return memory_child(args._memory)

    devices = args.devices or (['cpu', 'cuda']
                               if torch.cuda.is_available() else ['cpu'])
    machine = (f'{cpu_name()}, {torch.get_num_threads()} threads, '
               f'torch {torch.__version__}')
    if 'cuda' in devices:
        machine += f', {torch.cuda.get_device_name()}'
    print(f'# CARAFE op benchmark ({machine})')
    print(HEADER)
    rows = []
    for device in devices:
        rows += benchmark(device, args.cases, args.dtypes, args.repeat,
                          args.reference_repeat, not args.no_memory)
    table = markdown(rows)
    print()
    print(table)
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(f'Machine: {machine}.\n\n{table}\n')
    if args.plot:
        plot(rows, args.plot)


if __name__ == '__main__':
    main()
