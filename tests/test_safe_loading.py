"""Every checkpoint scheme loads with weights_only=True
(carafe_mm.compat.safe_loading): local files, URLs and the model zoos. No
network: files placed in a temporary TORCH_HOME (torch.hub's download cache)
or MMENGINE_HOME stand for the downloads."""
import glob
import os
import os.path as osp
import re
import subprocess
import sys
from collections import OrderedDict

import mmengine
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import _load_checkpoint

from carafe_mm.compat import (CorruptCheckpointError, UnsafeCheckpointError,
                              safe_loading)
from .utils import REPO, toy_data_options

HUB_JSON = osp.join(mmengine.__path__[0], 'hub')
MMENGINE_SCHEMES = [
    '', 'http://', 'https://', 'pavi://', r'(\S+\:)?s3://',
    r'(\S+\:)?petrel://', 'modelzoo://', 'torchvision://', 'open-mmlab://',
    'openmmlab://', 'mmcls://'
]


class _Exploit:
    """Unpickling this creates ``marker`` (stands for any code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def weights(seed=0):
    torch.manual_seed(seed)
    return OrderedDict([('conv1.weight', torch.randn(4, 3, 3, 3)),
                        ('bn1.running_mean', torch.randn(4))])


def save_evil(path, marker):
    torch.save({'state_dict': weights(), 'meta': _Exploit(marker)}, path)
    return str(path)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Fresh TORCH_HOME and MMENGINE_HOME; torch.hub's checkpoint dir."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine'))
    # torch.hub.set_dir would take precedence over TORCH_HOME
    assert torch.hub.get_dir() == str(tmp_path / 'torch' / 'hub')
    checkpoints = tmp_path / 'torch' / 'hub' / 'checkpoints'
    checkpoints.mkdir(parents=True)
    return checkpoints


def _basename(table, name):
    return osp.basename(mmengine.load(osp.join(HUB_JSON, table))[name])


# (what a config says, the file torch.hub keeps it as)
ZOO = [
    ('https://example.invalid/models/r18-0123abcd.pth', 'r18-0123abcd.pth'),
    ('http://example.invalid/weights.pth?dl=1', 'weights.pth'),
    ('torchvision://resnet18', _basename('torchvision_0.12.json', 'resnet18')),
    ('modelzoo://resnet50', _basename('torchvision_0.12.json', 'resnet50')),
    ('open-mmlab://resnet50_v1c', _basename('openmmlab.json', 'resnet50_v1c')),
    ('openmmlab://resnet18_v1c', _basename('openmmlab.json', 'resnet18_v1c')),
]


def test_every_scheme_has_a_safe_loader():
    """No scheme of mmengine's CheckpointLoader keeps mmengine's loader (a
    new one in a later mmengine fails here until it is covered)."""
    schemes = CheckpointLoader._schemes
    assert set(MMENGINE_SCHEMES) <= set(schemes)
    for prefix, loader in schemes.items():
        assert loader.__module__ == safe_loading.__name__, prefix
    for path in ('x.pth', 'https://a/b.pth', 'open-mmlab://x', 's3://b/c',
                 'cluster:s3://b/c', 'mmcls://x', 'pavi://x'):
        loader = CheckpointLoader._get_checkpoint_loader(path)
        assert loader.__module__ == safe_loading.__name__, path


@pytest.mark.parametrize('source,cached', ZOO, ids=[s for s, _ in ZOO])
def test_zoo_checkpoint_loads_safely(cache, tmp_path, source, cached):
    torch.save({'state_dict': weights()}, cache / cached)
    loaded = _load_checkpoint(source, map_location='cpu')
    for key, value in weights().items():
        assert torch.equal(loaded['state_dict'][key], value)

    marker = tmp_path / 'pwned'
    save_evil(cache / cached, marker)
    with pytest.raises(UnsafeCheckpointError) as info:
        _load_checkpoint(source, map_location='cpu')
    assert not marker.exists()
    message = str(info.value)
    assert f'Refusing to load {cache / cached} (from ' in message
    assert 'builtins.open' in message or 'io.open' in message
    assert '--trust' in message and 'runs the code' in message
    assert f'make_checkpoint_safe.py {cache / cached} SAFE.pth' in message


@pytest.mark.parametrize('config,table', [
    ('configs/faster_rcnn_r50_fpn_carafe_1x.py', 'torchvision_0.12.json'),
    ('configs/upernet_r50_carafe_512x512_80k_ade20k.py', 'openmmlab.json'),
])
def test_paper_config_backbone_loads_safely(cache, tmp_path, config, table):
    """The pretrained backbones of the paper's configs: mmdet's
    torchvision://resnet50, mmseg's open-mmlab://resnet50_v1c."""
    model = Config.fromfile(
        osp.join(REPO, config), import_custom_modules=False).model
    checkpoint = model.get('pretrained') or model.backbone.init_cfg.checkpoint
    cached = cache / _basename(table, checkpoint.split('://')[1])
    torch.save(weights(), cached)
    assert torch.equal(
        _load_checkpoint(checkpoint)['conv1.weight'],
        weights()['conv1.weight'])
    marker = tmp_path / 'pwned'
    save_evil(cached, marker)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(str(cached))):
        _load_checkpoint(checkpoint)
    assert not marker.exists()


def test_open_mmlab_local_entry(cache, tmp_path):
    """open-mmlab:// names that $MMENGINE_HOME/open_mmlab.json maps to a
    file under $MMENGINE_HOME (or to a URL)."""
    home = tmp_path / 'mmengine'
    (home / 'weights').mkdir(parents=True)
    torch.save(weights(1), home / 'weights' / 'mine.pth')
    torch.save(weights(2), cache / 'theirs.pth')
    mmengine.dump(
        dict(
            mine='weights/mine.pth',
            theirs='https://example.invalid/theirs.pth'),
        str(home / 'open_mmlab.json'))
    mine = _load_checkpoint('open-mmlab://mine')
    theirs = _load_checkpoint('openmmlab://theirs')
    assert torch.equal(mine['conv1.weight'], weights(1)['conv1.weight'])
    assert torch.equal(theirs['conv1.weight'], weights(2)['conv1.weight'])

    marker = tmp_path / 'pwned'
    save_evil(home / 'weights' / 'mine.pth', marker)
    path = home / 'weights' / 'mine.pth'
    with pytest.raises(
            UnsafeCheckpointError,
            match=re.escape(f'load {path} (from open-mmlab://mine):')):
        _load_checkpoint('open-mmlab://mine')
    assert not marker.exists()


def test_mmcls_keeps_the_backbone(cache, tmp_path):
    backbone = weights()
    state = OrderedDict((f'backbone.{k}', v) for k, v in backbone.items())
    state['head.fc.weight'] = torch.ones(2, 2)
    cached = cache / _basename('mmcls.json', 'resnet18')
    torch.save({'state_dict': state}, cached)
    loaded = _load_checkpoint('mmcls://resnet18')['state_dict']
    assert list(loaded) == list(backbone)
    marker = tmp_path / 'pwned'
    save_evil(cached, marker)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(str(cached))):
        _load_checkpoint('mmcls://resnet18')
    assert not marker.exists()


def test_local_file_stays_safe_when_torch_is_told_otherwise(
        tmp_path, monkeypatch):
    """mmengine's local loader leaves weights_only to torch's default, which
    this variable turns off; ours passes weights_only=True."""
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    marker = tmp_path / 'pwned'
    evil = save_evil(tmp_path / 'evil.pth', marker)
    with pytest.raises(
            UnsafeCheckpointError, match=re.escape(f'load {evil}:')):
        _load_checkpoint(evil)
    assert not marker.exists()


def test_file_object_is_named(tmp_path):
    """What the s3:// / petrel:// loader loads: bytes read by mmengine's
    file backend, named by their path."""
    import io
    buffer = io.BytesIO()
    torch.save(weights(), buffer)
    buffer.seek(0)
    loaded = safe_loading.safe_load(buffer, name='s3://bucket/ok.pth')
    assert torch.equal(loaded['conv1.weight'], weights()['conv1.weight'])
    marker = tmp_path / 'pwned'
    buffer = io.BytesIO()
    torch.save({'meta': _Exploit(marker)}, buffer)
    buffer.seek(0)
    with pytest.raises(
            UnsafeCheckpointError,
            match='Refusing to load s3://bucket/evil.pth: '):
        safe_loading.safe_load(buffer, name='s3://bucket/evil.pth')
    assert not marker.exists()


def test_unknown_zoo_name_is_named(cache):
    with pytest.raises(KeyError, match='torchvision://no_such_net'):
        _load_checkpoint('torchvision://no_such_net')


def _truncated(path):
    torch.save(weights(), path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize(
    'write,match',
    [(lambda p: p.write_bytes(b''), r'is empty \(0 bytes\)'),
     (_truncated, 'is truncated, corrupt'),
     (lambda p: p.write_text('<html>404 Not Found</html>'),
      r"is not a checkpoint written by torch.save \(it begins with b'<html>")],
    ids=['empty', 'truncated', 'html'])
def test_broken_file_is_named(cache, tmp_path, write, match):
    local = tmp_path / 'ckpt.pth'
    write(local)
    with pytest.raises(
            CorruptCheckpointError, match=f'{re.escape(str(local))} {match}'):
        _load_checkpoint(str(local))
    write(cache / 'ckpt.pth')
    with pytest.raises(CorruptCheckpointError) as info:
        _load_checkpoint('https://example.invalid/ckpt.pth')
    message = str(info.value)
    assert message.startswith(
        f'{cache}/ckpt.pth (from https://example.invalid/ckpt.pth) is ')
    assert message.endswith('. Delete it to download it again.')


def test_pretrained_init_cfg_loads_safely(cache, tmp_path):
    """A backbone with init_cfg=dict(type='Pretrained',
    checkpoint='torchvision://resnet18'), as mmdet's configs have."""
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = dict(type='ResNet', depth=18, num_stages=4, out_indices=(3, ))
    torch.manual_seed(0)
    released = MODELS.build(cfg)
    for p in released.parameters():
        p.data.normal_()
    cached = cache / _basename('torchvision_0.12.json', 'resnet18')
    torch.save(released.state_dict(), cached)
    pretrained = dict(type='Pretrained', checkpoint='torchvision://resnet18')
    model = MODELS.build(dict(cfg, init_cfg=pretrained))
    model.init_weights()
    for (name, a), b in zip(model.state_dict().items(),
                            released.state_dict().values()):
        assert torch.equal(a, b), name

    marker = tmp_path / 'pwned'
    save_evil(cached, marker)
    model = MODELS.build(dict(cfg, init_cfg=pretrained))
    with pytest.raises(UnsafeCheckpointError, match=re.escape(str(cached))):
        model.init_weights()
    assert not marker.exists()


CUSTOM_IMPORTS = {'carafe_mm.mmdet', 'carafe_mm.mmseg', 'carafe_mm.compat'}
CONFIGS = sorted(
    glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True))


def test_every_config_imports_the_safe_loaders():
    """Each config sets custom_imports to a carafe_mm package, or inherits
    from a config of ours (parsing only those that set it: 0.3 s each)."""
    assert len(CONFIGS) > 40
    roots = 0
    for path in CONFIGS:
        with open(path) as f:
            text = f.read()
        if 'custom_imports' in text:
            cfg = Config.fromfile(path, import_custom_modules=False)
            assert CUSTOM_IMPORTS & set(cfg.custom_imports.imports), path
            roots += 1
        else:
            base = re.search(r"^_base_ = '(\.[^']+)'$", text, re.M)
            assert base, f'{path} has no custom_imports and no base of ours'
            base = osp.normpath(osp.join(osp.dirname(path), base[1]))
            assert base in CONFIGS, path
    assert roots >= 4


@pytest.mark.parametrize(
    'config', [
        'configs/toy/faster-rcnn_r18_fpn-carafe_toy.py',
        'configs/toy/upernet_r18-carafe_toy.py'
    ],
    ids=['mmdet', 'mmseg'])
def test_config_custom_imports_register_the_loaders(config):
    """In a fresh interpreter, Config.fromfile (which mmdet's and mmseg's own
    tools call) runs custom_imports, which registers the loaders."""
    code = ('import sys; from mmengine.config import Config; '
            'from mmengine.runner import CheckpointLoader as L; '
            'f = L._get_checkpoint_loader; '
            'print(f("torchvision://r").__module__); '
            f'Config.fromfile({config!r}); '
            'print(*sorted({f(p).__module__ for p in L._schemes}))')
    out = subprocess.run([sys.executable, '-c', code],
                         cwd=REPO,
                         capture_output=True,
                         text=True,
                         timeout=120,
                         check=True).stdout.split()
    assert out == ['mmengine.runner.checkpoint', safe_loading.__name__]


def _run_tool(args, tmp_path, env=None):
    return subprocess.run([sys.executable, *args],
                          cwd=REPO,
                          capture_output=True,
                          text=True,
                          timeout=300,
                          env={
                              **os.environ, 'TORCH_HOME':
                              str(tmp_path / 'torch'),
                              **(env or {})
                          })


FASTER_TOY = 'configs/toy/faster-rcnn_r18_fpn-carafe_toy.py'


def _assert_refused(result, path, marker):
    assert result.returncode != 0
    assert not marker.exists()
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert f'error: Refusing to load {path}' in result.stderr
    assert 'None' not in result.stderr.split('error: ', 1)[1]
    assert '--trust unpickles the file with weights_only=False, which ' \
        'runs the code it holds' in result.stderr


@pytest.mark.slow
def test_tools_test_refuses_url_and_empty_checkpoints(cache, tmp_path,
                                                      toy_coco):
    """tools/test.py CONFIG http://.../evil.pth, the file already in the
    download cache."""
    marker = tmp_path / 'pwned'
    evil = save_evil(cache / 'evil.pth', marker)
    result = _run_tool([
        'tools/test.py', FASTER_TOY, 'http://example.invalid/evil.pth',
        '--work-dir',
        str(tmp_path / 'wd'), '--cfg-options', *toy_data_options(toy_coco)
    ], tmp_path)
    _assert_refused(result, evil, marker)
    assert '(from http://example.invalid/evil.pth)' in result.stderr

    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    result = _run_tool([
        'tools/test.py', FASTER_TOY,
        str(empty), '--work-dir',
        str(tmp_path / 'wd'), '--cfg-options', *toy_data_options(toy_coco)
    ], tmp_path)
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    assert f'error: {empty} is empty (0 bytes)' in result.stderr


@pytest.mark.slow
def test_tools_train_names_pretrained_and_resumed_files(
        cache, tmp_path, toy_coco):
    """The file of a Pretrained init_cfg, and the latest checkpoint that
    --resume (without a path) finds in the work dir, are named."""
    marker = tmp_path / 'pwned'
    data = [*toy_data_options(toy_coco), 'train_cfg.max_epochs=1']
    evil = save_evil(cache / _basename('torchvision_0.12.json', 'resnet18'),
                     marker)
    result = _run_tool(
        [
            'tools/train.py',
            FASTER_TOY,
            '--work-dir',
            str(tmp_path / 'wd'),
            '--cfg-options',
            *data,
            'model.backbone.init_cfg._delete_=True',  # the toy's is None
            'model.backbone.init_cfg.type=Pretrained',
            'model.backbone.init_cfg.checkpoint=torchvision://resnet18'
        ],
        tmp_path)
    _assert_refused(result, evil, marker)

    work_dir = tmp_path / 'resume'
    work_dir.mkdir()
    evil = save_evil(work_dir / 'epoch_1.pth', marker)
    (work_dir / 'last_checkpoint').write_text(evil)
    result = _run_tool([
        'tools/train.py', FASTER_TOY, '--work-dir',
        str(work_dir), '--resume', '--cfg-options', *data
    ], tmp_path)
    _assert_refused(result, evil, marker)


def _make_checkpoint_safe():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'make_checkpoint_safe',
        osp.join(REPO, 'tools', 'misc', 'make_checkpoint_safe.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_make_checkpoint_safe_rewrites_what_was_refused(tmp_path, capsys):
    """The command a refusal suggests: refused without --trust, with it the
    rewritten checkpoint loads."""
    import numpy as np
    src, dst = str(tmp_path / 'old.pth'), str(tmp_path / 'SAFE.pth')
    meta = dict(best=np.float64(.5))  # what mmengine's runner saves
    torch.save(dict(state_dict=weights(), meta=meta), src)
    with pytest.raises(UnsafeCheckpointError, match='numpy'):
        _load_checkpoint(src)
    main = _make_checkpoint_safe()
    with pytest.raises(SystemExit):
        main([src, dst])
    assert 'runs any code it holds' in capsys.readouterr().err
    assert not osp.exists(dst)
    main([src, dst, '--trust'])
    loaded = _load_checkpoint(dst)
    assert loaded['meta'] == {'best': 0.5}
    assert torch.equal(loaded['state_dict']['conv1.weight'],
                       weights()['conv1.weight'])
