"""The upsampler zoo: registration, shapes, gradients, mmcv compatibility,
the properties each method's paper states, and complexity accounting."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

import carafe_mm.models  # noqa: F401  (registers the upsamplers)
from carafe_mm.models import (A2U, CARAFE, GUM, UPSAMPLERS, Deconv, DySample,
                              SpatialAttention)
from carafe_mm.models.upsamplers.a2u import per_sample_depthwise
from carafe_mm.ops import carafe_reference

# Options that make every upsampler valid for the channel counts used below.
SMALL = dict(
    CARAFE=dict(compressed_channels=8),
    GUM=dict(guide_channels=8),
    SpatialAttention=dict(compressed_channels=8),
    DySample=dict(groups=2))


def build(registry, name, channels=16, scale_factor=2, **options):
    cfg = dict(type=name, channels=channels, scale_factor=scale_factor)
    cfg.update(SMALL.get(name, {}))
    cfg.update(options)
    return registry.build(cfg)


@pytest.fixture(scope='module', params=['mmdet', 'mmseg', 'mmengine'])
def registry(request):
    """The MODELS registry of each library: the upsamplers live in
    mmengine's root registry, which mmdet's and mmseg's inherit from."""
    if request.param == 'mmdet':
        from mmdet.registry import MODELS
    elif request.param == 'mmseg':
        from mmseg.registry import MODELS
    else:
        from mmengine.registry import MODELS
    return MODELS


def test_the_zoo_is_complete():
    assert set(UPSAMPLERS) == {
        'Nearest', 'Bilinear', 'NearestConv', 'BilinearConv', 'Deconv',
        'PixelShuffle', 'GUM', 'SpatialAttention', 'CARAFE', 'DySample', 'A2U'
    }


@pytest.mark.parametrize('name', UPSAMPLERS)
@pytest.mark.parametrize('scale_factor', [2, 4])
def test_shapes_and_gradients(registry, name, scale_factor):
    torch.manual_seed(0)
    model = build(registry, name, scale_factor=scale_factor)
    x = torch.randn(2, 16, 5, 7, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 16, 5 * scale_factor, 7 * scale_factor)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(out).all()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f'{name}.{pname} got no gradient'
        assert torch.isfinite(param.grad).all(), f'{name}.{pname}'
        assert param.grad.abs().sum() > 0, f'{name}.{pname} grad is zero'


@pytest.mark.parametrize('name', UPSAMPLERS)
def test_empty_batch(name):
    """A mask head with no RoIs calls the upsampler on an empty batch."""
    from mmengine.registry import MODELS
    model = build(MODELS, name)
    x = torch.randn(0, 16, 14, 14, requires_grad=True)
    out = model(x)
    assert out.shape == (0, 16, 28, 28)
    out.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize('name', UPSAMPLERS)
def test_wrong_input_channels(name):
    from mmengine.registry import MODELS
    model = build(MODELS, name)
    with pytest.raises(
            ValueError,
            match=r'expected an \(N, 16, H, W\) '
            r'input, but got shape \(1, 8, 4, 4\)'):
        model(torch.zeros(1, 8, 4, 4))


@pytest.mark.parametrize('name', UPSAMPLERS)
@pytest.mark.parametrize('x,error,match', [
    (torch.zeros(1, 16, 0, 4), ValueError,
     r'expected an input of H, W >= 1, but got shape \(1, 16, 0, 4\)'),
    (torch.zeros(1, 16, 4, 4, dtype=torch.int64), TypeError,
     'expected a floating-point input, but got torch.int64'),
    ([[0.0]], TypeError, 'expected a torch.Tensor input, but got list'),
])
def test_bad_inputs(name, x, error, match):
    from mmengine.registry import MODELS
    with pytest.raises(error, match=f'{name}: {match}'):
        build(MODELS, name)(x)


@pytest.mark.parametrize('name,option', [('DySample', 'dyscope'),
                                         ('A2U', 'share_uv')])
@pytest.mark.parametrize('value', ['False', 'no', 1, None])
def test_flags_must_be_bool(name, option, value):
    from mmengine.registry import MODELS
    with pytest.raises(
            TypeError, match=f'{option} must be True or False, but got'):
        build(MODELS, name, **{option: value})


@pytest.mark.parametrize('name', UPSAMPLERS)
@pytest.mark.parametrize('option,value,error,match', [
    ('scale_factor', 0, ValueError, 'scale_factor must be >= 1, but got 0'),
    ('channels', 0, ValueError, 'channels must be >= 1, but got 0'),
    ('scale_factor', 1.5, TypeError,
     'scale_factor must be an integer, but got float 1.5'),
])
def test_bad_common_options(name, option, value, error, match):
    from mmengine.registry import MODELS
    with pytest.raises(error, match=match):
        build(MODELS, name, **{option: value})


@pytest.mark.parametrize('name,options,match', [
    ('CARAFE', dict(up_kernel=4), 'up_kernel must be odd, but got 4'),
    ('CARAFE', dict(encoder_kernel=2), 'encoder_kernel must be odd'),
    ('CARAFE', dict(up_group=3),
     r'channels \(16\) must be divisible by up_group \(3\)'),
    ('CARAFE', dict(normalizer='tanh'),
     r"normalizer must be one of \('softmax', 'sigmoid', "
     r"'sigmoid_normalized'\) or None, but got 'tanh'"),
    ('A2U', dict(up_kernel=2), 'up_kernel must be odd, but got 2'),
    ('A2U', dict(up_group=5), r'channels \(16\) must be divisible by '
     r'up_group \(5\)'),
    ('DySample', dict(groups=3), r'channels \(16\) must be divisible by '
     r'groups \(3\)'),
    ('DySample', dict(style='xy'), "style must be one of"),
    ('DySample', dict(style='pl', scale_factor=3),
     r'channels \(16\) must be divisible by scale_factor\*\*2 \(9\)'),
    ('PixelShuffle', dict(kernel_size=2), 'kernel_size must be odd'),
    ('Deconv', dict(kernel_size=0), 'kernel_size must be >= 1'),
    ('SpatialAttention', dict(up_group=7), r'channels \(16\) must be '
     r'divisible by up_group \(7\)'),
])
def test_bad_options(name, options, match):
    from mmengine.registry import MODELS
    with pytest.raises(ValueError, match=match):
        build(MODELS, name, **options)


# ---------------------------------------------------------------------------
# CARAFE


@pytest.mark.parametrize('options', [
    dict(),
    dict(
        up_kernel=3,
        up_group=2,
        encoder_kernel=5,
        encoder_dilation=2,
        compressed_channels=32),
    dict(scale_factor=4, up_kernel=7),
])
def test_loads_mmcv_carafepack_and_matches(options):
    """An mmcv CARAFEPack state dict loads strictly and gives the same
    output. mmcv's op has no CPU kernel, so its masks come from its own
    sub-modules and kernel_normalizer, and the reassembly from the
    reference."""
    from mmcv.ops import CARAFEPack
    torch.manual_seed(0)
    scale_factor = options.pop('scale_factor', 2)
    pack = CARAFEPack(64, scale_factor, **options)
    for p in pack.parameters():  # leave the near-zero init behind
        nn.init.normal_(p, std=0.05)
    ours = CARAFE(64, scale_factor, **options)
    ours.load_state_dict(pack.state_dict(), strict=True)
    x = torch.randn(2, 64, 9, 11)
    with torch.no_grad():
        masks = pack.kernel_normalizer(
            pack.content_encoder(pack.channel_compressor(x)))
        expected = carafe_reference(x, masks, pack.up_kernel, pack.up_group,
                                    scale_factor)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-5)
    assert set(ours.state_dict()) == set(pack.state_dict())


@pytest.mark.parametrize('normalizer',
                         ['softmax', 'sigmoid', 'sigmoid_normalized', None])
def test_kernel_normalizers(normalizer):
    """Table 10: softmax and normalised sigmoid kernels sum to 1 over the
    k² taps; sigmoid kernels lie in (0, 1)."""
    torch.manual_seed(0)
    model = CARAFE(
        16, 2, up_group=2, compressed_channels=8, normalizer=normalizer)
    nn.init.normal_(model.content_encoder.weight, std=0.1)
    kernels = model.kernels(torch.randn(2, 16, 5, 6))
    assert kernels.shape == (2, 2 * 25, 10, 12)
    per_group = kernels.view(2, 2, 25, 10, 12)
    if normalizer in ('softmax', 'sigmoid_normalized'):
        torch.testing.assert_close(per_group.sum(2), torch.ones(2, 2, 10, 12))
    elif normalizer == 'sigmoid':
        assert ((per_group > 0) & (per_group < 1)).all()
        assert not torch.allclose(per_group.sum(2), torch.ones(1))
    else:
        assert (per_group < 0).any()  # raw kernels


def test_fresh_carafe_is_a_uniform_average():
    """With the content encoder at zero, every kernel is uniform: CARAFE is
    a k×k box filter followed by nearest upsampling."""
    model = CARAFE(8, 2, compressed_channels=4)
    nn.init.zeros_(model.content_encoder.weight)
    x = torch.randn(1, 8, 6, 5)
    box = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True)
    torch.testing.assert_close(model(x), F.interpolate(box, scale_factor=2))
    # and the default init is close to that
    fresh = CARAFE(8, 2, compressed_channels=4)
    assert fresh.content_encoder.weight.std() < 0.002


def test_carafe_torch_compile_fullgraph():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = CARAFE(16, 2, compressed_channels=8)
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(2, 16, 7, 5)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


class _Parent(BaseModule):
    """A neck-like parent whose init_cfg re-initialises every Conv2d."""

    def __init__(self, upsampler):
        super().__init__(
            init_cfg=dict(
                type='Xavier', layer='Conv2d', distribution='uniform'))
        self.upsampler = upsampler


def test_init_weights_survives_parent_init_cfg():
    parent = _Parent(CARAFE(64, 2))
    parent.init_weights()
    assert parent.upsampler.content_encoder.weight.std() < 0.002


# ---------------------------------------------------------------------------
# the other learned upsamplers


def test_spatial_attention_starts_as_nearest():
    model = SpatialAttention(8, 3, compressed_channels=4)
    nn.init.zeros_(model.content_encoder.weight)
    x = torch.randn(2, 8, 4, 5)
    torch.testing.assert_close(model(x), F.interpolate(x, scale_factor=3))


@pytest.mark.parametrize('scale_factor', [2, 3])
def test_zero_offsets_are_bilinear(scale_factor):
    x = torch.randn(2, 8, 5, 7)
    expected = F.interpolate(
        x, scale_factor=scale_factor, mode='bilinear', align_corners=False)
    gum = GUM(8, scale_factor, guide_channels=4)
    nn.init.zeros_(gum.guide[2].weight)
    models = [gum]
    for style in ('lp', 'pl'):
        for dyscope in (False, True):
            channels = 8 if style == 'lp' else 8 * scale_factor**2
            dy = DySample(
                channels, scale_factor, style=style, groups=2, dyscope=dyscope)
            nn.init.zeros_(dy.offset.weight)
            models.append(dy)
    for model in models:
        xin = x if model.channels == 8 else x.repeat(1, scale_factor**2, 1, 1)
        exp = expected if model.channels == 8 else expected.repeat(
            1, scale_factor**2, 1, 1)
        torch.testing.assert_close(model(xin), exp, rtol=1e-5, atol=1e-5)


def test_dysample_groups_use_their_own_offsets():
    """Shifting group 1's offsets by one input pixel in x moves only the
    channels of group 1."""
    model = DySample(8, 2, groups=2)
    nn.init.zeros_(model.offset.weight)
    with torch.no_grad():
        # channels (2j + d)·s² + p of the low-res offsets: group 1, dx
        model.offset.bias[(2 * 1 + 0) * 4:(2 * 1 + 0) * 4 + 4] = 4.0
    x = torch.arange(8 * 4 * 6, dtype=torch.float32).view(1, 8, 4, 6)
    out = model(x)
    bilinear = F.interpolate(
        x, scale_factor=2, mode='bilinear', align_corners=False)
    torch.testing.assert_close(out[:, :4], bilinear[:, :4])
    # 4.0 × 0.25 (static scope) = one input pixel to the right
    shifted = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)
    expected = F.interpolate(
        shifted, scale_factor=2, mode='bilinear', align_corners=False)
    # (away from the left and right borders, where clamping differs)
    torch.testing.assert_close(out[:, 4:, :, 1:-2], expected[:, 4:, :, 1:-2])


def test_a2u_depthwise_matches_a_loop():
    x = torch.randn(3, 4, 6, 5)
    filters = torch.randn(3, 4 * 2, 3, 3)
    out = per_sample_depthwise(x, filters)
    for n in range(3):
        expected = F.conv2d(
            x[n:n + 1], filters[n].view(8, 1, 3, 3), padding=1, groups=4)
        torch.testing.assert_close(out[n:n + 1], expected)


def test_a2u_kernels_and_fresh_average():
    torch.manual_seed(0)
    model = A2U(16, 2, up_group=2, rank=2)
    nn.init.normal_(model.projection.weight, std=0.5)
    kernels = model.kernels(torch.randn(2, 16, 5, 6))
    assert kernels.shape == (2, 2 * 25, 10, 12)
    torch.testing.assert_close(
        kernels.view(2, 2, 25, 10, 12).sum(2), torch.ones(2, 2, 10, 12))
    shared = A2U(16, 2, share_uv=True)
    assert shared.v_generator is None
    assert sum(p.numel() for p in shared.parameters()) < sum(
        p.numel() for p in A2U(16, 2).parameters())
    nn.init.zeros_(shared.projection.weight)
    x = torch.randn(1, 16, 6, 5)
    box = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=True)
    torch.testing.assert_close(shared(x), F.interpolate(box, scale_factor=2))


@pytest.mark.parametrize(
    'kernel_size,scale_factor',
    [(k, s) for k in (1, 2, 3, 4, 5)
     for s in (1, 2, 3, 4) if not (s == 1 and k % 2 == 0)])
def test_deconv_output_size(kernel_size, scale_factor):
    model = Deconv(4, scale_factor, kernel_size=kernel_size)
    assert model(torch.randn(1, 4, 5, 3)).shape == (1, 4, 5 * scale_factor,
                                                    3 * scale_factor)


def test_deconv_even_kernel_without_upsampling():
    with pytest.raises(
            ValueError, match='kernel_size must be odd when '
            'scale_factor is 1'):
        Deconv(4, 1, kernel_size=2)


# ---------------------------------------------------------------------------
# complexity


def test_complexity_counts_the_op():
    """CARAFE(256, 2): 74,148 parameters and 99,584 MACs per input pixel
    (the paper's 74k and 199k FLOPs): compressor 256·64, encoder 9·64·100,
    reassembly 4·25·256."""
    from mmengine.analysis import get_model_complexity_info
    model = CARAFE(256, 2)
    info = get_model_complexity_info(
        model,
        inputs=(torch.randn(1, 256, 8, 8), ),
        show_table=False,
        show_arch=False)
    assert info['params'] == 256 * 64 + 64 + 64 * 100 * 9 + 100 == 74148
    assert info['flops'] == 64 * (256 * 64 + 9 * 64 * 100 + 4 * 25 * 256)
    deconv = get_model_complexity_info(
        Deconv(256, 2),
        inputs=(torch.randn(1, 256, 8, 8), ),
        show_table=False,
        show_arch=False)
    assert deconv['flops'] == 64 * 9 * 256 * 256  # 1180k FLOPs per pixel


def test_sampling_positions_are_float32_in_bfloat16():
    """On a wide map, bf16 sampling positions would be off by pixels; they
    are computed in float32 whatever the input dtype."""
    x = torch.randn(1, 8, 3, 400).bfloat16()
    model = DySample(8, 2, groups=2).bfloat16()
    nn.init.zeros_(model.offset.weight)
    out = model(x)
    assert out.dtype == torch.bfloat16
    expected = F.interpolate(
        x.float(), scale_factor=2, mode='bilinear', align_corners=False)
    torch.testing.assert_close(out.float(), expected, rtol=0.01, atol=0.02)


def test_init_cfg_is_reapplied_after_a_parent_init():
    model = CARAFE(
        16,
        2,
        compressed_channels=4,
        init_cfg=dict(type='Constant', val=0.5, layer='Conv2d'))
    model.init_weights()
    nn.init.zeros_(model.content_encoder.weight)  # a parent's init
    model.init_weights()
    assert (model.content_encoder.weight == 0.5).all()
