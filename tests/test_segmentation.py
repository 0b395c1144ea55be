"""Segmentation: UpsamplerUPerHead against stock UPerHead, every site with
several upsamplers at odd sizes, shrunk UperNets, and the toy ADE20K run
through the tools (ours and mmseg's)."""
import os
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import carafe_mm.mmseg  # noqa: F401
from .utils import REPO, run_tool, shrink_segmentor

MMSEG_TOOLS = osp.join(
    osp.dirname(__import__('mmseg').__file__), '.mim', 'tools')
HEAD = dict(
    in_channels=[16, 32, 64, 128],
    in_index=[0, 1, 2, 3],
    channels=32,
    num_classes=5,
    norm_cfg=dict(type='BN'),
    align_corners=False)
SIZES = [(48, 64), (35, 50), (17, 9)]


@pytest.fixture(autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


def build(**cfg):
    from mmseg.registry import MODELS
    head = MODELS.build(dict(type='UpsamplerUPerHead', **HEAD, **cfg))
    head.init_weights()
    return head


def features(size, batch=2, seed=0):
    """Backbone-like levels at 1/4 ... 1/32 of an image of ``size`` (ceil)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    feats = []
    for c in HEAD['in_channels']:
        feats.append(torch.randn(batch, c, h, w, generator=gen))
        h, w = (h + 1) // 2, (w + 1) // 2
    return feats


@pytest.mark.parametrize('size', SIZES)
def test_no_upsamplers_is_stock_uperhead(size):
    """UpsamplerUPerHead's forward mirrors mmseg 1.2.2's UPerHead: with no
    upsamplers it must equal the installed mmseg's, parameter for parameter
    and output for output."""
    import mmseg
    from mmseg.models.decode_heads import UPerHead
    torch.manual_seed(0)
    stock = UPerHead(**HEAD)
    ours = build()
    assert set(ours.state_dict()) == set(stock.state_dict())
    ours.load_state_dict(stock.state_dict(), strict=True)
    stock.eval()
    ours.eval()
    feats = features(size)
    torch.testing.assert_close(
        ours(feats),
        stock(feats),
        rtol=0,
        atol=0,
        msg=lambda diff: f'UpsamplerUPerHead (copied from mmseg 1.2.2) '
        f'differs from mmseg {mmseg.__version__}\'s UPerHead: {diff}')


UPSAMPLERS = [
    dict(type='CARAFE', compressed_channels=16),
    dict(type='Deconv'),
    dict(type='DySample', groups=2),
    dict(type='A2U'),
]


@pytest.mark.parametrize('site', ['ppm', 'fpn', 'fuse'])
@pytest.mark.parametrize(
    'upsampler', UPSAMPLERS, ids=[u['type'] for u in UPSAMPLERS])
@pytest.mark.parametrize('size', SIZES[1:])
def test_each_site_forward_backward(site, upsampler, size):
    torch.manual_seed(0)
    head = build(**{f'{site}_upsample_cfg': upsampler})
    group = getattr(head, f'{site}_upsamplers')
    expected = {'ppm': 4, 'fpn': 3, 'fuse': 3}[site]
    assert len(group) == expected
    feats = [f.requires_grad_() for f in features(size)]
    out = head(feats)
    assert out.shape == (2, 5, *size)
    out.square().mean().backward()
    for name, p in group.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert all(f.grad is not None for f in feats)


def test_fuse_is_a_cascade_of_2x_steps():
    head = build(fuse_upsample_cfg=dict(type='Nearest'))
    assert [len(steps) for steps in head.fuse_upsamplers] == [1, 2, 3]


def test_all_sites_with_carafe_keep_their_init():
    carafe = dict(type='CARAFE', compressed_channels=16)
    head = build(
        ppm_upsample_cfg=carafe,
        fpn_upsample_cfg=carafe,
        fuse_upsample_cfg=carafe)
    encoders = [
        m.content_encoder.weight for m in head.modules()
        if type(m).__name__ == 'CARAFE'
    ]
    assert len(encoders) == 4 + 3 + 6
    assert all(w.std() < 0.002 for w in encoders)


def test_bad_upsample_cfg():
    with pytest.raises(
            ValueError,
            match='fpn_upsample_cfg must be None or '
            'a dict with a type'):
        build(fpn_upsample_cfg='CARAFE')


@pytest.mark.parametrize('config', [
    'configs/upernet_r50_carafe_512x512_80k_ade20k.py',
    'configs/segmentation/table6_where/'
    'upernet_r50-carafe-fuse_4xb4-80k_ade20k-512x512.py',
    'configs/segmentation/other_upsamplers/'
    'upernet_r50-dysample_4xb4-80k_ade20k-512x512.py',
])
def test_shrunk_upernet_loss_and_predict(config):
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    cfg = Config.fromfile(osp.join(REPO, config))
    shrink_segmentor(cfg)
    cfg.model.data_preprocessor.size = None
    cfg.model.data_preprocessor.size_divisor = None
    model = MODELS.build(cfg.model)
    model.init_weights()
    samples = []
    for h, w in ((75, 101), (75, 101)):
        s = SegDataSample(
            metainfo=dict(
                img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, h, w)))
        samples.append(s)
    inputs = torch.randn(2, 3, 75, 101)
    model.train()
    total, _ = model.parse_losses(model(inputs, samples, mode='loss'))
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        results = model(inputs, samples, mode='predict')
    assert results[0].pred_sem_seg.data.shape == (1, 75, 101)


def test_toy_ade20k_layout(toy_ade20k):
    import cv2
    import numpy as np
    for split in ('training', 'validation'):
        label = cv2.imread(
            osp.join(toy_ade20k, 'annotations', split, 'toy_000000.png'),
            cv2.IMREAD_UNCHANGED)
        image = cv2.imread(
            osp.join(toy_ade20k, 'images', split, 'toy_000000.jpg'))
        assert label.shape == image.shape[:2] == (96, 96)
        assert set(np.unique(label)) <= {0, 1, 2, 3, 4}
        assert 0 in label  # unlabelled pixels, ignored by reduce_zero_label


@pytest.mark.slow
def test_toy_train_test_resume_and_mmseg_test(toy_ade20k, tmp_path):
    config = 'configs/toy/upernet_r18-carafe_toy.py'
    data = [
        f'{split}_dataloader.dataset.data_root={toy_ade20k}/'
        for split in ('train', 'val', 'test')
    ]
    iters = [
        'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
        'default_hooks.checkpoint.interval=4',
        'default_hooks.checkpoint.max_keep_ckpts=2'
    ]
    work_dir = str(tmp_path / 'work')
    out = run_tool([
        sys.executable, 'tools/train.py', config, '--work-dir', work_dir,
        '--cfg-options', *iters, *data
    ])
    assert 'mIoU' in out
    ckpt = osp.join(work_dir, 'iter_4.pth')
    assert torch.load(ckpt, map_location='cpu')['meta']['iter'] == 4

    # mmseg's --out DIR (label maps) and --show-dir (painted images)
    labels, painted = tmp_path / 'labels', tmp_path / 'painted'
    out = run_tool([
        sys.executable, 'tools/test.py', config, ckpt, '--work-dir',
        str(tmp_path / 'test'), '--out',
        str(labels), '--show-dir',
        str(painted), '--cfg-options', *data,
        'default_hooks.visualization.interval=1'
    ])
    assert 'mIoU' in out
    images = sorted(
        osp.splitext(p)[0]
        for p in os.listdir(osp.join(toy_ade20k, 'images', 'validation')))
    assert sorted(p[:-4] for p in os.listdir(labels)) == images
    assert len(os.listdir(painted / 'vis_data' / 'vis_image')) == len(images)
    out = run_tool([
        sys.executable,
        osp.join(MMSEG_TOOLS, 'test.py'), config, ckpt, '--work-dir',
        str(tmp_path / 'mmseg_test'), '--cfg-options', *data
    ])
    assert 'mIoU' in out
    # the TTA of mmseg's base config (6 scales x 2 flips), on one image
    out = run_tool([
        sys.executable, 'tools/test.py', config, ckpt, '--tta', '--work-dir',
        str(tmp_path / 'tta'), '--cfg-options', *data,
        'test_dataloader.dataset.indices=1'
    ])
    assert 'mIoU' in out
    tested = Config.fromfile(tmp_path / 'tta' / osp.basename(config))
    assert tested.model.type == 'SegTTAModel'
    assert tested.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'

    more = [o.replace('max_iters=4', 'max_iters=8') for o in iters]
    out = run_tool([
        sys.executable, 'tools/train.py', config, '--work-dir', work_dir,
        '--resume', '--cfg-options', *more, *data
    ])
    assert 'resumed epoch: 0, iter: 4' in out
    assert torch.load(
        osp.join(work_dir, 'iter_8.pth'),
        map_location='cpu')['meta']['iter'] == 8


@pytest.mark.slow
def test_compare_upsamplers_segmentation(toy_ade20k, tmp_path):
    out = run_tool([
        sys.executable, 'tools/compare_upsamplers.py', '--task', 'seg',
        '--upsamplers', 'bilinear', 'CARAFE', '--iters', '4', '--data-root',
        toy_ade20k, '--work-dir',
        str(tmp_path / 'compare')
    ])
    table = out[out.index('| upsampler |'):].splitlines()
    assert table[2].startswith('| bilinear |')
    assert table[3].startswith('| CARAFE |')
    assert 'mIoU' in table[0]


@pytest.mark.slow
def test_mmseg_own_tools_train_and_reload(toy_ade20k, tmp_path):
    """mmseg's tools/train.py with our config writes checkpoints that its
    tools/test.py reloads (SafeCheckpointHook comes with the config)."""
    config = 'configs/toy/upernet_r18-carafe_toy.py'
    data = [
        f'{split}_dataloader.dataset.data_root={toy_ade20k}/'
        for split in ('train', 'val', 'test')
    ]
    work_dir = str(tmp_path / 'mmseg_train')
    run_tool([
        sys.executable,
        osp.join(MMSEG_TOOLS, 'train.py'), config, '--work-dir', work_dir,
        '--cfg-options', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2', *data
    ])
    ckpt = osp.join(work_dir, 'iter_2.pth')
    out = run_tool([
        sys.executable,
        osp.join(MMSEG_TOOLS, 'test.py'), config, ckpt, '--work-dir',
        str(tmp_path / 'mmseg_test'), '--cfg-options', *data
    ])
    assert 'mIoU' in out
