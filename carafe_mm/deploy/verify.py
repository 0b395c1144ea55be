"""Running an exported model in onnxruntime next to PyTorch: the largest
difference of the outputs, and both runtimes' CPU latency."""
import time

import numpy as np
import torch


def _median_ms(fns, repeats):
    """Median wall time of each of ``fns``, run in turn ``repeats`` times
    after a warm-up, so that the load of a shared machine falls on all of
    them alike."""
    for fn in fns:
        fn()  # warm-up (allocations, onnxruntime's first-run setup)
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [1000 * float(np.median(spent)) for spent in times]


def onnxruntime_session(path, threads=None):
    """An onnxruntime CPU session of the ONNX file ``path``."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    # no busy-waiting after a run, which would slow the PyTorch runs that
    # are timed in between
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return ort.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])


def compare_with_onnxruntime(module, path, shapes, repeats=5, seed=0):
    """Run ``module`` and the ONNX file ``path`` on the same random inputs.

    Args:
        module (nn.Module): the exported module, in eval mode.
        path (str): its ONNX file.
        shapes (list[list[tuple[int]]]): for each case, the shape of each
            input.
        repeats (int): timed runs per runtime (the median is reported).
            Defaults to 5.
        seed (int): of the random inputs. Defaults to 0.

    Returns:
        list[dict]: per case, ``shape``, ``max_abs`` (the largest absolute
        difference over all outputs), ``max_rel`` (``max_abs`` over the
        largest absolute PyTorch output), ``torch_ms`` and ``ort_ms``.
    """
    session = onnxruntime_session(path)
    names = [i.name for i in session.get_inputs()]
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for case in shapes:
        inputs = [torch.randn(shape, generator=generator) for shape in case]
        feed = dict(zip(names, (x.numpy() for x in inputs)))
        with torch.no_grad():
            expected = _flatten(module(*inputs))
        got = session.run(None, feed)
        if len(got) != len(expected):
            raise AssertionError(f'{path}: {len(got)} outputs, PyTorch '
                                 f'gives {len(expected)}')
        max_abs = scale = 0.0
        for want, have in zip(expected, got):
            want = want.numpy()
            if want.shape != have.shape:
                raise AssertionError(
                    f'{path}: an output of shape {have.shape} at input '
                    f'{case}, PyTorch gives {want.shape}')
            if want.size:
                max_abs = max(max_abs, float(np.abs(want - have).max()))
                scale = max(scale, float(np.abs(want).max()))
        with torch.no_grad():
            torch_ms, ort_ms = _median_ms(
                [lambda: module(*inputs), lambda: session.run(None, feed)],
                repeats)
        rows.append(
            dict(
                shape=case,
                max_abs=max_abs,
                max_rel=max_abs / scale if scale else max_abs,
                torch_ms=torch_ms,
                ort_ms=ort_ms))
    return rows


def _flatten(outputs):
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [t for out in outputs for t in _flatten(out)]


def format_table(rows):
    """The rows of :func:`compare_with_onnxruntime` as a Markdown table."""
    lines = [
        '| input | max abs diff | max rel diff | PyTorch ms | '
        'onnxruntime ms |', '|---|---|---|---|---|'
    ]
    for row in rows:
        shape = ', '.join('×'.join(map(str, s)) for s in row['shape'])
        lines.append(f'| {shape} | {row["max_abs"]:.2e} | '
                     f'{row["max_rel"]:.2e} | {row["torch_ms"]:.1f} | '
                     f'{row["ort_ms"]:.1f} |')
    return '\n'.join(lines)
