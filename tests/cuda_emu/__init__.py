"""CUDA kernels on the CPU: a ``.cu`` file built for the host against the
execution model in ``include/cuda_emu.h`` (see README.md beside this file).

``load()`` rewrites the source (launches, ``__shared__`` arrays, the CUDA
registration), compiles it with the op's schemas (``carafe.cpp``) and the
runtime, with bounds-checking hooks on every memory access and UBSan, into a
cached library whose ops take CPU tensors::

    lib = load()
    out = torch.ops.carafe_mm_emu.carafe_forward(features, masks, 5, 1, 2)
    lib.configure(2)  # the emulated device's SM count
"""
import hashlib
import os
import os.path as osp
import re

import torch
from torch.utils import cpp_extension

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(osp.dirname(HERE))
CSRC = osp.join(REPO, 'carafe_mm', 'csrc')
KERNELS = osp.join(CSRC, 'cuda', 'carafe_kernel.cu')

# Each load and store of the emulated code calls the __asan_* hooks of
# runtime.cpp (not the address sanitizer's runtime): no inline shadow checks,
# no stack or global redzones.
HOOK_FLAGS = [
    '-fsanitize=address', '-fsanitize-recover=address',
    '--param=asan-instrumentation-with-call-threshold=0',
    '--param=asan-stack=0', '--param=asan-globals=0',
    '--param=asan-use-after-return=0', '--param=asan-memintrin=0'
]
UBSAN_FLAGS = [
    '-fsanitize=undefined', '-fno-sanitize-recover=undefined',
    '-fno-sanitize=vptr'
]

_LAUNCH = re.compile(r'([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(',
                     re.DOTALL)
_SHARED = re.compile(r'(?<!extern )__shared__\s+(?:__align__\(\d+\)\s+)?'
                     r'([\w:<>, ]+?)\s+(\w+)\s*((?:\[[^\]]+\]\s*)+);')
_EXTERN_SHARED = re.compile(r'extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?'
                            r'([\w:<>, ]+?)\s+(\w+)\s*\[\s*\]\s*;')
_REGISTRATION = re.compile(r'TORCH_LIBRARY_IMPL\(\s*(\w+)\s*,\s*CUDA\s*,')


def _split_arguments(text):
    """Top-level comma-separated parts of ``text``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in '([{<':
            depth += 1
        elif ch in ')]}>':
            depth -= 1
        elif ch == ',' and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def _launch(match):
    kernel, config = match.group(1), _split_arguments(match.group(2))
    if not 2 <= len(config) <= 4:
        raise ValueError(f'a launch of {kernel} with {len(config)} '
                         'configuration arguments')
    config += ['0', 'nullptr'][len(config) - 2:]
    lines = '\n' * match.group(0).count('\n')
    return (f'::cuda_emu::Launch({", ".join(config)}, "{kernel}")({kernel}, ' +
            lines)


def _shared(match):
    dtype, name, dims = match.groups()
    dims = re.findall(r'\[([^\]]+)\]', dims)
    element = dtype + ''.join(f'[{d}]' for d in dims[1:])
    return (f'auto& {name} = ::cuda_emu::shared<{element}, ({dims[0]})>'
            '(__COUNTER__);')


def _extern_shared(match):
    dtype, name = match.groups()
    return (f'{dtype}* {name} = static_cast<{dtype}*>('
            f'::cuda_emu::dynamic_shared(alignof({dtype})));')


def rewrite(source, path):
    """The host C++ for a .cu file's text (``path`` for its #line)."""
    if not _REGISTRATION.search(source):
        raise ValueError(f'{path} has no TORCH_LIBRARY_IMPL(..., CUDA, ...)')
    source = _LAUNCH.sub(_launch, source)
    source = _SHARED.sub(_shared, source)
    source = _EXTERN_SHARED.sub(_extern_shared, source)
    source = _REGISTRATION.sub(r'CUDA_EMU_LIBRARY_IMPL(\1,', source)
    return ('#include "cuda_emu.h"\n#include "cuda_emu_library.h"\n'
            f'#line 1 "{path}"\n' + source)


def cache_dir():
    """Where the emulated libraries are built: $CARAFE_MM_EMU_CACHE, or
    ~/.cache/carafe_mm/cuda_emu."""
    return os.environ.get(
        'CARAFE_MM_EMU_CACHE',
        osp.join(osp.expanduser('~'), '.cache', 'carafe_mm', 'cuda_emu'))


def _write_if_changed(path, text):
    if osp.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    with open(path, 'w') as f:
        f.write(text)


class Emulated:
    """An emulated library: its ops are ``torch.ops.<name>``; the device's
    controls are methods."""

    def __init__(self, name):
        self.name = name
        self.ops = getattr(torch.ops, name)
        self._device = getattr(torch.ops, f'{name}_device')

    def configure(self, sm_count):
        """Sets the emulated SM count; returns the previous one."""
        return self._device.configure(sm_count)

    def trace(self, on):
        """Logs the memory traffic of the launches while on."""
        self._device.trace(on)

    def pop_log(self):
        """The traffic of each launch since the last call, as dicts."""
        import json
        return [
            json.loads(line) for line in self._device.pop_log().splitlines()
            if line
        ]


_LOADED = {}


def load(cu=KERNELS,
         name='carafe_mm_emu',
         namespace='carafe_mm',
         sources=(osp.join(CSRC, 'carafe.cpp'), ),
         include_dirs=(),
         verbose=False):
    """Builds (once; cached across sessions) and loads the emulation of
    ``cu``. Its namespace ``namespace`` is renamed ``name``, in the
    ``sources`` compiled with it too."""
    if name in _LOADED:
        return _LOADED[name]
    build = osp.join(cache_dir(), name)
    os.makedirs(build, exist_ok=True)
    with open(cu) as f:
        text = rewrite(f.read(), cu)
    # Named by the source's directory so that "../x.h" includes resolve
    # through -I of that directory.
    digest = hashlib.sha1(cu.encode()).hexdigest()[:8]
    emulated = osp.join(build, f'{osp.basename(cu)}.{digest}.cpp')
    _write_if_changed(emulated, text)
    cpp_extension.load(
        name=name,
        sources=[emulated, *sources,
                 osp.join(HERE, 'runtime.cpp')],
        extra_cflags=[
            '-O2', '-g0', '-Wno-unknown-pragmas', f'-D{namespace}={name}',
            f'-DCUDA_EMU_OPS={name}_device', *HOOK_FLAGS, *UBSAN_FLAGS
        ],
        extra_ldflags=['-fsanitize=undefined', '-Wl,-Bsymbolic'],
        extra_include_paths=[
            osp.join(HERE, 'include'),
            osp.dirname(cu),
            osp.join(CSRC, 'cuda'), CSRC, *include_dirs
        ],
        build_directory=build,
        is_python_module=False,
        verbose=verbose)
    _LOADED[name] = Emulated(name)
    return _LOADED[name]
