"""Channel mapper: one conv per input level to a common width (DETR's 1x1 ``input_proj``)."""
from __future__ import annotations

from collections.abc import Sequence

from mmcv.cnn import ConvModule
from torch import Tensor, nn

from toolbox.models.layers import resolve_norm_cfg
from toolbox.registry import MODELS


@MODELS.register_module()
class ChannelMapper(nn.Module):
    """Map each input level (B, in_channels[i], H_i, W_i) to (B, out_channels, H_i, W_i).

    Each level gets an mmcv ``ConvModule`` (key ``convs.{i}.conv``) with ``kernel_size`` and
    "same" padding; without a norm the conv has a bias. DETR: ``in_channels=[2048],
    out_channels=256, kernel_size=1``, no norm, no activation.

    Args:
        in_channels: channels of each input level.
        out_channels: channels of every output.
        kernel_size: conv kernel (odd).
        norm_cfg: norm after each conv (``None``: none, conv with bias).
        act_cfg: activation after each conv (``None``: none).
        in_strides: strides of the input levels; when given, ``self.strides`` declares them.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, kernel_size: int = 1,
                 norm_cfg: dict | None = None, act_cfg: dict | None = None,
                 in_strides: Sequence[int] | None = None):
        super().__init__()
        self.convs = nn.ModuleList(
            ConvModule(c, out_channels, kernel_size, padding=kernel_size // 2,
                       norm_cfg=resolve_norm_cfg(norm_cfg) if norm_cfg else None,
                       act_cfg=act_cfg)
            for c in in_channels)
        self.out_channels = (out_channels,) * len(self.convs)
        self.strides = tuple(in_strides) if in_strides is not None else None

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Tuple of maps, one per ``in_channels`` entry -> tuple of ``out_channels`` maps."""
        if len(feats) != len(self.convs):
            raise ValueError(f'ChannelMapper has {len(self.convs)} input levels, got '
                             f'{len(feats)} maps')
        return tuple(conv(x) for conv, x in zip(self.convs, feats))
