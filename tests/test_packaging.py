"""carafe_mm as a package: the metadata pip reads, an install into an
environment that has its own torch, and what ``import carafe_mm`` registers.

Everything runs offline: pip builds the metadata from this checkout with
``--no-build-isolation``, and installs resolve with ``--no-index``.
"""
import base64
import hashlib
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import carafe_mm

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / 'requirements' / 'constraints.txt'
EXTRAS = {'mmdet', 'mmseg', 'onnx', 'dev'}


def run(args, **kwargs):
    result = subprocess.run(
        args, capture_output=True, text=True, cwd=ROOT, **kwargs)
    assert result.returncode == 0, (
        f'{args} failed:\n{result.stdout}\n{result.stderr}')
    return result.stdout


def pip(*args):
    """Run this interpreter's pip (``--python PATH`` picks the environment
    it works on)."""
    return run([
        sys.executable, '-m', 'pip', '--disable-pip-version-check',
        '--no-input', *map(str, args)
    ])


def read_requirements(path):
    """The requirements in a requirements or constraints file, by name
    (option lines such as ``-c FILE`` are left out)."""
    reqs = {}
    for line in Path(path).read_text().splitlines():
        line = line.split('#')[0].strip()
        if line and not line.startswith('-'):
            req = Requirement(line)
            reqs[canonicalize_name(req.name)] = req
    return reqs


@pytest.fixture(scope='module')
def metadata(tmp_path_factory):
    """carafe_mm's core metadata as pip builds it from the checkout."""
    report = tmp_path_factory.mktemp('report') / 'report.json'
    pip('install', '--quiet', '--dry-run', '--no-deps', '--no-build-isolation',
        '--no-index', '--report', str(report), str(ROOT))
    (install, ) = json.loads(report.read_text())['install']
    return install['metadata']


def requirements(metadata, extra=None):
    """carafe_mm's requirements by name: the base ones, or those an extra
    adds."""
    reqs = {}
    for line in metadata['requires_dist']:
        req = Requirement(line)
        if extra is None:
            wanted = req.marker is None
        else:
            wanted = req.marker is not None and req.marker.evaluate(
                {'extra': extra})
        if wanted:
            reqs[canonicalize_name(req.name)] = req
    return reqs


def exact_pin(req):
    """The version ``req`` pins with ``==``, or None."""
    specifiers = list(req.specifier)
    if len(specifiers) == 1 and specifiers[0].operator == '==':
        return specifiers[0].version
    return None


def test_install_requires_are_ranges(metadata):
    base = requirements(metadata)
    assert set(base) == {'torch', 'mmengine', 'numpy'}
    for line in metadata['requires_dist']:
        specifiers = Requirement(line).specifier
        assert all(s.operator not in ('==', '===') for s in specifiers), line
    torch = base['torch'].specifier
    for version in ('2.7.0', '2.9.1', '2.13.0', '2.13.0+cpu', '2.14.0'):
        assert torch.contains(version), version
    # torch.compiler.is_exporting, which carafe_mm.ops calls, is new in 2.7
    assert not torch.contains('2.6.0')
    mmengine = base['mmengine'].specifier
    assert mmengine.contains('0.7.1') and mmengine.contains('0.10.7')
    assert not mmengine.contains('1.0.0')


def test_extras(metadata):
    assert EXTRAS <= set(metadata['provides_extra'])
    assert {'mmdet', 'mmcv'} <= set(requirements(metadata, 'mmdet'))
    assert {'mmsegmentation', 'mmcv'} <= set(requirements(metadata, 'mmseg'))
    onnx = set(requirements(metadata, 'onnx'))
    assert {'onnx', 'onnxruntime', 'onnxscript'} <= onnx
    dev = set(requirements(metadata, 'dev'))
    assert {'pytest', 'flake8', 'isort', 'yapf', 'codespell'} <= dev
    for extra in ('mmdet', 'mmseg', 'onnx'):
        assert set(requirements(metadata, extra)) <= dev, extra


def test_constraints_pin_a_stack_inside_the_ranges(metadata):
    pins = {
        name: exact_pin(req)
        for name, req in read_requirements(CONSTRAINTS).items()
    }
    for name in ('torch', 'mmengine', 'mmdet', 'mmsegmentation', 'mmcv'):
        assert pins[name] is not None, name
    for extra in (None, *EXTRAS):
        for name, req in requirements(metadata, extra).items():
            if pins.get(name):
                assert req.specifier.contains(pins[name]), (req, pins[name])


def test_requirements_txt_is_held_to_the_constraints():
    lines = (ROOT / 'requirements.txt').read_text().splitlines()
    assert '-c requirements/constraints.txt' in lines
    pins = read_requirements(CONSTRAINTS)
    for name in read_requirements(ROOT / 'requirements.txt'):
        assert name in pins, f'{name} is not in {CONSTRAINTS.name}'


def test_build_system():
    tomllib = pytest.importorskip('tomllib')
    with open(ROOT / 'pyproject.toml', 'rb') as f:
        build = tomllib.load(f)['build-system']
    names = {canonicalize_name(Requirement(r).name) for r in build['requires']}
    assert {'setuptools', 'wheel', 'ninja', 'torch'} <= names
    assert build['build-backend'] == 'setuptools.build_meta'


def test_licence_and_citation(metadata):
    assert metadata['license'] == 'Apache-2.0'
    licence = (ROOT / 'LICENSE').read_text()
    assert 'Apache License' in licence and 'Version 2.0' in licence
    citation = yaml.safe_load((ROOT / 'CITATION.cff').read_text())
    assert citation['license'] == 'Apache-2.0'
    assert citation['version'] == carafe_mm.__version__ == metadata['version']
    paper = citation['preferred-citation']
    assert paper['title'] == 'CARAFE: Content-Aware ReAssembly of FEatures'
    readme = (ROOT / 'README.md').read_text()
    bibtex = readme[readme.index('```bibtex'):]
    assert f"doi       = {{{paper['doi']}}}" in bibtex
    assert 'eprint    = {1905.02188}' in bibtex


# -- an environment with its own torch -----------------------------------
# Distributions that hold only their metadata stand for the torch and
# mmengine of an existing environment: pip's resolver reads nothing else.


def record_line(path, text):
    """The line of a wheel's RECORD for the file ``path`` holding ``text``."""
    data = text.encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
    return f'{path},sha256={digest.decode().rstrip("=")},{len(data)}'


def write_wheel(folder, name, version, requires_dist=(), provides_extra=()):
    """A wheel holding only ``name``'s metadata; returns its path."""
    dist_info = f'{name}-{version}.dist-info'
    metadata = ['Metadata-Version: 2.1', f'Name: {name}']
    metadata += [f'Version: {version}']
    metadata += [f'Provides-Extra: {extra}' for extra in provides_extra]
    metadata += [f'Requires-Dist: {req}' for req in requires_dist]
    wheel_info = ['Wheel-Version: 1.0', 'Generator: carafe_mm tests']
    wheel_info += ['Root-Is-Purelib: true', 'Tag: py3-none-any']
    files = {
        f'{dist_info}/METADATA': '\n'.join(metadata) + '\n',
        f'{dist_info}/WHEEL': '\n'.join(wheel_info) + '\n',
    }
    record = [record_line(path, text) for path, text in files.items()]
    files[f'{dist_info}/RECORD'] = '\n'.join(
        [*record, f'{dist_info}/RECORD,,']) + '\n'
    wheel = Path(folder) / f'{name}-{version}-py3-none-any.whl'
    with zipfile.ZipFile(wheel, 'w') as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture(scope='module')
def wheels(metadata, tmp_path_factory):
    """carafe_mm's metadata, and a torch 2.13.0 pip could install instead of
    an environment's own, as wheels in one folder."""
    folder = tmp_path_factory.mktemp('wheels')
    write_wheel(folder, 'carafe_mm', metadata['version'],
                metadata['requires_dist'], metadata['provides_extra'])
    write_wheel(folder, 'torch', '2.13.0')
    return folder


def would_install(wheels, tmp_path, torch_version):
    """What ``pip install carafe_mm`` would install into a fresh environment
    that has torch ``torch_version``, mmengine 0.9.0 and numpy 1.26.4."""
    env = tmp_path / f'torch-{torch_version}'
    run([sys.executable, '-m', 'venv', '--without-pip', str(env)])
    python = env / 'bin' / 'python'
    installed = tmp_path / 'installed'
    installed.mkdir(exist_ok=True)
    pip('--python', python, 'install', '--quiet', '--no-index', '--no-deps',
        write_wheel(installed, 'torch', torch_version),
        write_wheel(installed, 'mmengine', '0.9.0'),
        write_wheel(installed, 'numpy', '1.26.4'))
    report = tmp_path / f'report-{torch_version}.json'
    pip('--python', python, 'install', '--quiet', '--dry-run', '--no-index',
        '--find-links', wheels, '--report', report, 'carafe_mm')
    return {
        item['metadata']['name']: item['metadata']['version']
        for item in json.loads(report.read_text())['install']
    }


def test_install_keeps_the_environments_torch(wheels, tmp_path):
    assert would_install(wheels, tmp_path, '2.8.0') == {
        'carafe_mm': carafe_mm.__version__
    }
    # a torch older than carafe_mm supports is replaced
    assert would_install(wheels, tmp_path, '2.6.0') == {
        'carafe_mm': carafe_mm.__version__,
        'torch': '2.13.0'
    }


# -- import carafe_mm -----------------------------------------------------


def run_python(code, *args):
    """Run ``code`` with ``args`` in a fresh interpreter; returns what it
    prints."""
    return run([sys.executable, '-c', textwrap.dedent(code), *map(str, args)])


def test_op_imports_without_mmengine():
    out = run_python("""
        import sys
        sys.modules['mmengine'] = None  # import mmengine now fails
        import torch
        import carafe_mm
        from carafe_mm.ops import carafe
        features = torch.arange(4.).reshape(1, 1, 2, 2)
        masks = torch.ones(1, 1, 4, 4)  # k = 1: nearest neighbour
        out = carafe(features, masks, 1, 1, 2)
        print(out[0, 0, ::2, ::2].tolist() == features[0, 0].tolist())
        print(sorted(name for name in sys.modules
                     if name.startswith(('mm', 'carafe_mm.models'))
                     and sys.modules[name] is not None))
        """)
    assert out.split('\n')[:2] == ['True', "['mmap']"]


@pytest.fixture(scope='module')
def registry_checks(tmp_path_factory):
    """What a config with ``custom_imports=dict(imports=['carafe_mm'])``
    can build, run in a fresh interpreter: the zoo, and the integrations
    before and after their subpackage is imported."""
    config = tmp_path_factory.mktemp('config') / 'config.py'
    config.write_text("custom_imports = dict(imports=['carafe_mm'], "
                      'allow_failed_imports=False)\n')
    out = run_python(
        """
        import json, sys
        from mmengine.config import Config
        Config.fromfile(sys.argv[1])  # imports carafe_mm
        from mmengine.registry import MODELS
        from carafe_mm.models import UPSAMPLERS

        results = dict(imported=sorted(
            name for name in sys.modules if name.startswith('carafe_mm.mm')))
        results['zoo'] = {
            f'{scope}.{name}': type(MODELS.build(dict(
                type=name, _scope_=scope, channels=8,
                scale_factor=2))).__name__
            for name in UPSAMPLERS for scope in ('mmdet', 'mmseg')}
        def error(name, scope):
            try:
                MODELS.build(dict(type=name, _scope_=scope))
            except KeyError as e:
                return e.args[0]
        results['before'] = {name: error(name, scope) for name, scope in [
            ('UpsamplerFPN', 'mmdet'), ('UpsamplerMaskHead', 'mmdet'),
            ('UpsamplerUPerHead', 'mmseg')]}
        import carafe_mm.mmdet
        results['built'] = type(MODELS.build(dict(
            type='UpsamplerFPN', _scope_='mmdet', in_channels=[8, 8],
            out_channels=8, num_outs=2))).__name__
        results['wrong_scope'] = error('UpsamplerFPN', 'mmseg')
        print(json.dumps(results))
        """, config)
    return json.loads(out.splitlines()[-1])


def test_import_registers_the_zoo(registry_checks):
    from carafe_mm.models import UPSAMPLERS
    assert registry_checks['imported'] == []
    assert set(registry_checks['zoo'].values()) == set(UPSAMPLERS)


def test_missing_integration_names_its_subpackage(registry_checks):
    before = registry_checks['before']
    for name in ('UpsamplerFPN', 'UpsamplerMaskHead'):
        assert "custom_imports = dict(imports=['carafe_mm.mmdet']" in (
            before[name])
    assert "imports=['carafe_mm.mmseg']" in before['UpsamplerUPerHead']
    assert registry_checks['built'] == 'UpsamplerFPN'
    assert "default_scope='mmdet'" in registry_checks['wrong_scope']
