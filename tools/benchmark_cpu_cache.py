"""How much the CPU op's output-block cache buys, against PyTorch's own
allocator with and without transparent huge pages (``THP_MEM_ALLOC_ENABLE``).

Each setting runs in its own process (the settings are read once per
process), the settings alternate round by round so that a noisy machine
affects them alike, and the table gives the median time per call relative to
the default setting measured in the same run.

    python tools/benchmark_cpu_cache.py [--rounds 3] [--repeat 10]

Workloads (k = 5, G = 1, s = 2, fp32):
    fpn         forward of the FPN example, N=2, C=256, 100×100 -> 200×200
    fpn_train   forward + backward of that example
    fpn_levels  forward + backward of the four levels of an FPN (N=2, C=256,
                25×25 ... 200×200 outputs), as in one training iteration
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

SETTINGS = {
    'default (256 MiB cache)': {},
    '1024 MiB cache':
    dict(CARAFE_MM_CPU_CACHE_MB='1024'),
    '64 MiB cache':
    dict(CARAFE_MM_CPU_CACHE_MB='64'),
    'no cache, THP_MEM_ALLOC_ENABLE=1':
    dict(CARAFE_MM_CPU_CACHE_MB='0', THP_MEM_ALLOC_ENABLE='1'),
    'no cache':
    dict(CARAFE_MM_CPU_CACHE_MB='0'),
}

CHILD = r'''
import json, sys, time
import torch
import carafe_mm.ops  # noqa: F401
workload, repeat = sys.argv[1], int(sys.argv[2])
op = torch.ops.carafe_mm
def inputs(h):
    features = torch.randn(2, 256, h, h)
    masks = torch.randn(2, 25, 2 * h, 2 * h).softmax(1)
    return features, masks, torch.randn(2, 256, 2 * h, 2 * h)
levels = [inputs(h) for h in ((100,) if workload != 'fpn_levels'
                              else (100, 50, 25, 13))]
def step():
    for features, masks, grad in levels:
        out = op.carafe_forward(features, masks, 5, 1, 2)
        if workload != 'fpn':
            op.carafe_backward(grad, features, masks, 5, 1, 2)
        del out
for _ in range(2):
    step()
times = []
for _ in range(repeat):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(json.dumps(times))
'''


def run(setting, workload, repeat):
    env = {**os.environ, **SETTINGS[setting]}
    for name in ('CARAFE_MM_CPU_CACHE_MB', 'THP_MEM_ALLOC_ENABLE'):
        if name not in SETTINGS[setting]:
            env.pop(name, None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, '-c', CHILD, workload,
                          str(repeat)],
                         env=env,
                         cwd=root,
                         check=True,
                         capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--repeat', type=int, default=10)
    parser.add_argument(
        '--workloads',
        nargs='+',
        default=['fpn', 'fpn_train', 'fpn_levels'],
        choices=['fpn', 'fpn_train', 'fpn_levels'])
    args = parser.parse_args()
    print('| workload | setting | ms per call (median) | × default |')
    print('|---|---|---|---|')
    for workload in args.workloads:
        times = {setting: [] for setting in SETTINGS}
        for _ in range(args.rounds):
            for setting in SETTINGS:
                times[setting] += run(setting, workload, args.repeat)
        base = statistics.median(times[next(iter(SETTINGS))])
        for setting, values in times.items():
            median = statistics.median(values)
            print(f'| {workload} | {setting} | {1e3 * median:.1f} | '
                  f'{median / base:.2f} |')


if __name__ == '__main__':
    main()
