import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from carafe_mm.ops import (carafe_reference, extension_available,
                           extension_error)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

needs_extension = pytest.mark.skipif(
    not extension_available(),
    reason=f'carafe_mm._C did not load: {extension_error()}')


def compiled(features, masks, k, g, s):
    """The compiled forward op, without carafe()'s choice of backend."""
    return torch.ops.carafe_mm.carafe_forward(features, masks, k, g, s)


def cpu_and_cuda():
    """Device parametrisation: 'cpu', and 'cuda' marked needs_cuda."""
    return ('cpu', pytest.param('cuda', marks=pytest.mark.needs_cuda))


def shrink_detector(cfg):
    """ResNet-18 without pretrained weights in place of the config's
    ResNet-50 (the FPN's input channels follow), and few proposals."""
    model = cfg.model
    model.backbone.update(depth=18, init_cfg=None)
    model.neck.in_channels = [64, 128, 256, 512]
    model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=100)
    model.train_cfg.rcnn.sampler.num = 64
    model.test_cfg.rpn.update(nms_pre=100, max_per_img=50)
    model.test_cfg.rcnn.max_per_img = 10
    return cfg


def shrink_segmentor(cfg):
    """ResNet-18 (V1c) without pretrained weights in place of the config's
    ResNet-50; the heads' input channels follow."""
    model = cfg.model
    model.pretrained = None
    model.backbone.update(depth=18, init_cfg=None)
    model.decode_head.in_channels = [64, 128, 256, 512]
    model.decode_head.channels = 64
    if model.get('auxiliary_head'):
        model.auxiliary_head.in_channels = 256
        model.auxiliary_head.channels = 64
    return cfg


def toy_data_options(data_root, kind='coco'):
    """--cfg-options pointing a toy config at a dataset in data_root."""
    root = data_root.rstrip('/') + '/'
    options = [
        f'{split}_dataloader.dataset.data_root={root}'
        for split in ('train', 'val', 'test')
    ]
    if kind == 'coco':
        ann = root + 'annotations/instances_val.json'
        options += [
            f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}'
        ]
    return options


def make_inputs(n,
                c,
                h,
                w,
                k,
                g,
                s,
                dtype=torch.float64,
                device='cpu',
                seed=0,
                normalise=True):
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
    masks = torch.randn(
        n, g * k * k, s * h, s * w, generator=gen, dtype=torch.float64)
    if normalise:
        masks = masks.view(n, g, k * k, s * h, s * w).softmax(2).view_as(masks)
    return (features.to(device=device,
                        dtype=dtype), masks.to(device=device, dtype=dtype))


def grads(fn, features, masks, k, g, s, grad_output=None):
    """The output of fn and the gradients of features and masks (for
    grad_output, by default a seeded random one)."""
    features = features.detach().requires_grad_()
    masks = masks.detach().requires_grad_()
    out = fn(features, masks, k, g, s)
    if grad_output is None:
        grad_output = torch.randn(
            out.shape,
            generator=torch.Generator().manual_seed(1),
            dtype=torch.float64).to(out)
    out.backward(grad_output)
    return out, features.grad, masks.grad


def check_other_layouts(fn, device='cpu'):
    """``fn`` (an op with carafe's signature) on inputs in other layouts (a
    transposed view, a strided slice, channels_last; a transposed
    grad_output) gives the reference's output and gradients."""
    k, g, s = 3, 2, 2
    features, masks = make_inputs(2, 4, 6, 5, k, g, s, device=device)
    expected = grads(carafe_reference, features, masks, k, g, s)
    f_t = features.transpose(2, 3).contiguous().transpose(2, 3)
    m_wide = torch.zeros(
        2, 2 * masks.shape[1], 12, 10, dtype=masks.dtype, device=device)
    m_wide[:, ::2] = masks
    m_slice = m_wide[:, ::2]
    assert not f_t.is_contiguous() and not m_slice.is_contiguous()
    f_cl = features.contiguous(memory_format=torch.channels_last)
    m_cl = masks.contiguous(memory_format=torch.channels_last)
    go = torch.randn(
        2,
        4,
        12,
        10,
        generator=torch.Generator().manual_seed(1),
        dtype=torch.float64).to(device)
    go_t = go.transpose(0, 1).contiguous().transpose(0, 1)
    for f, m in [(f_t, m_slice), (f_cl, m_cl)]:
        actual = grads(fn, f, m, k, g, s, go_t)
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e)


def run_python(code, *args, **env):
    """Run ``python -c code *args`` in the repository root with env added to
    the environment."""
    return subprocess.run([sys.executable, '-c', code, *args],
                          cwd=REPO,
                          env={
                              **os.environ,
                              **env
                          },
                          capture_output=True,
                          text=True,
                          timeout=300)


def run_tool(args, timeout=600, env=None):
    """Run a command in the repository root, assert that it succeeds and
    return its stdout and stderr."""
    result = subprocess.run(
        args,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            **(env or {})
        })
    assert result.returncode == 0, (
        f'{" ".join(args)} failed:\n{result.stdout[-4000:]}\n'
        f'{result.stderr[-4000:]}')
    return result.stdout + result.stderr
