"""End to end through the tools: toy data -> tools/train.py -> checkpoint ->
tools/test.py (ours, with --show-dir, and mmdet's own) -> resume; 2-process
gloo training with --auto-scale-lr, then tools/test.py --tta; --amp; the
comparison script."""
import glob
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from .utils import REPO, run_tool, toy_data_options

pytestmark = pytest.mark.slow

MMDET_TEST = osp.join(
    osp.dirname(__import__('mmdet').__file__), '.mim', 'tools', 'test.py')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def one_epoch(max_epochs=1):
    return [
        f'train_cfg.max_epochs={max_epochs}', 'train_cfg.val_interval=1',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=3'
    ]


MASK_TOY = 'configs/toy/mask-rcnn_r18_fpn-carafe_toy.py'
FASTER_TOY = 'configs/toy/faster-rcnn_r18_fpn-carafe_toy.py'


def test_train_test_resume_and_mmdet_test(toy_coco, tmp_path):
    work_dir = str(tmp_path / 'work')
    data = toy_data_options(toy_coco)
    out = run_tool([
        sys.executable, 'tools/train.py', MASK_TOY, '--work-dir', work_dir,
        '--cfg-options', *one_epoch(), *data
    ])
    assert 'coco/segm_mAP' in out and 'coco/bbox_mAP' in out
    ckpt = osp.join(work_dir, 'epoch_1.pth')
    # Loads under torch's default weights_only=True.
    checkpoint = torch.load(ckpt, map_location='cpu')
    assert checkpoint['meta']['epoch'] == 1

    preds = str(tmp_path / 'preds.pkl')
    out = run_tool([
        sys.executable, 'tools/test.py', MASK_TOY, ckpt, '--work-dir',
        str(tmp_path / 'test'), '--out', preds, '--show-dir', 'vis',
        '--cfg-options', *data
    ])
    assert 'coco/segm_mAP' in out
    assert osp.getsize(preds) > 0
    # As mmdet's --show-dir: one painted image per test image, under
    # work_dir/TIMESTAMP/vis
    painted = glob.glob(str(tmp_path / 'test' / '*' / 'vis' / '*.png'))
    assert sorted(map(osp.basename, painted)) == sorted(
        map(osp.basename, glob.glob(osp.join(toy_coco, 'val', '*.png'))))

    # mmdet's own tools/test.py loads the checkpoint with our config.
    out = run_tool([
        sys.executable, MMDET_TEST, MASK_TOY, ckpt, '--work-dir',
        str(tmp_path / 'mmdet_test'), '--cfg-options', *data
    ])
    assert 'coco/segm_mAP' in out

    # Resume from the latest checkpoint and train a second epoch.
    out = run_tool([
        sys.executable, 'tools/train.py', MASK_TOY, '--work-dir', work_dir,
        '--resume', '--cfg-options', *one_epoch(max_epochs=2), *data
    ])
    assert 'resumed epoch: 1' in out
    resumed = torch.load(osp.join(work_dir, 'epoch_2.pth'), map_location='cpu')
    assert resumed['meta']['epoch'] == 2
    # The message hub's history came back and grew.
    loss_before = checkpoint['message_hub']['log_scalars']['train/loss']
    loss_after = resumed['message_hub']['log_scalars']['train/loss']
    assert len(loss_after['log_history']) > len(loss_before['log_history'])
    assert (loss_after['log_history'][:len(loss_before['log_history'])] ==
            loss_before['log_history'])


def test_two_process_gloo_training(toy_coco, tmp_path):
    """tools/dist_train.sh with 2 processes on the CPU (gloo), scaling the
    learning rate to the total batch size; then tools/test.py --tta."""
    work_dir = str(tmp_path / 'dist')
    data = toy_data_options(toy_coco)
    out = run_tool([
        'bash', 'tools/dist_train.sh', FASTER_TOY, '2', '--work-dir', work_dir,
        '--auto-scale-lr', '--cfg-options', *one_epoch(), *data
    ],
                   env=dict(PORT=str(free_port()), OMP_NUM_THREADS='1'))
    assert 'coco/bbox_mAP' in out
    assert 'Distributed training: True' in out
    # 8 images, 2 processes × batch 4: one iteration per epoch
    assert 'Epoch(train) [1][1/1]' in out
    ckpt = osp.join(work_dir, 'epoch_1.pth')
    assert osp.exists(ckpt)
    # The toy's lr 0.02 is for mmdet's base batch of 16; 2 × 4 halves it.
    assert 'Scaling the original LR by 0.5' in out
    groups = torch.load(ckpt)['optimizer']['param_groups']
    assert [g['initial_lr'] for g in groups] == [pytest.approx(0.01)]

    # mmdet's default test-time augmentation: the toy config has none
    out = run_tool([
        sys.executable, 'tools/test.py', FASTER_TOY, ckpt, '--tta',
        '--work-dir',
        str(tmp_path / 'tta'), '--cfg-options', *data
    ])
    assert 'has no tta_model: using mmdet\'s DetTTAModel' in out
    assert 'coco/bbox_mAP' in out
    tested = Config.fromfile(tmp_path / 'tta' / osp.basename(FASTER_TOY))
    assert tested.model.type == 'DetTTAModel'
    assert tested.test_dataloader.dataset.pipeline[-1].type == 'TestTimeAug'


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU case')
def test_amp_without_gpu_is_a_clear_error(tmp_path):
    result = subprocess.run([
        sys.executable, 'tools/train.py', FASTER_TOY, '--amp', '--work-dir',
        str(tmp_path / 'amp')
    ],
                            cwd=REPO,
                            capture_output=True,
                            text=True,
                            timeout=300)
    assert result.returncode != 0
    assert '--amp needs a GPU' in result.stderr


def test_compare_upsamplers(toy_coco, tmp_path):
    out = run_tool([
        sys.executable, 'tools/compare_upsamplers.py', '--task', 'det',
        '--upsamplers', 'Nearest', 'CARAFE', '--epochs', '1', '--data-root',
        toy_coco, '--work-dir',
        str(tmp_path / 'compare')
    ])
    table = out[out.index('| upsampler |'):].splitlines()
    assert table[2].startswith('| Nearest |')
    assert table[3].startswith('| CARAFE |')
    # CARAFE adds parameters to the FPN
    assert float(table[3].split('|')[2]) > float(table[2].split('|')[2])


def test_compare_upsamplers_rejects_bad_arguments(tmp_path):
    for args in (['--task', 'seg', '--epochs',
                  '1'], ['--task', 'det', '--iters',
                         '5'], ['--task', 'det', '--upsamplers', 'bilinear']):
        result = subprocess.run([
            sys.executable, 'tools/compare_upsamplers.py', *args, '--work-dir',
            str(tmp_path)
        ],
                                cwd=REPO,
                                capture_output=True,
                                text=True,
                                timeout=300)
        assert result.returncode == 2, args
        assert 'error:' in result.stderr
