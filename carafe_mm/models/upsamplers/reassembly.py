"""The shared part of the upsamplers that predict a k×k kernel per output
pixel and reassemble with the CARAFE op (CARAFE, SpatialAttention, A2U).

Shape letters: N batch, C channels, G groups, H×W input size, s scale
factor, k = up_kernel.
"""
import torch
import torch.nn.functional as F

from carafe_mm.ops import carafe
from .base import BaseUpsampler, check_divisible, check_int, pixel_shuffle

NORMALIZERS = ('softmax', 'sigmoid', 'sigmoid_normalized')


class ReassemblyUpsampler(BaseUpsampler):
    """Kernel prediction + content-aware reassembly.

    Subclasses implement :meth:`encode`, which predicts G·s²·k² values per
    input pixel; they are spread to space with ``pixel_shuffle(s)``,
    normalised over the k² taps of each group, and the op reassembles the
    k×k neighbourhood of every source pixel with them.

    Args:
        channels (int): C.
        scale_factor (int): s.
        up_kernel (int): k, odd.
        up_group (int): G, a divisor of C.
        normalizer (str | None): 'softmax' over the k² taps; 'sigmoid' on
            each tap; 'sigmoid_normalized', sigmoid then divided by the sum
            over the taps; None leaves the kernels as predicted.
        init_cfg (dict, optional): see :class:`BaseUpsampler`.
    """

    def __init__(self, channels, scale_factor, up_kernel, up_group, normalizer,
                 init_cfg):
        super().__init__(channels, scale_factor, init_cfg)
        self.up_kernel = check_int('up_kernel', up_kernel, odd=True)
        self.up_group = check_int('up_group', up_group)
        check_divisible('channels', self.channels, 'up_group', self.up_group)
        if normalizer is not None and normalizer not in NORMALIZERS:
            raise ValueError(f'normalizer must be one of {NORMALIZERS} or '
                             f'None, but got {normalizer!r}')
        self.normalizer = normalizer

    @property
    def encoded_channels(self):
        """G·s²·k², the channels :meth:`encode` predicts."""
        return self.up_group * self.scale_factor**2 * self.up_kernel**2

    def encode(self, x):
        """(N, C, H, W) -> (N, G·s²·k², H, W) raw kernels."""
        raise NotImplementedError

    def normalize(self, kernels):
        """(N, G·k², sH, sW) raw kernels -> normalised kernels."""
        if self.normalizer is None:
            return kernels
        n, _, h, w = kernels.shape
        k2 = self.up_kernel**2
        # (N, G, k², sH, sW)
        kernels = kernels.reshape(n, self.up_group, k2, h, w)
        if self.normalizer == 'softmax':
            kernels = F.softmax(kernels, dim=2)
        else:
            kernels = torch.sigmoid(kernels)
            if self.normalizer == 'sigmoid_normalized':
                kernels = kernels / kernels.sum(dim=2, keepdim=True)
        return kernels.reshape(n, self.up_group * k2, h, w)

    def kernels(self, x):
        """The normalised reassembly kernels, (N, G·k², sH, sW)."""
        return self.normalize(pixel_shuffle(self.encode(x), self.scale_factor))

    def forward(self, x):
        self.check_input(x)
        return carafe(x, self.kernels(x), self.up_kernel, self.up_group,
                      self.scale_factor)

    def extra_repr(self):
        return (f'{super().extra_repr()}, up_kernel={self.up_kernel}, '
                f'up_group={self.up_group}, normalizer={self.normalizer!r}')
