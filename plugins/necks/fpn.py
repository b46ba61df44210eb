"""Feature Pyramid Network (Lin et al. 2017) with mmdet's semantics and parameter names.

Every conv is an mmcv ``ConvModule`` without activation, so keys are ``lateral_convs.{i}.conv.*``
and ``fpn_convs.{i}.conv.*`` (norms, when configured, ``.bn`` / ``.gn``) and mmdet FPN
checkpoints load without renaming.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import Tensor, nn

from toolbox.models.layers import resolve_norm_cfg
from toolbox.registry import MODELS


@MODELS.register_module()
class FPN(nn.Module):
    """Top-down feature pyramid with lateral 1x1 and output 3x3 convs, plus extra levels.

    Input: the backbone's tuple of maps, one per entry of ``in_channels`` (finest first).
    Output: ``num_outs`` maps of ``out_channels`` channels, finest first. Levels
    ``start_level..end_level`` of the input get a lateral conv; the rest up to ``num_outs``
    are extra levels, each half the size of the previous one:

    * ``add_extra_convs=False``: max-pool (kernel 1, stride 2) of the last output;
    * otherwise a 3x3 stride-2 conv; the first one reads the last used input
      (``'on_input'``), its lateral (``'on_lateral'``) or its output (``'on_output'``); the
      next ones read the previous extra level, through a ReLU if ``relu_before_extra_convs``.
      ``True`` means ``'on_input'``.

    RetinaNet: ``in_channels=[256, 512, 1024, 2048], start_level=1, add_extra_convs='on_input',
    num_outs=5`` gives P3..P7. Faster R-CNN: ``start_level=0, num_outs=5`` gives P2..P6.

    Args:
        in_channels: channels of each input level.
        out_channels: channels of every output level.
        num_outs: number of output levels.
        start_level: first input level used.
        end_level: last input level used (inclusive); -1 means the last one. When it is not
            the last level, ``num_outs`` must equal the number of used levels.
        add_extra_convs: False, True, 'on_input', 'on_lateral' or 'on_output'.
        relu_before_extra_convs: apply ReLU before the 2nd and later extra convs.
        upsample_cfg: ``F.interpolate`` keywords for the top-down path. Without
            ``scale_factor``, the coarser map is resized to the finer map's size.
        norm_cfg: norm config for every conv (see
            :func:`toolbox.models.layers.build_norm_layer`); ``None`` means convs with bias and
            no norm (with a norm the convs have no bias).
        in_strides: strides of the input levels; when given, ``self.strides`` declares the
            stride of each output.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 out_channels: int,
                 num_outs: int,
                 start_level: int = 0,
                 end_level: int = -1,
                 add_extra_convs: bool | str = False,
                 relu_before_extra_convs: bool = False,
                 upsample_cfg: dict | None = None,
                 norm_cfg: dict | None = None,
                 in_strides: Sequence[int] | None = None):
        super().__init__()
        in_channels = list(in_channels)
        num_ins = len(in_channels)
        if not 0 <= start_level < num_ins:
            raise ValueError(f'start_level {start_level} is outside the {num_ins} input levels')
        if end_level == -1 or end_level == num_ins - 1:
            backbone_end_level = num_ins
            if num_outs < num_ins - start_level:
                raise ValueError(f'num_outs={num_outs} is smaller than the number of used input '
                                 f'levels ({num_ins - start_level})')
        else:
            if not start_level <= end_level < num_ins:
                raise ValueError(f'end_level {end_level} must be in {start_level}..{num_ins - 1}')
            backbone_end_level = end_level + 1
            if num_outs != end_level - start_level + 1:
                raise ValueError(f'with end_level={end_level}, num_outs must be '
                                 f'{end_level - start_level + 1}, got {num_outs}')
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs not in (False, 'on_input', 'on_lateral', 'on_output'):
            raise ValueError(f"add_extra_convs must be False, True, 'on_input', 'on_lateral' or "
                             f"'on_output', got {add_extra_convs!r}")
        if in_strides is not None and len(in_strides) != num_ins:
            raise ValueError(f'in_strides needs {num_ins} entries, got {tuple(in_strides)}')

        self.in_channels = in_channels
        self.num_ins = num_ins
        self.num_outs = num_outs
        self.start_level = start_level
        self.backbone_end_level = backbone_end_level
        self.add_extra_convs = add_extra_convs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = dict(upsample_cfg or dict(mode='nearest'))

        if norm_cfg is not None:
            norm_cfg = resolve_norm_cfg(norm_cfg, spatial_dims=2)
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(start_level, backbone_end_level):
            self.lateral_convs.append(ConvModule(in_channels[i], out_channels, 1,
                                                 norm_cfg=norm_cfg, act_cfg=None))
            self.fpn_convs.append(ConvModule(out_channels, out_channels, 3, padding=1,
                                             norm_cfg=norm_cfg, act_cfg=None))
        num_used = backbone_end_level - start_level
        if add_extra_convs:
            for i in range(num_outs - num_used):
                extra_in = in_channels[backbone_end_level - 1] \
                    if i == 0 and add_extra_convs == 'on_input' else out_channels
                self.fpn_convs.append(ConvModule(extra_in, out_channels, 3, stride=2, padding=1,
                                                 norm_cfg=norm_cfg, act_cfg=None))

        self.out_channels = (out_channels,) * num_outs
        if in_strides is not None:
            used = list(in_strides[start_level:backbone_end_level])
            extra = [used[-1] * 2 ** (k + 1) for k in range(num_outs - num_used)]
            self.strides = tuple(used + extra)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmdet's FPN init: Xavier-uniform conv weights, zero biases (replacing the Kaiming
        init each ConvModule gives itself at construction)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Tuple of (B, in_channels[i], H_i, W_i) -> tuple of num_outs (B, out_channels, h, w)."""
        if len(inputs) != self.num_ins:
            raise ValueError(f'FPN expects {self.num_ins} input levels, got {len(inputs)}')
        laterals = [conv(inputs[i + self.start_level])
                    for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:],
                                   **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up
        num_used = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(num_used)]

        if self.num_outs > num_used:
            if not self.add_extra_convs:
                for _ in range(self.num_outs - num_used):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {'on_input': inputs[self.backbone_end_level - 1],
                          'on_lateral': laterals[-1],
                          'on_output': outs[-1]}[self.add_extra_convs]
                outs.append(self.fpn_convs[num_used](source))
                for i in range(num_used + 1, self.num_outs):
                    prev = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](prev))
        return tuple(outs)
