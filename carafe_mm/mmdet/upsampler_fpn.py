"""FPN whose top-down upsampling is any registered upsampler."""
from mmdet.models.necks import FPN_CARAFE
from mmdet.registry import MODELS
from mmengine.model import ModuleList

from carafe_mm.models.alignment import match_size


@MODELS.register_module()
class UpsamplerFPN(FPN_CARAFE):
    """mmdet's ``FPN_CARAFE`` with any upsampler of carafe_mm's zoo in the
    top-down pathway (`CARAFE <https://arxiv.org/abs/1905.02188>`_, Sec. 4.1).

    The architecture and parameter names are those of ``FPN_CARAFE`` (extra
    levels from a stride-2 3×3 conv on the last backbone level, inside the
    top-down path; one upsampler per top-down step, ``upsample_modules.i``),
    so that, configured like mmdet's ``configs/carafe`` models, the official
    CARAFE checkpoints load with ``strict=True``. Only the construction of
    the upsamplers differs (mmdet accepts only a fixed list of mmcv names),
    and sizes: the upsampled map is cropped, or padded by replicating its
    last row / column, to the lateral's size, so any input size works
    (``FPN_CARAFE`` needs ``pad_size_divisor=64``).

    Args:
        in_channels (list[int]): channels of each backbone level.
        out_channels (int): channels of the pyramid.
        num_outs (int): number of output levels.
        upsample_cfg (dict): the upsampler, e.g. ``dict(type='CARAFE',
            up_kernel=5)``; ``channels`` and ``scale_factor=2`` are filled
            in. Defaults to CARAFE.
        **kwargs: the other arguments of ``FPN_CARAFE`` (start_level,
            end_level, norm_cfg, act_cfg, order).
    """

    def __init__(self,
                 in_channels,
                 out_channels,
                 num_outs,
                 upsample_cfg=dict(type='CARAFE'),
                 **kwargs):
        if not isinstance(upsample_cfg, dict) or 'type' not in upsample_cfg:
            raise ValueError('upsample_cfg must be a dict with a type (an '
                             'upsampler of carafe_mm), but got '
                             f'{upsample_cfg!r}')
        # FPN_CARAFE builds parameter-free nearest upsamplers, replaced below.
        super().__init__(
            in_channels,
            out_channels,
            num_outs,
            upsample_cfg=dict(type='nearest'),
            **kwargs)
        self.upsample_cfg = dict(upsample_cfg)
        self.upsample = upsample_cfg['type']
        self.upsample_modules = ModuleList(
            MODELS.build(
                dict(self.upsample_cfg, channels=out_channels, scale_factor=2))
            for _ in range(len(self.upsample_modules)))

    def init_weights(self):
        # FPN_CARAFE Xavier-initialises every conv, the upsamplers' too;
        # give them back their own initialisation.
        super().init_weights()
        for module in self.upsample_modules:
            module.init_weights()

    def tensor_add(self, a, b):
        """``a + b``, with b cropped or edge-padded to a's size."""
        return a + match_size(b, a.shape[2:])
