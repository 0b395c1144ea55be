import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from carafe_mm.ops import extension_available, extension_error

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
