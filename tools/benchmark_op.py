"""Benchmark the CARAFE op: reference vs compiled (vs mmcv where it runs).

Prints a table of forward and forward+backward times, peak extra memory and
effective bandwidth, with the time of a plain copy of the op's minimum bytes
measured in the same run as a roofline (``x copy``: how many copies' worth of
time the op takes). Optionally writes the table as Markdown and a PNG plot.

    python tools/benchmark_op.py                       # CPU (+ CUDA if any)
    python tools/benchmark_op.py --devices cpu \
        --markdown docs/benchmark_op_cpu.md --plot docs/benchmark_op_cpu.png

Cases (k = 5, G = 1, s = 2, as in the paper):
    fpn        N=2,   C=256, 100×100 -> 200×200 (an FPN level)
    mask_head  N=256, C=256, 14×14 -> 28×28     (Mask R-CNN mask head)

Times: medians by ``torch.utils.benchmark.Timer.blocked_autorange`` at
torch's thread count after a warm-up call, over ``--repeat`` (the reference:
``--reference-repeat``) calls' worth of time.

Memory: CUDA reports ``max_memory_allocated`` above the inputs; CPU runs each
measurement in a fresh process and reports the growth of its peak resident
set (Linux VmHWM) above the inputs.
"""
import argparse
import json
import os
import platform
import shlex
import sys

import torch
from benchmark_utils import (add_devices_argument, chosen_devices, cpu_peak_mb,
                             cuda_peak_mb, in_fresh_process, median_time)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from carafe_mm.ops import carafe_reference  # noqa: E402
from carafe_mm.ops._extension import has_kernel  # noqa: E402

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
    if has_kernel(device):
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


def run_pass(impl, case, features, masks, grad_output, backward):
    p = CASES[case]
    out = impl(features, masks, p['k'], p['g'], p['s'])
    if backward:
        torch.autograd.grad(out, (features, masks), grad_output)


def memory_child(spec):
    """One pass in this fresh process; prints its peak resident growth."""
    impl_name, case, dtype_name, backward = json.loads(spec)
    impl = implementations('cpu')[impl_name]
    inputs = make_inputs(case, 'cpu', DTYPES[dtype_name], backward)
    print(cpu_peak_mb(lambda: run_pass(impl, case, *inputs, backward)))


def time_copy(num_bytes, device, repeat):
    src = torch.empty(num_bytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return median_time(lambda: dst.copy_(src), repeat)


def benchmark(device, cases, dtypes, repeat, reference_repeat, memory):
    if not has_kernel(device):
        print(f'carafe_mm._C has no {device} kernel (not built, or built '
              'without CUDA: rebuild with FORCE_CUDA=1); timing the '
              'reference alone.')
    rows = []
    for case in cases:
        for dtype_name in dtypes:
            dtype = DTYPES[dtype_name]
            fwd_bytes, total_bytes = min_bytes(case, dtype)
            copy_s = time_copy(fwd_bytes, device, repeat)
            for name, impl in implementations(device).items():
                if name == 'mmcv' and dtype == torch.bfloat16:
                    continue  # mmcv's op has no bf16 kernel
                reps = reference_repeat if name == 'reference' else repeat
                features, masks, go = make_inputs(case, device, dtype, True)
                row = dict(
                    device=device,
                    case=case,
                    dtype=dtype_name,
                    impl=name,
                    copy_ms=copy_s * 1e3)
                for backward, key in ((False, 'fwd'), (True, 'fwd_bwd')):

                    def one_pass():
                        run_pass(impl, case, features, masks, go, backward)

                    with torch.set_grad_enabled(backward):
                        t = median_time(one_pass, reps)
                    row[f'{key}_ms'] = t * 1e3
                    row[f'{key}_gbs'] = (fwd_bytes if not backward else
                                         total_bytes) / t / 1e9
                    row[f'{key}_x_copy'] = t / copy_s
                    if not memory:
                        row[f'{key}_peak_mb'] = float('nan')
                    elif device == 'cuda':
                        with torch.set_grad_enabled(backward):
                            row[f'{key}_peak_mb'] = cuda_peak_mb(one_pass)
                    else:
                        row[f'{key}_peak_mb'] = in_fresh_process(
                            __file__, '--_memory',
                            [name, case, dtype_name, backward])
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


def document(machine, table, path, plot_path=None):
    """The Markdown file --markdown writes: how the table was made, the
    table and, with --plot, the plot."""
    command = shlex.join(['python', 'tools/benchmark_op.py', *sys.argv[1:]])
    text = f'''# CARAFE op benchmark

Made by `{command}` on {machine}.

Cases (k = 5, G = 1, s = 2, as in the paper): `fpn`, N=2, C=256,
100×100 -> 200×200 (an FPN level); `mask_head`, N=256, C=256, 14×14 -> 28×28
(the Mask R-CNN mask head). `reference` is the pure-PyTorch `unfold` +
`einsum` implementation (`carafe_mm.ops.carafe_reference`), `carafe_mm` the
compiled op. Times are medians after a warm-up; `× copy` is the time over
that of one copy of the forward's minimum bytes (features + masks + output)
measured in the same run; GB/s counts those minimum bytes. Peak memory is
the growth of the resident set of a fresh process running one pass on the
CPU, `max_memory_allocated` above the inputs on CUDA. Timings on a shared
machine vary from run to run; compare rows of the same run.

{table}
'''
    if plot_path:
        relative = os.path.relpath(plot_path, os.path.dirname(path) or '.')
        text += f'\n![op benchmark]({relative})\n'
    return text


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
    add_devices_argument(parser)
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

    devices = chosen_devices(parser, args.devices)
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
            f.write(document(machine, table, args.markdown, args.plot))
    if args.plot:
        plot(rows, args.plot)


if __name__ == '__main__':
    main()
