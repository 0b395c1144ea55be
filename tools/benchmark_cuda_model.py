"""Modeled CUDA cost of carafe_mm's kernels and of mmcv 2.1.0's, counted
under the CUDA emulation (tests/cuda_emu), no GPU needed.

    python tools/benchmark_cuda_model.py [--cases fpn mask-head]
        [--dtypes float32 bfloat16] [--passes forward backward]
        [--impls carafe_mm mmcv] [--measure-batch 1]

Each pass runs once on the emulated H100 (132 SMs) with its memory accesses
traced per warp-level instruction. Per pass it prints the launches, the
warp-level memory requests, the L1<->L2 traffic (32-byte sectors), the
unique bytes (DRAM traffic if L2 caught all reuse), the shared-memory
traffic (128-byte wavefronts, and a wavefront's worth for each warp
shuffle), the useful FLOPs, the minimum DRAM bytes and
two times: the roofline (minimum bytes at HBM bandwidth) and the modeled
time, the sum over launches of the slowest of DRAM, L2 and shared memory at
the bandwidths below, plus a launch overhead each.

mmcv has no bfloat16 kernels; its float16 kernels (same element size, the
same traffic) stand in for the bfloat16 rows. --measure-batch runs a smaller
batch on a device with proportionally fewer SMs (so that the kernels choose
the launch configurations of the whole batch) and scales the counts (not the
launches) to the case's batch: every count is a sum over images. Shape
letters: N, C, H×W, k, G, s as in carafe_mm.ops.
"""
import argparse
import os.path as osp
import sys

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# H100 SXM5. HBM3 bandwidth and FP32 rate: NVIDIA H100 Tensor Core GPU
# datasheet (3.35 TB/s, 67 TFLOPS). 132 SMs, 1.98 GHz boost: NVIDIA H100
# Tensor Core GPU Architecture whitepaper. Shared memory: 32 banks of
# 4 bytes per clock per SM (CUDA C++ Programming Guide, compute capability
# 9.0), 128 B x 132 x 1.98 GHz. L2: NVIDIA publishes none; Chips and Cheese
# ("Nvidia's H100: Funny L2, and Tons of Bandwidth", 2023) measured about
# 5.5 TB/s on the 114-SM PCIe card at 1.755 GHz, scaled here to 132 SMs at
# 1.98 GHz. Launch overhead: a typical back-to-back kernel gap.
H100_SXM = dict(
    sms=132,
    hbm=3.35e12,
    l2=5.5e12 * 132 / 114 * 1.98 / 1.755,
    shared=128 * 132 * 1.98e9,
    fp32=67e12,
    launch=2e-6)

# N, C, H, W, k, G, s
CASES = {
    'fpn': (2, 256, 100, 100, 5, 1, 2),
    'mask-head': (256, 256, 14, 14, 5, 1, 2),
}


def minimum_bytes(case, dtype, pass_):
    """Each input read once and each output written once."""
    n, c, h, w, k, g, s = case
    features, masks = n * c * h * w, n * g * k * k * s * h * s * w
    output = n * c * s * h * s * w
    elements = features + masks + output
    if pass_ == 'backward':  # grad_output, features, masks, two gradients
        elements = output + 2 * features + 2 * masks
    return elements * torch.finfo(dtype).bits // 8


def useful_flops(case, pass_):
    """A multiply-add per tap and output element; the backward does it for
    each gradient."""
    n, c, h, w, k, g, s = case
    flops = 2 * k * k * n * c * s * h * s * w
    return flops if pass_ == 'forward' else 2 * flops


def inputs(case, dtype, batch):
    n, c, h, w, k, g, s = case
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(batch, c, h, w, generator=gen).to(dtype)
    masks = torch.randn(
        batch, g * k * k, s * h, s * w,
        generator=gen).view(batch, g, k * k, s * h,
                            s * w).softmax(2).view(batch, -1, s * h,
                                                   s * w).to(dtype)
    grad_output = torch.randn(batch, c, s * h, s * w, generator=gen).to(dtype)
    return features, masks, grad_output


def trace_carafe_mm(emu, case, dtype, pass_, batch):
    _, c, h, w, k, g, s = case
    features, masks, grad_output = inputs(case, dtype, batch)
    emu.trace(True)
    try:
        if pass_ == 'forward':
            emu.ops.carafe_forward(features, masks, k, g, s)
        else:
            emu.ops.carafe_backward(grad_output, features, masks, k, g, s)
    finally:
        emu.trace(False)
    return emu.pop_log()


def trace_mmcv(emu, case, dtype, pass_, batch):
    _, c, h, w, k, g, s = case
    if dtype == torch.bfloat16:
        dtype = torch.float16
    features, masks, grad_output = inputs(case, dtype, batch)
    # What mmcv's forward saves for its backward (made here, not traced).
    rfeatures = features.permute(0, 2, 3, 1).contiguous()
    emu.trace(True)
    try:
        if pass_ == 'forward':
            emu.ops.carafe_forward(features, masks, k, g, s)
        else:
            emu.ops.carafe_backward(grad_output, rfeatures, masks, c, h, w, k,
                                    g, s)
    finally:
        emu.trace(False)
    return emu.pop_log()


def model(launches, scale, device=H100_SXM):
    """Totals of a pass's launches and its modeled time in seconds."""
    total = dict(
        launches=len(launches),
        requests=0,
        l2_bytes=0,
        dram_bytes=0,
        shared_bytes=0,
        time=0.0)
    for launch in launches:
        requests = sum(launch[kind]['requests']
                       for kind in ('global_load', 'global_store'))
        l2 = 32 * (launch['global_load']['sectors'] +
                   launch['global_store']['sectors']) * scale
        dram = (launch['unique_load_bytes'] +
                launch['unique_store_bytes']) * scale
        # A warp shuffle (or vote) takes the shared-memory pipe for as long
        # as a wavefront: 32 lanes per clock per SM for both (CUDA C++
        # Programming Guide, arithmetic instruction throughput, cc 9.0).
        shared = 128 * (launch['shared_load']['wavefronts'] +
                        launch['shared_store']['wavefronts'] +
                        launch['warp_collectives']) * scale
        total['requests'] += requests * scale
        total['l2_bytes'] += l2
        total['dram_bytes'] += dram
        total['shared_bytes'] += shared
        total['time'] += max(dram / device['hbm'], l2 / device['l2'],
                             shared / device['shared']) + device['launch']
    return total


def measure(impls, cases, dtypes, passes, measure_batch=None):
    from tests.cuda_emu import load
    tracers = {}
    for impl in impls:
        if impl == 'carafe_mm':
            tracers[impl] = (load(), trace_carafe_mm)
        else:
            from tests.cuda_emu.mmcv import load_mmcv
            tracers[impl] = (load_mmcv(), trace_mmcv)
    rows = []
    for name in cases:
        case = CASES[name]
        batch = min(measure_batch or case[0], case[0])
        for dtype in dtypes:
            for pass_ in passes:
                minimum = minimum_bytes(case, dtype, pass_)
                for impl in impls:
                    emu, trace = tracers[impl]
                    # A smaller batch on a proportionally smaller device, so
                    # that launch configurations that depend on the work per
                    # SM (channel slices) are those of the whole batch.
                    sms = max(1, round(H100_SXM['sms'] * batch / case[0]))
                    previous = emu.configure(sms)
                    try:
                        launches = trace(emu, case, dtype, pass_, batch)
                    finally:
                        emu.configure(previous)
                    row = model(launches, case[0] / batch)
                    row.update(
                        case=name,
                        dtype=str(dtype).replace('torch.', ''),
                        pass_=pass_,
                        impl=impl,
                        minimum=minimum,
                        flops=useful_flops(case, pass_),
                        roofline=minimum / H100_SXM['hbm'])
                    rows.append(row)
                    print(format_row(row), flush=True)
    return rows


HEADER = ('| case | dtype | pass | kernels | launches | requests (M) | '
          'L1↔L2 (MB) | DRAM (MB) | min DRAM (MB) | shared (MB) | GFLOP | '
          'roofline (µs) | modeled (µs) |')


def format_row(r):
    mb = 1e-6
    return (f"| {r['case']} | {r['dtype']} | {r['pass_']} | {r['impl']} | "
            f"{r['launches']} | {r['requests'] * 1e-6:.1f} | "
            f"{r['l2_bytes'] * mb:.0f} | {r['dram_bytes'] * mb:.0f} | "
            f"{r['minimum'] * mb:.0f} | {r['shared_bytes'] * mb:.0f} | "
            f"{r['flops'] * 1e-9:.2f} | {r['roofline'] * 1e6:.0f} | "
            f"{r['time'] * 1e6:.0f} |")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--cases', nargs='+', default=list(CASES), choices=list(CASES))
    parser.add_argument(
        '--dtypes',
        nargs='+',
        default=['float32', 'bfloat16'],
        choices=['float32', 'bfloat16', 'float16', 'float64'])
    parser.add_argument(
        '--passes',
        nargs='+',
        default=['forward', 'backward'],
        choices=['forward', 'backward'])
    parser.add_argument(
        '--impls',
        nargs='+',
        default=['carafe_mm', 'mmcv'],
        choices=['carafe_mm', 'mmcv'])
    parser.add_argument(
        '--measure-batch',
        type=int,
        default=None,
        help='trace this many images and scale the counts to the batch '
        '(default: the whole batch)')
    args = parser.parse_args()
    if args.measure_batch is not None and args.measure_batch < 1:
        parser.error('--measure-batch must be at least 1')
    return args


def main():
    args = parse_args()
    print(HEADER)
    print('|' + ' --- |' * (HEADER.count('|') - 1))
    measure(args.impls, args.cases, [getattr(torch, d) for d in args.dtypes],
            args.passes, args.measure_batch)


if __name__ == '__main__':
    main()
