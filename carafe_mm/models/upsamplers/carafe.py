"""CARAFE: the kernel prediction module + content-aware reassembly.

Shape letters: N batch, C channels, C_m compressed channels, G groups,
H×W input size, s scale factor, k = up_kernel.
"""
import torch.nn as nn
from mmengine.registry import MODELS

from .base import check_int
from .reassembly import ReassemblyUpsampler


@MODELS.register_module()
class CARAFE(ReassemblyUpsampler):
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
        super().__init__(channels, scale_factor, up_kernel, up_group,
                         normalizer, init_cfg)
        self.encoder_kernel = check_int(
            'encoder_kernel', encoder_kernel, odd=True)
        self.encoder_dilation = check_int('encoder_dilation', encoder_dilation)
        self.compressed_channels = check_int('compressed_channels',
                                             compressed_channels)
        self.channel_compressor = nn.Conv2d(channels, self.compressed_channels,
                                            1)
        self.content_encoder = nn.Conv2d(
            self.compressed_channels,
            self.encoded_channels,
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

    def encode(self, x):
        # (N, C_m, H, W) -> (N, G·s²·k², H, W)
        return self.content_encoder(self.channel_compressor(x))
