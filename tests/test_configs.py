"""Every config under configs/ loads and builds its model (backbones shrunk
to ResNet-18 without pretrained weights)."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from .utils import REPO, shrink_detector, shrink_segmentor

CONFIGS = sorted(
    p for p in glob.glob(
        osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
    if '_base_' not in p)


def test_there_are_configs():
    assert len(CONFIGS) > 40


@pytest.mark.parametrize(
    'path', CONFIGS, ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports.allow_failed_imports is False
    assert any(h.type == 'SafeCheckpointHook' for h in cfg.custom_hooks)
    if '/toy/' not in path:
        if cfg.default_scope == 'mmdet':
            shrink_detector(cfg)
        else:
            shrink_segmentor(cfg)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
