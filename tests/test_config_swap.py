"""One key swaps an upsampler: in the CARAFE models at the top of
configs/detection, configs/segmentation and configs/toy, setting only the
``type`` of an upsampling site with ``--cfg-options`` (mmengine's
DictAction and ``Config.merge_from_dict``, as tools/train.py and
tools/test.py) builds that upsampler with its own defaults."""
import argparse
import copy
import functools
import glob
import os.path as osp

import pytest
from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, DefaultScope

from carafe_mm.models import UPSAMPLERS, BaseUpsampler
from .utils import REPO, shrink_detector, shrink_segmentor

MAIN = sorted(glob.glob(osp.join(REPO, 'configs', '*', '*-carafe_*.py')))
SITES = {
    'faster-rcnn': ['model.neck.upsample_cfg'],
    'mask-rcnn':
    ['model.neck.upsample_cfg', 'model.roi_head.mask_head.upsample_cfg'],
    'upernet': [
        f'model.decode_head.{site}_upsample_cfg'
        for site in ('ppm', 'fpn', 'fuse')
    ],
}
CASES = [(path, key) for path in MAIN
         for key in SITES[osp.basename(path).split('_')[0]]]
# Plain values of an upsampler: its hyper-parameters.
PLAIN = (bool, int, float, str, tuple, type(None))


@functools.lru_cache(maxsize=None)
def _parse(path):
    return Config.fromfile(path)


def load_with_options(path, *options):
    """The config at ``path`` with ``--cfg-options *options`` applied."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(['--cfg-options', *options])
    cfg = copy.deepcopy(_parse(path))
    cfg.merge_from_dict(args.cfg_options)
    return cfg


def build_part(cfg, key):
    """The neck or head that holds the upsampling site ``key`` (the
    backbone shrunk as in test_configs)."""
    if '/toy/' not in cfg.filename:
        shrink = shrink_detector if cfg.default_scope == 'mmdet' else \
            shrink_segmentor
        shrink(cfg)
    part = cfg
    for name in key.split('.')[:-1]:
        part = part[name]
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return MODELS.build(part)


def hyper_parameters(upsampler):
    return {
        key: value
        for key, value in vars(upsampler).items()
        if not key.startswith('_') and isinstance(value, PLAIN)
    }


def assert_has_its_defaults(upsampler):
    fresh = MODELS.build(
        dict(
            type=type(upsampler).__name__,
            channels=upsampler.channels,
            scale_factor=upsampler.scale_factor))
    assert hyper_parameters(upsampler) == hyper_parameters(fresh)
    shapes = {k: v.shape for k, v in upsampler.state_dict().items()}
    assert shapes == {k: v.shape for k, v in fresh.state_dict().items()}


def test_there_are_main_configs():
    assert len(MAIN) == 7 and len(CASES) == 15


@pytest.mark.parametrize('up_type', UPSAMPLERS)
@pytest.mark.parametrize(
    'path,key',
    CASES,
    ids=[f'{osp.basename(p)}:{k[len("model."):]}' for p, k in CASES])
def test_one_key_swaps_the_upsampler(path, key, up_type):
    cfg = load_with_options(path, f'{key}.type={up_type}')
    site = cfg
    for name in key.split('.'):
        site = site[name]
    assert site == dict(type=up_type)
    part = build_part(cfg, key)
    upsamplers = [m for m in part.modules() if isinstance(m, BaseUpsampler)]
    assert any(type(m).__name__ == up_type for m in upsamplers)
    for upsampler in upsamplers:  # the swapped one, and CARAFE elsewhere
        assert_has_its_defaults(upsampler)


ABLATION = osp.join(
    REPO, 'configs/detection/table9_kernel_sizes/'
    'faster-rcnn_r50_fpn-carafe-enc5-up7_1x_coco.py')


def test_an_ablation_needs_delete():
    """An ablation config's options stay; ``_delete_`` drops them."""
    key = 'model.neck.upsample_cfg'
    cfg = load_with_options(ABLATION, f'{key}.type=DySample')
    with pytest.raises(TypeError, match='unexpected keyword argument'):
        build_part(cfg, key)
    cfg = load_with_options(ABLATION, f'{key}._delete_=True',
                            f'{key}.type=DySample')
    neck = build_part(cfg, key)
    types = {type(m).__name__ for m in neck.upsample_modules}
    assert types == {'DySample'}
