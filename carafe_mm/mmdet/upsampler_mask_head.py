"""FCN mask head with any registered upsampler."""
from mmdet.models.roi_heads.mask_heads import FCNMaskHead
from mmdet.registry import MODELS


@MODELS.register_module()
class UpsamplerMaskHead(FCNMaskHead):
    """mmdet's ``FCNMaskHead`` with any upsampler of carafe_mm's zoo in
    place of the 2× deconvolution (`CARAFE
    <https://arxiv.org/abs/1905.02188>`_, Sec. 4.1).

    Parameter names are those of mmdet's CARAFE mask head (``upsample.*``),
    so official checkpoints load; mmdet's head accepts only a fixed list of
    mmcv names. Handles zero RoIs (an empty batch).

    Args:
        upsample_cfg (dict): the upsampler and its ``scale_factor``
            (default 2), e.g. ``dict(type='CARAFE', scale_factor=2)``;
            ``channels`` is filled in.
        relu_after_upsample (bool, optional): apply a ReLU after the
            upsampler, as mmdet does after its deconvolution. Defaults to
            None: the upsampler class's ``relu_in_mask_head`` (True only
            for ``Deconv`` and its subclasses).
        **kwargs: the other arguments of ``FCNMaskHead``.
    """

    def __init__(self,
                 upsample_cfg=dict(type='CARAFE', scale_factor=2),
                 relu_after_upsample=None,
                 **kwargs):
        if not isinstance(upsample_cfg, dict) or 'type' not in upsample_cfg:
            raise ValueError('upsample_cfg must be a dict with a type (an '
                             'upsampler of carafe_mm), but got '
                             f'{upsample_cfg!r}')
        # FCNMaskHead builds no upsampler for type None; ours replaces it.
        super().__init__(upsample_cfg=dict(type=None), **kwargs)
        cfg = dict(upsample_cfg)
        self.upsample_cfg = dict(upsample_cfg)
        self.upsample_method = cfg['type']
        self.scale_factor = cfg.pop('scale_factor', 2)
        channels = (
            self.conv_out_channels if self.num_convs > 0 else self.in_channels)
        self.upsample = MODELS.build(
            dict(cfg, channels=channels, scale_factor=self.scale_factor))
        self.relu_after_upsample = (
            getattr(self.upsample, 'relu_in_mask_head', False)
            if relu_after_upsample is None else bool(relu_after_upsample))

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        x = self.upsample(x)
        if self.relu_after_upsample:
            x = self.relu(x)
        return self.conv_logits(x)
