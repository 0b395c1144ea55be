"""CARAFE: the kernel prediction module + content-aware reassembly.

Shape letters: N batch, C channels, C_m compressed channels, G groups,
H×W input size, s scale factor, k = up_kernel.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS

from carafe_mm.ops import carafe
from .base import BaseUpsampler, check_divisible, check_int, pixel_shuffle

NORMALIZERS = ('softmax', 'sigmoid', 'sigmoid_normalized')


@MODELS.register_module()
class CARAFE(BaseUpsampler):
    """CARAFE upsampler (`CARAFE: Content-Aware ReAssembly of FEatures
    <https://arxiv.org/abs/1905.02188>`_, ICCV 2019).

    A channel compressor (1×1 conv, C -> C_m) and a content encoder
    (k_enc×k_enc conv, C_m -> G·s²·k²) predict a k×k kernel for every output
    pixel; the kernels are spread to space with ``pixel_shuffle(s)`` and
    normalised; the op reassembles the k×k neighbourhood of each source pixel
    with them. The sub-modules and options keep the names of mmcv's
    ``CARAFEPack``, so its state dicts load with ``strict=True``.

    Args:
        channels (int): C.
        scale_factor (int): s. Defaults to 2.
        up_kernel (int): k, odd. Defaults to 5.
        up_group (int): G, a divisor of C. Defaults to 1.
        encoder_kernel (int): k_enc, odd. Defaults to 3.
        encoder_dilation (int): dilation of the content encoder. Defaults
            to 1.
        compressed_channels (int): C_m. Defaults to 64.
        normalizer (str | None): the kernel normaliser of the paper's
            Table 10: 'softmax' (default) over the k² taps; 'sigmoid' on each
            tap; 'sigmoid_normalized', sigmoid then divided by the sum over
            the taps; None leaves the kernels as predicted.
        init_cfg (dict, optional): see :class:`BaseUpsampler`.
    """

    def __init__(self,
                 channels,
                 scale_factor=2,
                 up_kernel=5,
                 up_group=1,
                 encoder_kernel=3,
                 encoder_dilation=1,
                 compressed_channels=64,
                 normalizer='softmax',
                 init_cfg=None):
        super().__init__(channels, scale_factor, init_cfg)
        self.up_kernel = check_int('up_kernel', up_kernel, odd=True)
        self.up_group = check_int('up_group', up_group)
        check_divisible('channels', self.channels, 'up_group', self.up_group)
        self.encoder_kernel = check_int(
            'encoder_kernel', encoder_kernel, odd=True)
        self.encoder_dilation = check_int('encoder_dilation', encoder_dilation)
        self.compressed_channels = check_int('compressed_channels',
                                             compressed_channels)
        if normalizer is not None and normalizer not in NORMALIZERS:
            raise ValueError(f'normalizer must be one of {NORMALIZERS} or '
                             f'None, but got {normalizer!r}')
        self.normalizer = normalizer
        self.channel_compressor = nn.Conv2d(channels, self.compressed_channels,
                                            1)
        self.content_encoder = nn.Conv2d(
            self.compressed_channels,
            self.up_group * self.scale_factor**2 * self.up_kernel**2,
            self.encoder_kernel,
            padding=(self.encoder_kernel - 1) * self.encoder_dilation // 2,
            dilation=self.encoder_dilation)
        self.reset_parameters()

    def reset_parameters(self):
        # As mmcv's CARAFEPack: Xavier (uniform) everywhere, then the content
        # encoder near zero, so that a fresh CARAFE is a uniform k×k average.
        for conv in (self.channel_compressor, self.content_encoder):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.content_encoder.weight, std=0.001)

    def normalize(self, kernels):
        """(N, G·k², sH, sW) raw kernels -> normalised kernels."""
        if self.normalizer is None:
            return kernels
        n, _, h, w = kernels.shape
        # (N, G, k², sH, sW)
        kernels = kernels.reshape(n, self.up_group, self.up_kernel**2, h, w)
        if self.normalizer == 'softmax':
            kernels = F.softmax(kernels, dim=2)
        else:
            kernels = torch.sigmoid(kernels)
            if self.normalizer == 'sigmoid_normalized':
                kernels = kernels / kernels.sum(dim=2, keepdim=True)
        return kernels.reshape(n, self.up_group * self.up_kernel**2, h, w)

    def kernels(self, x):
        """The normalised reassembly kernels, (N, G·k², sH, sW)."""
        # (N, G·s²·k², H, W)
        kernels = self.content_encoder(self.channel_compressor(x))
        # (N, G·k², sH, sW)
        kernels = pixel_shuffle(kernels, self.scale_factor)
        return self.normalize(kernels)

    def forward(self, x):
        self.check_input(x)
        return carafe(x, self.kernels(x), self.up_kernel, self.up_group,
                      self.scale_factor)

    def extra_repr(self):
        return (f'{super().extra_repr()}, up_kernel={self.up_kernel}, '
                f'up_group={self.up_group}, normalizer={self.normalizer!r}')
