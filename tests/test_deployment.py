"""tools/deployment/pytorch2onnx.py end to end: a toy Mask R-CNN (its
backbone + FPN + RPN, and its mask head) exported at one size, checked and
run in onnxruntime at another; argument errors."""
import os.path as osp
import re
import subprocess
import sys

import pytest

from .utils import REPO, run_tool

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

TOOL = 'tools/deployment/pytorch2onnx.py'


def table_rows(output):
    """(input, max rel diff) of each row of the tool's table."""
    rows = re.findall(r'^\| (\d+(?:×\d+)+) \| \S+ \| (\S+) \|', output,
                      re.MULTILINE)
    return [(shape, float(rel)) for shape, rel in rows]


@pytest.mark.slow
def test_detector_legacy_dynamic_verify(tmp_path):
    # The TorchScript exporter here (what mmdeploy drives; the default one
    # runs in test_onnx.py and in the README's commands).
    out = str(tmp_path / 'mask.onnx')
    output = run_tool([
        sys.executable, TOOL, 'configs/toy/mask-rcnn_r18_fpn-carafe_toy.py',
        '--shape', '96', '128', '--dynamic', '--legacy', '--out', out,
        '--verify', '--verify-shape', '77', '101', '--repeats', '1'
    ])
    assert output.count('onnx.checker passed, standard operators only') == 2
    assert osp.exists(str(tmp_path / 'mask_mask_head.onnx'))
    rows = table_rows(output)
    assert [shape for shape, _ in rows
            ] == ['1×3×96×128', '1×3×77×101', '4×64×14×14', '9×64×14×14']
    assert all(rel <= 1e-5 for _, rel in rows), rows


@pytest.mark.parametrize('args,match', [
    (['--shape', '0', '64'], '--shape must be positive'),
    (['--shape', '64', '64', '--repeats', '0'], '--repeats must be >= 1'),
    (['--shape', '64'], 'expected 2 arguments'),
])
def test_bad_arguments_name_the_option(args, match):
    result = subprocess.run(
        [sys.executable, TOOL, 'configs/toy/upernet_r18-carafe_toy.py'] + args,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120)
    assert result.returncode == 2
    assert re.search(match, result.stderr), result.stderr
