"""UperNet's decode head with learned upsamplers in PPM, FPN and FUSE.

``psp_forward`` and ``_forward_feature`` mirror those of mmseg 1.2.2's
``UPerHead`` (mmseg/models/decode_heads/uper_head.py), with each of its
three bilinear resizes going through a method of its own
(:meth:`UpsamplerUPerHead._ppm_upsample`, ``_fpn_upsample``,
``_fuse_upsample``); tests/test_segmentation.py checks that with no
upsamplers the head equals the installed mmseg's ``UPerHead``.

Shape letters: N batch, C channels of the head, H_i×W_i the size of level i
(i = 0 the finest, 1/4 of the image), s a pooling scale of the PPM.
"""
import torch
from mmengine.model import ModuleList
from mmseg.models.decode_heads import UPerHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS

from carafe_mm.models.alignment import match_size
from carafe_mm.models.pooling import adaptive_avg_pool2d
from carafe_mm.models.upsamplers import BaseUpsampler


def _check_cfg(name, cfg):
    if cfg is not None and (not isinstance(cfg, dict) or 'type' not in cfg):
        raise ValueError(f'{name} must be None or a dict with a type (an '
                         f'upsampler of carafe_mm), but got {cfg!r}')


@MODELS.register_module()
class UpsamplerUPerHead(UPerHead):
    """mmseg's ``UPerHead`` with any upsampler of carafe_mm's zoo in the
    three places of the CARAFE paper's UperNet experiment (`CARAFE
    <https://arxiv.org/abs/1905.02188>`_, Sec. 4.3, Table 6):

    * ``ppm_upsample_cfg``: the pooled 1×1 / 2×2 / 3×3 / 6×6 maps go back to
      the size of the last level; the factors are large and not integers,
      so, as in the paper, they are resized bilinearly to half that size
      (rounded up) and then upsampled 2× (and cropped for odd sizes);
    * ``fpn_upsample_cfg``: the 2× steps of the top-down pathway;
    * ``fuse_upsample_cfg``: instead of resizing levels 1, 2, 3 straight to
      level 0's size, a cascade of 1, 2, 3 steps of 2×, each aligned to the
      next finer level's size.

    Each is a config of an upsampler (``channels`` and ``scale_factor=2``
    are filled in), one module per branch / step, or None for mmseg's
    bilinear ``resize``: with all three None the head is ``UPerHead``,
    parameter for parameter and output for output. Any input size works:
    upsampled maps are cropped or edge-padded to their target's size.

    Args:
        ppm_upsample_cfg (dict, optional): the PPM's upsampler.
        fpn_upsample_cfg (dict, optional): the top-down pathway's.
        fuse_upsample_cfg (dict, optional): the fusion's.
        **kwargs: the arguments of ``UPerHead``.
    """

    def __init__(self,
                 ppm_upsample_cfg=None,
                 fpn_upsample_cfg=None,
                 fuse_upsample_cfg=None,
                 **kwargs):
        super().__init__(**kwargs)
        for name, cfg in (('ppm_upsample_cfg', ppm_upsample_cfg),
                          ('fpn_upsample_cfg', fpn_upsample_cfg),
                          ('fuse_upsample_cfg', fuse_upsample_cfg)):
            _check_cfg(name, cfg)
        self.ppm_upsample_cfg = ppm_upsample_cfg
        self.fpn_upsample_cfg = fpn_upsample_cfg
        self.fuse_upsample_cfg = fuse_upsample_cfg
        levels = len(self.in_channels)
        self.ppm_upsamplers = self._build(ppm_upsample_cfg,
                                          len(self.psp_modules.pool_scales))
        self.fpn_upsamplers = self._build(fpn_upsample_cfg, levels - 1)
        # fuse_upsamplers[i - 1][j]: step j of level i's cascade
        self.fuse_upsamplers = None if fuse_upsample_cfg is None else \
            ModuleList(self._build(fuse_upsample_cfg, i)
                       for i in range(1, levels))

    def _build(self, cfg, count):
        if cfg is None:
            return None
        return ModuleList(
            MODELS.build(dict(cfg, channels=self.channels, scale_factor=2))
            for _ in range(count))

    def init_weights(self):
        # Give the upsamplers their own initialisation after the head's.
        super().init_weights()
        for group in (self.ppm_upsamplers, self.fpn_upsamplers,
                      self.fuse_upsamplers):
            if group is not None:
                for module in group.modules():
                    if isinstance(module, BaseUpsampler):
                        module.init_weights()

    def _resize(self, x, size):
        return resize(
            x, size=size, mode='bilinear', align_corners=self.align_corners)

    def _ppm_upsample(self, i, pooled, size):
        """PPM branch i's (N, C, s, s) map to the last level's ``size``."""
        if self.ppm_upsamplers is None:
            return self._resize(pooled, size)
        # half the size, rounded up (integer arithmetic keeps it symbolic
        # under torch.export), then 2x
        half = ((size[0] + 1) // 2, (size[1] + 1) // 2)
        up = self.ppm_upsamplers[i](self._resize(pooled, half))
        return match_size(up, size)

    def _fpn_upsample(self, i, lateral, size):
        """Level i's lateral to level i - 1's ``size`` (top-down pathway)."""
        if self.fpn_upsamplers is None:
            return self._resize(lateral, size)
        return match_size(self.fpn_upsamplers[i - 1](lateral), size)

    def _fuse_upsample(self, i, out, sizes):
        """Level i's output to level 0's size: one resize, or i steps of 2x,
        step j aligned to level i - 1 - j's size (``sizes[i - 1 - j]``)."""
        if self.fuse_upsamplers is None:
            return self._resize(out, sizes[0])
        for step, upsampler in enumerate(self.fuse_upsamplers[i - 1]):
            out = match_size(upsampler(out), sizes[i - 1 - step])
        return out

    def psp_forward(self, inputs):
        x = inputs[-1]
        outs = [x]
        for i, branch in enumerate(self.psp_modules):
            # (N, C, s, s); the pooling is ours, which stays right at every
            # size of a graph exported with dynamic shapes
            pool, *layers = branch
            pooled = adaptive_avg_pool2d(x, pool.output_size)
            for layer in layers:
                pooled = layer(pooled)
            outs.append(self._ppm_upsample(i, pooled, x.shape[2:]))
        return self.bottleneck(torch.cat(outs, dim=1))

    def _forward_feature(self, inputs):
        inputs = self._transform_inputs(inputs)
        laterals = [
            lateral_conv(inputs[i])
            for i, lateral_conv in enumerate(self.lateral_convs)
        ]
        laterals.append(self.psp_forward(inputs))

        # top-down pathway
        levels = len(laterals)
        for i in range(levels - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._fpn_upsample(
                i, laterals[i], laterals[i - 1].shape[2:])

        outs = [self.fpn_convs[i](laterals[i]) for i in range(levels - 1)]
        outs.append(laterals[-1])

        # fusion at level 0's size
        sizes = [out.shape[2:] for out in outs]
        for i in range(levels - 1, 0, -1):
            outs[i] = self._fuse_upsample(i, outs[i], sizes)
        return self.fpn_bottleneck(torch.cat(outs, dim=1))
