"""Detection: the neck and mask head, mmdet official-structure weights,
loss / predict of shrunk detectors, and checkpoint safety."""
import os
import os.path as osp
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.registry import init_default_scope

import carafe_mm.mmdet  # noqa: F401
from carafe_mm.compat import from_safe, to_safe
from carafe_mm.models.upsamplers import UPSAMPLERS
from carafe_mm.ops import carafe_reference
from .utils import REPO, shrink_detector, toy_data_options

MMDET_CONFIGS = osp.join(
    osp.dirname(__import__('mmdet').__file__), '.mim', 'configs')


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


def build(cfg_model):
    from mmdet.registry import MODELS
    model = MODELS.build(cfg_model)
    model.init_weights()
    return model


def load_model_cfg(path, pad=1):
    cfg = Config.fromfile(path)
    shrink_detector(cfg)
    cfg.model.data_preprocessor.pad_size_divisor = pad
    return cfg.model


# ---------------------------------------------------------------------------
# neck and mask head


@pytest.mark.parametrize('upsampler', ['CARAFE', 'Nearest', 'DySample'])
@pytest.mark.parametrize('size', [(64, 64), (75, 99), (33, 130)])
def test_fpn_any_input_size(upsampler, size):
    """Sizes FPN_CARAFE would reject (not divisible by 64) work: the
    upsampled maps are aligned to the laterals."""
    from mmdet.models.backbones import ResNet
    from mmdet.registry import MODELS
    backbone = ResNet(depth=18, out_indices=(0, 1, 2, 3))
    backbone.eval()  # (mmdet's ResNet.train returns None)
    neck = MODELS.build(
        dict(
            type='UpsamplerFPN',
            in_channels=[64, 128, 256, 512],
            out_channels=32,
            num_outs=5,
            upsample_cfg=dict(
                type=upsampler,
                **(dict(groups=2) if upsampler == 'DySample' else {}))))
    neck.init_weights()
    feats = backbone(torch.randn(1, 3, *size))
    outs = neck(feats)
    assert len(outs) == 5
    for out, feat in zip(outs, feats):
        assert out.shape[2:] == feat.shape[2:]
    assert outs[4].shape[2] == (feats[3].shape[2] + 1) // 2
    sum(o.sum() for o in outs).backward()


def test_fpn_init_keeps_the_upsamplers_init():
    from mmdet.registry import MODELS
    neck = MODELS.build(
        dict(
            type='UpsamplerFPN',
            in_channels=[16, 32],
            out_channels=64,
            num_outs=3))
    neck.init_weights()
    for module in neck.upsample_modules:
        assert module.content_encoder.weight.std() < 0.002


def test_bad_upsample_cfg():
    from mmdet.registry import MODELS
    with pytest.raises(
            ValueError, match='upsample_cfg must be a dict with '
            'a type'):
        MODELS.build(
            dict(
                type='UpsamplerFPN',
                in_channels=[16, 32],
                out_channels=8,
                num_outs=2,
                upsample_cfg=dict(up_kernel=5)))
    with pytest.raises(KeyError, match='Bogus'):
        MODELS.build(
            dict(
                type='UpsamplerMaskHead',
                num_classes=3,
                upsample_cfg=dict(type='Bogus')))


@pytest.mark.parametrize('upsampler', ['CARAFE', 'Deconv', 'Bilinear', 'A2U'])
def test_mask_head_zero_and_some_rois(upsampler):
    from mmdet.registry import MODELS
    head = MODELS.build(
        dict(
            type='UpsamplerMaskHead',
            num_convs=2,
            in_channels=32,
            conv_out_channels=32,
            num_classes=3,
            upsample_cfg=dict(type=upsampler, scale_factor=2)))
    head.init_weights()
    for n in (0, 5):
        x = torch.randn(n, 32, 14, 14, requires_grad=True)
        out = head(x)
        assert out.shape == (n, 3, 28, 28)
        out.sum().backward()
        assert x.grad.shape == x.shape


@pytest.mark.parametrize('upsampler', UPSAMPLERS)
def test_mask_head_relu_is_the_upsampler_class_choice(upsampler):
    """As mmdet's FCNMaskHead: a ReLU after the deconvolution only, asked for
    by the upsampler class (Deconv.relu_in_mask_head), or set explicitly."""
    from mmdet.registry import MODELS

    def head(**kwargs):
        return MODELS.build(
            dict(
                type='UpsamplerMaskHead',
                num_convs=1,
                in_channels=8,
                conv_out_channels=8,
                num_classes=3,
                upsample_cfg=dict(type=upsampler),
                **kwargs))

    default, without, with_relu = head(), head(
        relu_after_upsample=False), head(relu_after_upsample=True)
    assert default.relu_after_upsample is (upsampler == 'Deconv')
    assert type(default.upsample).relu_in_mask_head is (upsampler == 'Deconv')
    assert without.relu_after_upsample is False
    assert with_relu.relu_after_upsample is True
    # what the logits see: after the ReLU, nothing negative
    seen = []
    with_relu.conv_logits.register_forward_pre_hook(
        lambda module, args: seen.append(args[0]))
    with_relu(torch.randn(2, 8, 7, 7))
    assert seen[0].min() >= 0


# ---------------------------------------------------------------------------
# official mmdet CARAFE models


def _official(name):
    return osp.join(MMDET_CONFIGS, 'carafe', name)


@pytest.mark.parametrize('ours,official', [
    ('configs/faster_rcnn_r50_fpn_carafe_1x.py',
     'faster-rcnn_r50_fpn-carafe_1x_coco.py'),
    ('configs/mask_rcnn_r50_fpn_carafe_1x.py',
     'mask-rcnn_r50_fpn-carafe_1x_coco.py'),
])
def test_official_state_dict_loads_strictly_with_equal_outputs(ours, official):
    """An mmdet FPN_CARAFE / CARAFEPack model's state dict (built from
    mmdet's configs/carafe) loads into ours with strict=True and gives the
    same features and mask logits. mmcv's CARAFE op has no CPU kernel, so
    the official modules reassemble with carafe_reference."""
    torch.manual_seed(0)
    official_cfg = Config.fromfile(_official(official))
    official_cfg.model.backbone.init_cfg = None
    from mmdet.registry import MODELS
    ref = MODELS.build(official_cfg.model)  # random init is enough here
    ref.eval()
    for p in ref.neck.parameters():  # leave the init behind
        nn.init.normal_(p, std=0.02)
    for module in ref.modules():
        if type(module).__name__ == 'CARAFEPack':
            module.feature_reassemble = (
                lambda x, mask, m=module: carafe_reference(
                    x, mask, m.up_kernel, m.up_group, m.scale_factor))
    cfg = Config.fromfile(osp.join(REPO, ours))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    model.eval()
    model.load_state_dict(ref.state_dict(), strict=True)

    feats = [
        torch.randn(1, c, 64 // s, 64 // s)
        for c, s in zip((256, 512, 1024, 2048), (1, 2, 4, 8))
    ]
    with torch.no_grad():
        for a, b in zip(model.neck(feats), ref.neck(feats)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        if hasattr(ref.roi_head, 'mask_head'):
            x = torch.randn(3, 256, 14, 14)
            torch.testing.assert_close(
                model.roi_head.mask_head(x),
                ref.roi_head.mask_head(x),
                rtol=1e-4,
                atol=1e-5)


def test_official_checkpoint_file_layout_loads(tmp_path):
    """A checkpoint in the layout of mmdet's released CARAFE models
    (meta + state_dict, as mmdet 2.x's publish_model writes) loads through
    mmengine's load_checkpoint, with torch's default weights_only=True."""
    from collections import OrderedDict

    from mmdet.registry import MODELS
    from mmengine.runner import load_checkpoint
    official_cfg = Config.fromfile(
        _official('faster-rcnn_r50_fpn-carafe_1x_coco.py'))
    official_cfg.model.backbone.init_cfg = None
    ref = MODELS.build(official_cfg.model)
    path = tmp_path / 'faster_rcnn_r50_fpn_carafe_1x_coco.pth'
    torch.save(
        dict(
            meta=dict(
                mmdet_version='2.0.0',
                mmcv_version='0.5.1',
                config='model = dict()',
                epoch=12,
                iter=87960,
                time='Mon May  4 17:57:33 2020',
                CLASSES=('person', 'bicycle')),
            state_dict=OrderedDict(ref.state_dict())), path)
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/faster_rcnn_r50_fpn_carafe_1x.py'))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    load_checkpoint(model, str(path), map_location='cpu', strict=True)
    for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------
# shrunk detectors: loss and predict


def demo_batch(model, with_mask, shapes=((3, 100, 130), (3, 96, 112))):
    from mmdet.testing import demo_mm_inputs
    packed = demo_mm_inputs(
        batch_size=len(shapes),
        image_shapes=list(shapes),
        num_items=[3, 2],
        num_classes=80,
        with_mask=with_mask)
    return model.data_preprocessor(packed, True)


DETECTORS = [
    'configs/faster_rcnn_r50_fpn_carafe_1x.py',
    'configs/detection/table2_fpn_upsampler/'
    'faster-rcnn_r50_fpn-nearest_1x_coco.py',
    'configs/detection/table2_fpn_upsampler/'
    'faster-rcnn_r50_fpn-deconv_1x_coco.py',
    'configs/detection/table2_fpn_upsampler/'
    'faster-rcnn_r50_fpn-gum_1x_coco.py',
    'configs/detection/later_upsamplers/'
    'faster-rcnn_r50_fpn-dysample_1x_coco.py',
    'configs/mask_rcnn_r50_fpn_carafe_1x.py',
    'configs/detection/table3_mask_head_upsampler/'
    'mask-rcnn_r50_fpn_mask-pixel-shuffle_1x_coco.py',
    'configs/detection/table3_mask_head_upsampler/'
    'mask-rcnn_r50_fpn_mask-bilinear-conv_1x_coco.py',
    'configs/detection/later_upsamplers/mask-rcnn_r50_fpn-a2u_1x_coco.py',
    'configs/detection/table4_where/'
    'mask-rcnn_r50_fpn-carafe_mask-deconv_1x_coco.py',
]


@pytest.mark.parametrize('config', DETECTORS)
def test_shrunk_detector_loss_and_predict(config):
    torch.manual_seed(0)
    model = build(load_model_cfg(osp.join(REPO, config)))
    with_mask = 'mask' in osp.basename(config)
    model.train()
    data = demo_batch(model, with_mask)
    total, _ = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        results = model(**demo_batch(model, with_mask), mode='predict')
    assert len(results) == 2
    for r in results:
        assert r.pred_instances.bboxes.shape[1] == 4
        if with_mask:
            assert r.pred_instances.masks.shape[1:] == r.ori_shape


# ---------------------------------------------------------------------------
# checkpoint safety


def test_to_safe_round_trip(tmp_path):
    import numpy as np
    buffer = HistoryBuffer([1.0, 2.5], [1, 2], max_length=7)
    checkpoint = dict(
        meta=dict(
            best=np.float32(0.5),
            seed=np.int64(3),
            hist=np.arange(3),
            cfg='x = 1',
            classes=('a', 'b')),
        message_hub=dict(
            log_scalars={'loss': buffer},
            runtime_info={'iter': np.int64(4)},
            resumed_keys={'loss': True}),
        state_dict={'w': torch.ones(2)})
    path = tmp_path / 'ckpt.pth'
    torch.save(to_safe(checkpoint), path)
    loaded = torch.load(path, weights_only=True)
    assert loaded['meta']['best'] == 0.5 and loaded['meta']['seed'] == 3
    assert torch.equal(loaded['meta']['hist'], torch.arange(3))
    hub = from_safe(loaded['message_hub'])
    restored = hub['log_scalars']['loss']
    assert isinstance(restored, HistoryBuffer)
    assert restored.max_length == 7 and restored.mean() == buffer.mean()
    assert restored.data[1].tolist() == [1, 2]


class _Exploit:
    """Unpickling this runs a command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


@pytest.mark.slow
def test_malicious_checkpoint_is_refused(tmp_path, toy_coco):
    """After importing carafe_mm, torch.load still refuses a pickle that
    executes code, and tools/test.py says why without running it."""
    import subprocess
    import sys
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': _Exploit(marker)}, evil)
    with pytest.raises(pickle.UnpicklingError, match='Weights only load'):
        torch.load(evil)
    result = subprocess.run([
        sys.executable, 'tools/test.py',
        'configs/toy/faster-rcnn_r18_fpn-carafe_toy.py',
        str(evil), '--work-dir',
        str(tmp_path / 'wd'), '--cfg-options', *toy_data_options(toy_coco)
    ],
                            cwd=REPO,
                            capture_output=True,
                            text=True,
                            timeout=300)
    assert result.returncode != 0
    assert 'make_checkpoint_safe.py' in result.stderr
    assert not marker.exists()


def test_to_safe_edge_cases(tmp_path):
    """Subclasses of plain types, 0-d and non-numeric arrays, state-dict
    metadata, and values with no safe form (a bound method: OneCycleLR keeps
    one in its state) are left out instead of breaking the load."""
    import enum
    import warnings
    from collections import OrderedDict

    import numpy as np

    class Level(enum.IntEnum):
        HIGH = 2

    state = OrderedDict(w=torch.ones(1))
    state._metadata = OrderedDict(conv={'version': 2})
    checkpoint = dict(
        meta=dict(
            name=np.str_('x'),
            level=Level.HIGH,
            zero_d=np.array(3.5),
            words=np.array(['a', 'b']),
            flag=np.bool_(True)),
        state_dict=state,
        param_schedulers=[
            dict(anneal_func=test_to_safe_edge_cases.__call__, last_step=3)
        ])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        safe = to_safe(checkpoint)
    assert any('anneal_func' in str(w.message) for w in caught)
    path = tmp_path / 'ckpt.pth'
    torch.save(safe, path)
    loaded = torch.load(path, weights_only=True)
    meta = loaded['meta']
    assert type(meta['name']) is str and type(meta['level']) is int
    assert meta['zero_d'].shape == () and meta['zero_d'].item() == 3.5
    assert meta['words'] == ['a', 'b'] and meta['flag'] is True
    assert loaded['state_dict']._metadata == {'conv': {'version': 2}}
    assert loaded['param_schedulers'] == [dict(last_step=3)]
