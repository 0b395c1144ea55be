"""Build carafe_mm and its compiled operator library ``carafe_mm._C``.

The C++ sources (schemas and CPU kernels) are always built. The CUDA sources
are added when torch sees a GPU and ``CUDA_HOME`` is found, or when
``FORCE_CUDA=1``; ``TORCH_CUDA_ARCH_LIST`` picks the architectures.

    pip install --no-build-isolation -e .

The extension only loads with the torch it was compiled against, hence
``--no-build-isolation``: it builds against the active environment's torch
instead of a fresh one pip would install for the build.
"""
import glob
import os
import os.path as osp
from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
CSRC = osp.join('carafe_mm', 'csrc')


def get_version():
    scope = {}
    with open(osp.join(ROOT, 'carafe_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


# The versions carafe_mm works with, so that installing it into an existing
# OpenMMLab environment keeps that environment's torch, mmengine, mmdet and
# mmseg. The exact versions it is tested with are pinned in
# requirements/constraints.txt, which tools/install.sh and CI use.
INSTALL_REQUIRES = [
    # carafe_mm.ops: torch.library.register_fake / register_autograd and
    # torch.get_autocast_dtype (torch 2.4), torch.compiler.is_exporting (2.7)
    'torch>=2.7',
    # carafe_mm.models and the integrations work with mmengine 0.7.1 (also
    # mmdet 3.3's minimum); mmdet and mmseg refuse 1.0
    'mmengine>=0.7.1,<1.0.0',
    'numpy',
]
# mmdet 3.3 and mmseg 1.2 refuse mmcv >= 2.2 when they are imported.
MMCV = 'mmcv>=2.0.0rc4,<2.2.0'
EXTRAS_REQUIRE = {
    'mmdet': ['mmdet>=3.0.0,<4.0.0', MMCV],
    # mmseg imports ftfy and regex without declaring them
    'mmseg': ['mmsegmentation>=1.0.0,<2.0.0', MMCV, 'ftfy', 'regex'],
    # onnx 1.17 is onnxscript's minimum; onnxruntime 1.14 runs opset 18, the
    # default of torch's exporter
    'onnx': ['onnx>=1.17', 'onnxruntime>=1.14', 'onnxscript'],
}
# dev: the test suite (which covers every extra), benchmark plots and lint
DEV_TOOLS = {
    'clang-format', 'codespell', 'flake8', 'isort', 'matplotlib', 'pytest',
    'yapf'
}
EXTRAS_REQUIRE['dev'] = sorted(DEV_TOOLS.union(*EXTRAS_REQUIRE.values()))


def get_extensions():
    import torch
    from torch.utils.cpp_extension import (CUDA_HOME, CppExtension,
                                           CUDAExtension)

    sources = sorted(
        glob.glob(osp.join(CSRC, '*.cpp')) +
        glob.glob(osp.join(CSRC, 'cpu', '*.cpp')))
    # -fopenmp: at::parallel_for is inline and parallel only under OpenMP.
    extra_compile_args = {'cxx': ['-O3', '-fopenmp', '-Wno-psabi']}
    extra_link_args = ['-fopenmp']
    use_cuda = os.getenv('FORCE_CUDA',
                         '0') == '1' or (torch.cuda.is_available()
                                         and CUDA_HOME is not None)
    if use_cuda:
        sources += sorted(glob.glob(osp.join(CSRC, 'cuda', '*.cu')))
        extra_compile_args['nvcc'] = ['-O3', '-lineinfo']
        extension = CUDAExtension
    else:
        extension = CppExtension
    return [
        extension(
            name='carafe_mm._C',
            sources=sources,
            include_dirs=[osp.join(ROOT, CSRC)],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ]


def get_cmdclass():
    from torch.utils.cpp_extension import BuildExtension
    return {'build_ext': BuildExtension.with_options(use_ninja=True)}


setup(
    name='carafe_mm',
    version=get_version(),
    description='CARAFE (Content-Aware ReAssembly of FEatures) upsampling '
    'for OpenMMLab: compiled CPU/CUDA op, upsampler zoo, mmdet/mmseg '
    'integration.',
    long_description=open(osp.join(ROOT, 'README.md')).read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    license_files=['LICENSE'],
    python_requires='>=3.10',
    packages=find_packages(exclude=('tests', 'tools', 'configs')),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    ext_modules=get_extensions(),
    cmdclass=get_cmdclass(),
    zip_safe=False,
)
