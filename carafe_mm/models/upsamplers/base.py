"""The interface every upsampler of carafe_mm follows.

Shape letters: N batch, C channels, H×W input size, s scale factor.
"""
import operator

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from carafe_mm.ops.carafe import is_tracing


def check_int(name, value, minimum=1, odd=False):
    """Return ``value`` as an int, or raise ``ValueError`` / ``TypeError``
    naming the option and what was expected."""
    if isinstance(value, bool):
        raise TypeError(f'{name} must be an integer, but got {value!r}')
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f'{name} must be an integer, but got '
                        f'{type(value).__name__} {value!r}') from None
    if value < minimum:
        raise ValueError(f'{name} must be >= {minimum}, but got {value}')
    if odd and value % 2 == 0:
        raise ValueError(f'{name} must be odd, but got {value}')
    return value


def check_bool(name, value):
    """Return ``value`` if it is a bool, else raise ``TypeError`` naming the
    option (a string such as ``'False'`` would otherwise count as True)."""
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, but got '
                        f'{type(value).__name__} {value!r}')
    return value


def check_divisible(name, value, divisor_name, divisor):
    if value % divisor != 0:
        raise ValueError(f'{name} ({value}) must be divisible by '
                         f'{divisor_name} ({divisor})')


def pixel_shuffle(x, scale_factor):
    """``F.pixel_shuffle`` as reshape and permute: the same channel order,
    (N, C·s², H, W) -> (N, C, sH, sW), and a backward that also handles the
    empty batch (torch's returns a gradient of the wrong shape for N = 0)."""
    n, c, h, w = x.shape
    s = scale_factor
    # (N, C, s, s, H, W) -> (N, C, H, s, W, s)
    x = x.reshape(n, c // (s * s), s, s, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // (s * s), h * s, w * s)


class BaseUpsampler(BaseModule):
    """Base class of the upsamplers: (N, C, H, W) -> (N, C, sH, sW).

    Every upsampler is registered once in mmengine's root ``MODELS`` registry
    (so mmdet and mmseg configs both find it) and is built as

    .. code-block:: python

        MODELS.build(dict(type=NAME, channels=C, scale_factor=s, **options))

    Its ``forward(x)`` takes an (N, C, H, W) tensor, any N >= 0 and H, W >= 1,
    and returns (N, C, sH, sW). Options are checked when the module is built,
    with errors that name the option. Parameters are initialised when the
    module is built (:meth:`reset_parameters`), and again by
    :meth:`init_weights`, so that a surrounding model's ``init_cfg`` (say
    FPN's Xavier init of every ``Conv2d``) does not overwrite an initialisation
    the method depends on, such as CARAFE's near-zero content encoder.

    Args:
        channels (int): C, the channels of the input and the output.
        scale_factor (int): s, the upsampling ratio. Defaults to 2.
        init_cfg (dict, optional): mmengine initialisation config; when given
            it replaces :meth:`reset_parameters` in :meth:`init_weights`.
            Defaults to None.

    Attributes:
        relu_in_mask_head (bool): whether a mask head applies its ReLU after
            this upsampler, as mmdet's ``FCNMaskHead`` does after its
            deconvolution (and after no other upsampler). False here; True
            for :class:`Deconv`.
    """

    relu_in_mask_head = False

    def __init__(self, channels, scale_factor=2, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.channels = check_int('channels', channels)
        self.scale_factor = check_int('scale_factor', scale_factor)

    def reset_parameters(self):
        """Initialise the parameters as the method prescribes."""

    def init_weights(self):
        if self.init_cfg:
            # Apply init_cfg again even if it was applied before: a parent's
            # initialisation may have overwritten it since.
            self._is_init = False
            super().init_weights()
        else:
            self.reset_parameters()

    def check_input(self, x):
        name = type(self).__name__
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'{name}: expected a torch.Tensor input, but got '
                            f'{type(x).__name__}')
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f'{name}: expected an (N, {self.channels}, H, W) input, but '
                f'got shape {tuple(x.shape)}')
        if not x.is_floating_point():
            raise TypeError(f'{name}: expected a floating-point input, but '
                            f'got {x.dtype}')
        if not is_tracing() and 0 in x.shape[2:]:
            raise ValueError(f'{name}: expected an input of H, W >= 1, but '
                             f'got shape {tuple(x.shape)}')

    def extra_repr(self):
        return f'channels={self.channels}, scale_factor={self.scale_factor}'


class InterpolateUpsampler(BaseUpsampler):
    """Fixed interpolation (``F.interpolate``), optionally followed by a 3×3
    convolution (the paper's N.C. and B.C. rows).

    Args:
        channels (int): C.
        scale_factor (int): s. Defaults to 2.
        mode (str): 'nearest' or 'bilinear' (``align_corners=False``).
        with_conv (bool): add a 3×3 C -> C convolution after the
            interpolation. Defaults to False.
        init_cfg (dict, optional): see :class:`BaseUpsampler`.
    """

    def __init__(self,
                 channels,
                 scale_factor=2,
                 mode='nearest',
                 with_conv=False,
                 init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg)
        if mode not in ('nearest', 'bilinear'):
            raise ValueError(f"mode must be 'nearest' or 'bilinear', but got "
                             f'{mode!r}')
        self.mode = mode
        self.conv = (
            nn.Conv2d(channels, channels, 3, padding=1) if check_bool(
                'with_conv', with_conv) else None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.conv is not None:
            nn.init.xavier_uniform_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)

    def forward(self, x):
        self.check_input(x)
        size = (self.scale_factor * x.shape[2], self.scale_factor * x.shape[3])
        out = F.interpolate(
            x,
            size=size,
            mode=self.mode,
            align_corners=False if self.mode == 'bilinear' else None)
        return out if self.conv is None else self.conv(out)
