"""tools/train.py and tools/test.py take every flag of mmdet's and mmseg's
own tools, and refuse what a config cannot do with an error naming the
config and the missing key (in-process, before anything is built)."""
import importlib.util
import os.path as osp
import re

import pytest

from .utils import REPO

FASTER_TOY = 'configs/toy/faster-rcnn_r18_fpn-carafe_toy.py'
UPERNET_TOY = 'configs/toy/upernet_r18-carafe_toy.py'


def mim_tools(library):
    """Where mmdet / mmseg install their own tools/."""
    return osp.join(osp.dirname(__import__(library).__file__), '.mim', 'tools')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(
        f'carafe_mm_tools_{name}', osp.join(REPO, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def local_rank(monkeypatch):
    # parse_args sets LOCAL_RANK when it is not set, as mmdet's does
    monkeypatch.setenv('LOCAL_RANK', '0')


def upstream_flags(library, tool):
    with open(osp.join(mim_tools(library), f'{tool}.py')) as f:
        return set(re.findall(r"add_argument\(\s*'(--[\w-]+)'", f.read()))


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_every_mmdet_and_mmseg_flag_is_taken(tool, capsys):
    flags = upstream_flags('mmdet', tool) | upstream_flags('mmseg', tool)
    assert {'--cfg-options', '--launcher', '--work-dir'} <= flags
    with pytest.raises(SystemExit):
        load_tool(tool).parse_args(['--help'])
    usage = capsys.readouterr().out
    assert [f for f in sorted(flags) if f not in usage] == []


def test_resume_as_mmdet_and_mmseg_spell_it():
    parse = load_tool('train').parse_args
    assert parse([FASTER_TOY, '--resume']).resume == 'auto'  # both
    assert parse([FASTER_TOY, '--resume', 'x.pth']).resume == 'x.pth'


def test_auto_scale_lr_needs_a_base_batch_size():
    # mmseg's configs have no auto_scale_lr
    with pytest.raises(
            ValueError,
            match=re.escape(f'--auto-scale-lr needs auto_scale_lr.'
                            f'base_batch_size (the total batch size the '
                            f'learning rate is set for) in {UPERNET_TOY}')):
        load_tool('train').main([UPERNET_TOY, '--auto-scale-lr'])


def test_train_warns_without_safe_checkpoints():
    """A config without SafeCheckpointHook is named (the run then stops at
    --auto-scale-lr, which the UperNet config cannot do)."""
    with pytest.warns(UserWarning, match=re.escape(
            f'{UPERNET_TOY} has no SafeCheckpointHook in custom_hooks')), \
            pytest.raises(ValueError, match='--auto-scale-lr needs'):
        load_tool('train').main([
            UPERNET_TOY, '--auto-scale-lr', '--cfg-options', 'custom_hooks=[]'
        ])


def test_tta_needs_the_configs_tta_model():
    with pytest.raises(
            ValueError,
            match=re.escape(f'--tta needs tta_model and tta_pipeline in '
                            f'{UPERNET_TOY}')):
        load_tool('test').main([
            UPERNET_TOY, 'missing.pth', '--tta', '--cfg-options',
            'tta_model=None', 'tta_pipeline=None'
        ])


def test_show_needs_a_visualization_hook():
    with pytest.raises(
            ValueError,
            match=re.escape('--show and --show-dir need '
                            'default_hooks.visualization in '
                            f'{FASTER_TOY}')):
        load_tool('test').main([
            FASTER_TOY, 'missing.pth', '--show-dir', 'vis', '--cfg-options',
            'default_hooks.visualization=None'
        ])


def test_detection_out_is_a_pickle():
    with pytest.raises(
            ValueError, match='--out must be a .pkl file, but got preds'):
        load_tool('test').main([FASTER_TOY, 'missing.pth', '--out', 'preds'])
