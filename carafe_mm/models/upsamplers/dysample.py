"""DySample: upsampling by learned sampling positions.

Shape letters: N batch, C channels, g offset groups, H×W input size,
s scale factor.
"""
import torch
import torch.nn as nn
from mmengine.registry import MODELS

from .base import (BaseUpsampler, check_bool, check_divisible, check_int,
                   pixel_shuffle)
from .sampling import sample_with_offsets

STYLES = ('lp', 'pl')


@MODELS.register_module()
class DySample(BaseUpsampler):
    """DySample (Liu, Lu, Fu, Cao, `Learning to Upsample by Learning to
    Sample <https://arxiv.org/abs/2308.15085>`_, ICCV 2023).

    Offsets O for every output pixel and channel group come from a linear
    layer (1×1 conv) and ``pixel_shuffle``; the output is ``grid_sample`` of
    each group of C/g channels at the output grid plus O. With O = 0 the
    sampling positions are those of bilinear upsampling (the paper's
    "initial sampling position"), so a fresh DySample, whose offset layer
    starts near zero, is bilinear upsampling.

    * style 'lp' (linear, then pixel shuffle): conv C -> 2·g·s² at low
      resolution, then ``pixel_shuffle(s)``;
    * style 'pl' (pixel shuffle, then linear): ``pixel_shuffle(s)`` of x
      (C/s² channels at high resolution), then conv C/s² -> 2·g.

    The offsets (in input pixels) are multiplied by 0.25 (static scope), or
    by 0.5·sigmoid of a second linear layer of the same shape (dynamic
    scope, ``dyscope=True``; it starts at 0, i.e. a factor 0.25).

    Args:
        channels (int): C.
        scale_factor (int): s. Defaults to 2.
        style (str): 'lp' (default) or 'pl'. 'pl' needs C divisible by s².
        groups (int): g, a divisor of C. Defaults to 4.
        dyscope (bool): dynamic scope. Defaults to False.
        init_cfg (dict, optional): see :class:`BaseUpsampler`.
    """

    def __init__(self,
                 channels,
                 scale_factor=2,
                 style='lp',
                 groups=4,
                 dyscope=False,
                 init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg)
        if style not in STYLES:
            raise ValueError(f'style must be one of {STYLES}, but got '
                             f'{style!r}')
        self.style = style
        self.groups = check_int('groups', groups)
        check_divisible('channels', self.channels, 'groups', self.groups)
        self.dyscope = check_bool('dyscope', dyscope)
        s2 = self.scale_factor**2
        if style == 'pl':
            check_divisible('channels', self.channels, 'scale_factor**2', s2)
            in_channels, out_channels = channels // s2, 2 * self.groups
        else:
            in_channels, out_channels = channels, 2 * self.groups * s2
        self.offset = nn.Conv2d(in_channels, out_channels, 1)
        self.scope = (
            nn.Conv2d(in_channels, out_channels, 1) if self.dyscope else None)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.offset.weight, std=0.001)
        nn.init.zeros_(self.offset.bias)
        if self.scope is not None:
            nn.init.zeros_(self.scope.weight)
            nn.init.zeros_(self.scope.bias)

    def _scaled_offsets(self, x):
        offsets = self.offset(x)
        if self.scope is None:
            return offsets * 0.25
        return offsets * torch.sigmoid(self.scope(x)) * 0.5

    def forward(self, x):
        self.check_input(x)
        s = self.scale_factor
        if self.style == 'pl':
            # (N, C/s², sH, sW) -> (N, 2g, sH, sW)
            offsets = self._scaled_offsets(pixel_shuffle(x, s))
        else:
            # (N, 2g·s², H, W) -> (N, 2g, sH, sW)
            offsets = pixel_shuffle(self._scaled_offsets(x), s)
        return sample_with_offsets(x, offsets, s)

    def extra_repr(self):
        return (f'{super().extra_repr()}, style={self.style!r}, '
                f'groups={self.groups}, dyscope={self.dyscope}')
