"""ONNX export: the op's translation against the compiled op (both
exporters, dynamic N, H, W), every upsampler of the zoo, and the mmdet /
mmseg integrations at sizes other than the export's, in onnxruntime; the
graphs hold standard operators only."""
import itertools
import os.path as osp

import pytest
import torch

from carafe_mm.deploy import (check_onnx, compare_with_onnxruntime,
                              export_onnx, exportable)
from carafe_mm.deploy.wrappers import CarafeOp
from carafe_mm.ops import carafe, carafe_matmul, extension_available
from carafe_mm.ops.onnx import MIN_OPSET, OP_NAME
from .utils import REPO

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

needs_op = pytest.mark.skipif(
    not extension_available(), reason='carafe_mm._C is not built')

# (N, H, W): the export size first, then two others
OP_SIZES = [(2, 5, 6), (1, 3, 4), (3, 8, 7)]
COMBOS = list(itertools.product((1, 3, 5, 7), (1, 2, 4), (1, 2, 3, 4)))
# torch.export costs about a second per graph, and the graph's operators are
# the same for every (k, G, s): the default exporter runs on 12 combinations
# that hold every (k, G) pair and every s three times (the legacy exporter
# and the eager formulation take all 48).
DYNAMO_COMBOS = [(k, g, (i + j) % 4 + 1) for i, k in enumerate((1, 3, 5, 7))
                 for j, g in enumerate((1, 2, 4))]


def op_inputs(size, k, g, s, channels=4, seed=0):
    n, h, w = size
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(n, channels, h, w, generator=gen)
    masks = torch.randn(n, g * k * k, s * h, s * w, generator=gen)
    return features, masks


def run_onnx(path, *inputs):
    session = ort.InferenceSession(
        str(path), providers=['CPUExecutionProvider'])
    names = [i.name for i in session.get_inputs()]
    outs = session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})
    return [torch.from_numpy(out) for out in outs]


def assert_matches_op(path, k, g, s):
    """The ONNX file against the compiled op at the export size and two
    others."""
    for size in OP_SIZES:
        features, masks = op_inputs(size, k, g, s, seed=sum(size))
        want = carafe(features, masks, k, g, s)
        (got, ) = run_onnx(path, features, masks)
        assert got.shape == want.shape
        err = (got - want).abs().max() / want.abs().max()
        assert err <= 1e-5, f'size {size}: relative error {err:.2e}'


@needs_op
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('k,g,s', COMBOS)
def test_matmul_formulation_matches_op(k, g, s, dtype):
    for size in OP_SIZES:
        features, masks = (
            x.to(dtype) for x in op_inputs(size, k, g, s, seed=sum(size)))
        want = carafe(features, masks, k, g, s)
        got = carafe_matmul(features, masks, k, g, s)
        assert got.dtype == dtype
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        assert (got - want).abs().max() <= tol * want.abs().max()


@needs_op
@pytest.mark.parametrize('k,g,s,opset',
                         [(*c, 17) for c in COMBOS] + [(5, 2, 3, MIN_OPSET)])
def test_legacy_translation_matches_op(k, g, s, opset, tmp_path):
    path = str(tmp_path / 'op.onnx')
    axes = {0: 'n', 2: 'h', 3: 'w'}
    torch.onnx.export(
        CarafeOp(k, g, s),
        op_inputs(OP_SIZES[0], k, g, s),
        path,
        dynamo=False,
        opset_version=opset,
        input_names=['features', 'masks'],
        dynamic_axes=dict(features=axes, masks=axes))
    model = check_onnx(path)
    assert 'Conv' in {node.op_type for node in model.graph.node}
    assert_matches_op(path, k, g, s)


@needs_op
@pytest.mark.parametrize('k,g,s', DYNAMO_COMBOS)
def test_dynamo_translation_matches_op(k, g, s, tmp_path):
    path = str(tmp_path / 'op.onnx')
    dims = {i: torch.export.Dim.DYNAMIC for i in (0, 2, 3)}
    torch.onnx.export(
        CarafeOp(k, g, s).eval(),
        op_inputs(OP_SIZES[0], k, g, s),
        path,
        dynamo=True,
        dynamic_shapes=(dims, dims),
        verbose=False)
    check_onnx(path)
    assert_matches_op(path, k, g, s)


@needs_op
def test_outside_onnx_export_the_compiled_op_stays():
    inputs = op_inputs(OP_SIZES[0], 3, 2, 2)
    program = torch.export.export(CarafeOp(3, 2, 2), inputs)
    targets = {node.target for node in program.graph.nodes}
    assert torch.ops.carafe_mm.carafe_forward.default in targets
    # such a program exports once the op is decomposed
    program = program.run_decompositions(
        {torch.ops.carafe_mm.carafe_forward.default: carafe_matmul})
    assert torch.ops.carafe_mm.carafe_forward.default not in {
        node.target
        for node in program.graph.nodes
    }


@needs_op
@pytest.mark.parametrize('opset', [9, MIN_OPSET - 1])
def test_legacy_opset_too_old_names_the_op(opset, tmp_path):
    with pytest.raises(Exception, match=f'{OP_NAME}.*opset {MIN_OPSET}'):
        torch.onnx.export(
            CarafeOp(3, 1, 2),
            op_inputs(OP_SIZES[0], 3, 1, 2),
            str(tmp_path / 'op.onnx'),
            dynamo=False,
            opset_version=opset)


def test_check_onnx_refuses_custom_domains(tmp_path):
    from onnx import TensorProto, helper
    node = helper.make_node('CARAFE', ['x'], ['y'], domain='carafe_mm')
    graph = helper.make_graph(
        [node], 'g',
        [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1])])
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid('', 17),
            helper.make_opsetid('carafe_mm', 1)
        ])
    path = str(tmp_path / 'custom.onnx')
    onnx.save(model, path)
    with pytest.raises(ValueError, match='carafe_mm::CARAFE'):
        check_onnx(path)


UPSAMPLERS = [
    dict(type='Nearest'),
    dict(type='Bilinear'),
    dict(type='NearestConv'),
    dict(type='BilinearConv'),
    dict(type='Deconv'),
    dict(type='Deconv', kernel_size=2),
    dict(type='PixelShuffle'),
    dict(type='GUM', guide_channels=8),
    dict(type='SpatialAttention', compressed_channels=8),
    dict(type='CARAFE', compressed_channels=8),
    dict(type='CARAFE', compressed_channels=8, normalizer='sigmoid'),
    dict(
        type='CARAFE', compressed_channels=8, normalizer='sigmoid_normalized'),
    dict(type='CARAFE', compressed_channels=8, normalizer=None, up_group=2),
    dict(type='CARAFE', compressed_channels=8, up_kernel=3, scale_factor=3),
    dict(type='DySample'),
    dict(type='DySample', style='pl'),
    dict(type='DySample', dyscope=True),
    dict(type='A2U'),
    dict(type='A2U', share_uv=True, rank=2),
]


def _id(cfg):
    return '-'.join(f'{v}' for v in cfg.values())


def assert_close_in_onnxruntime(module, path, shapes):
    rows = compare_with_onnxruntime(module, path, shapes, repeats=1)
    for row in rows:
        assert row['max_rel'] <= 1e-5, row


@pytest.mark.parametrize('cfg', UPSAMPLERS, ids=_id)
def test_every_upsampler_exports(cfg, tmp_path):
    from mmengine.registry import MODELS

    import carafe_mm.models  # noqa: F401
    torch.manual_seed(0)
    up = MODELS.build(dict({'scale_factor': 2, **cfg}, channels=16)).eval()
    with torch.no_grad():  # away from the near-identity initialisation
        for param in up.parameters():
            param.add_(0.1 * torch.randn_like(param))
    path = str(tmp_path / 'up.onnx')
    with torch.no_grad():
        export_onnx(up, (torch.randn(1, 16, 6, 7), ), path, dynamic=True)
    check_onnx(path)
    assert_close_in_onnxruntime(
        up, path, [[(1, 16, 6, 7)], [(1, 16, 9, 4)], [(1, 16, 13, 17)]])


def build_toy(config):
    """The model of a toy config, its upsamplers moved away from their
    near-identity initialisation so that their kernels matter."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    from carafe_mm.models.upsamplers import BaseUpsampler
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'toy', config))
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, BaseUpsampler):
                for param in module.parameters():
                    param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def export_and_compare(module, example, path, others):
    with torch.no_grad():
        export_onnx(module, (torch.randn(example), ), path, dynamic=True)
    check_onnx(path)
    assert_close_in_onnxruntime(module, path,
                                [[example]] + [[s] for s in others])


def test_mask_rcnn_backbone_fpn_rpn_exports(tmp_path):
    model = build_toy('mask-rcnn_r18_fpn-carafe_toy.py')
    module, task = exportable(model)
    assert task == 'det'
    # 77×101: every level's size is odd, the FPN crops each upsampled map
    export_and_compare(module, (1, 3, 64, 96), str(tmp_path / 'det.onnx'),
                       [(1, 3, 77, 101)])


def test_upsampler_mask_head_exports(tmp_path):
    head = build_toy('mask-rcnn_r18_fpn-carafe_toy.py').roi_head.mask_head
    assert type(head).__name__ == 'UpsamplerMaskHead'
    assert type(head.upsample).__name__ == 'CARAFE'
    path = str(tmp_path / 'mask_head.onnx')
    dims = {i: torch.export.Dim.DYNAMIC for i in (0, 2, 3)}
    with torch.no_grad():
        torch.onnx.export(
            head, (torch.randn(3, 64, 14, 14), ),
            path,
            dynamo=True,
            dynamic_shapes=(dims, ),
            verbose=False)
    check_onnx(path)
    # other numbers of RoIs, and an odd RoI size
    assert_close_in_onnxruntime(
        head, path, [[(3, 64, 14, 14)], [(5, 64, 14, 14)], [(2, 64, 9, 11)]])


def test_upernet_with_carafe_everywhere_exports(tmp_path):
    model = build_toy('upernet_r18-carafe_toy.py')
    head = model.decode_head
    assert all(
        group is not None
        for group in (head.ppm_upsamplers, head.fpn_upsamplers,
                      head.fuse_upsamplers))
    module, task = exportable(model)
    assert task == 'seg'
    export_and_compare(module, (1, 3, 64, 96), str(tmp_path / 'seg.onnx'),
                       [(1, 3, 77, 59)])
