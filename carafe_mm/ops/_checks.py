"""Argument checks of the CARAFE op, shared by the pure-PyTorch reference and
the fake (meta) kernel of the compiled op.

They mirror ``carafe_mm/csrc/carafe.cpp`` message for message: a bad argument
raises ``ValueError`` (shapes and values) or ``TypeError`` (dtypes) naming
the argument and what was expected. ``torch._check_*`` keeps them traceable
by FakeTensor and ``torch.compile``.
"""
import operator

import torch

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
INT64_MAX = 2**63 - 1


def as_int(name, value):
    """Return ``value`` as a Python int, or raise ``TypeError`` naming it."""
    if isinstance(value, bool):
        raise TypeError(f'carafe: {name} must be an integer, but got {value}')
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f'carafe: {name} must be an integer, but got '
                        f'{type(value).__name__} {value!r}') from None
    if value > INT64_MAX:  # the op's schema takes int64
        raise ValueError(
            f'carafe: {name} must be at most 2**63 - 1, but got {value}')
    if value < -INT64_MAX - 1:
        raise ValueError(
            f'carafe: {name} must be a positive integer, but got {value}')
    return value


def check_carafe_args(features, masks, kernel_size, group_size, scale_factor):
    """Check the arguments of ``carafe(features, masks, kernel_size,
    group_size, scale_factor)``; see :func:`carafe_mm.ops.carafe`."""
    for name, tensor in (('features', features), ('masks', masks)):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f'carafe: {name} must be a torch.Tensor, but got '
                            f'{type(tensor).__name__}')
    torch._check_value(
        features.dim() == 4, lambda: 'carafe: features must be a 4-D tensor '
        f'(N, C, H, W), but got a {features.dim()}-D tensor')
    torch._check_value(
        masks.dim() == 4, lambda: 'carafe: masks must be a 4-D tensor '
        '(N, group_size * kernel_size**2, scale_factor * H, '
        f'scale_factor * W), but got a {masks.dim()}-D tensor')
    torch._check_value(
        kernel_size >= 1 and kernel_size % 2 == 1,
        lambda: 'carafe: kernel_size must be a positive odd integer, but got '
        f'{kernel_size}')
    torch._check_value(
        group_size >= 1, lambda: 'carafe: group_size must be a positive '
        f'integer, but got {group_size}')
    torch._check_value(
        scale_factor >= 1, lambda: 'carafe: scale_factor must be a positive '
        f'integer, but got {scale_factor}')
    torch._check_type(
        features.dtype in _DTYPES, lambda: 'carafe: features must be '
        f'float32, float64, float16 or bfloat16, but got {features.dtype}')
    torch._check_type(
        masks.dtype == features.dtype, lambda: 'carafe: masks must have the '
        f'same dtype as features ({features.dtype}), but got {masks.dtype}')
    torch._check_value(
        masks.device == features.device, lambda: 'carafe: masks must be on '
        f'the same device as features ({features.device}), but got '
        f'{masks.device}')
    n, c, h, w = features.shape
    torch._check_value(
        c % group_size == 0, lambda: 'carafe: the channels of features '
        f'(C = {c}) must be divisible by group_size ({group_size})')
    torch._check_value(
        masks.shape[0] == n, lambda: 'carafe: masks must have the same batch '
        f'size as features ({n}), but got {masks.shape[0]}')
    mask_channels = group_size * kernel_size * kernel_size
    torch._check_value(
        mask_channels <= INT64_MAX,
        lambda: 'carafe: group_size * kernel_size**2 must be at most '
        f'2**63 - 1, but got group_size = {group_size}, kernel_size = '
        f'{kernel_size}')
    torch._check_value(
        masks.shape[1] == mask_channels,
        lambda: 'carafe: masks must have group_size * kernel_size**2 = '
        f'{mask_channels} channels, but got {masks.shape[1]}')
    torch._check_value(
        masks.shape[2] == scale_factor * h
        and masks.shape[3] == scale_factor * w,
        lambda: _size_message(masks, h, w, scale_factor))


def _size_message(masks, h, w, s):
    if max(s * h, s * w) > INT64_MAX:
        return (f'carafe: scale_factor ({s}) times the spatial size of '
                f'features ({h}, {w}) must be at most 2**63 - 1')
    return (f'carafe: masks must be scale_factor ({s}) times the spatial '
            f'size of features, ({s * h}, {s * w}), but got '
            f'({masks.shape[2]}, {masks.shape[3]})')


def check_carafe_backward_args(grad_output, features, masks, kernel_size,
                               group_size, scale_factor):
    """Check the arguments of the backward op (``grad_output`` first)."""
    check_carafe_args(features, masks, kernel_size, group_size, scale_factor)
    torch._check_type(
        grad_output.dtype == features.dtype,
        lambda: 'carafe: grad_output must have the same dtype as features '
        f'({features.dtype}), but got {grad_output.dtype}')
    torch._check_value(
        grad_output.device == features.device,
        lambda: 'carafe: grad_output must be on the same device as features '
        f'({features.device}), but got {grad_output.device}')
    n, c, h, w = features.shape
    expected = (n, c, scale_factor * h, scale_factor * w)
    torch._check_value(
        tuple(grad_output.shape) == expected,
        lambda: 'carafe: grad_output must have the shape of the output '
        f'{list(expected)}, but got {list(grad_output.shape)}')
