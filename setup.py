"""Build carafe_mm and its compiled operator library ``carafe_mm._C``.

The C++ sources (schemas and CPU kernels) are always built. The CUDA sources
are added when torch sees a GPU and ``CUDA_HOME`` is found, or when
``FORCE_CUDA=1``; ``TORCH_CUDA_ARCH_LIST`` picks the architectures.

    pip install --no-build-isolation -e .
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


def read_requirements():
    """The runtime requirements: requirements.txt minus build/test tools."""
    build_only = {
        'setuptools', 'wheel', 'ninja', 'pytest', 'matplotlib', 'flake8',
        'isort', 'yapf', 'codespell'
    }
    reqs = []
    with open(osp.join(ROOT, 'requirements.txt')) as f:
        for line in f:
            line = line.split('#')[0].strip()
            name = line.split('<')[0].split('>')[0].split('=')[0].strip()
            if line and name not in build_only:
                reqs.append(line)
    return reqs


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
    license='Apache License 2.0',
    python_requires='>=3.10',
    packages=find_packages(exclude=('tests', 'tools', 'configs')),
    install_requires=read_requirements(),
    ext_modules=get_extensions(),
    cmdclass=get_cmdclass(),
    zip_safe=False,
)
