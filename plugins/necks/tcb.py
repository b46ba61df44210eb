"""Transfer connection block (TCB) of RefineDet (Zhang et al. 2018), a top-down neck.

Per level l, from the coarsest to the finest (reference/ANCHORS.md 2.3)::

    lateral_l = conv3x3(relu(conv3x3(C_l)))                 # conv-relu-conv, no relu yet
    lateral_l = lateral_l + deconv2x2_s2(P_{l+1})           # all but the coarsest level
    P_l       = relu(conv3x3(relu(lateral_l)))              # relu, conv-relu

The parameters match the RefineDet PyTorch port (``tcb0`` = ``laterals``, ``tcb1`` =
``upsamples``, ``tcb2`` = ``outs``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from toolbox.registry import MODELS


@MODELS.register_module()
class TCB(nn.Module):
    """Transfer connection blocks over a list of levels, finest first.

    Args:
        in_channels: channels of each input level (RefineDet VGG16: 512, 512, 1024, 512).
        out_channels: channels of every output level (256).

    Shapes: ``forward(feats)`` takes a sequence of (B, in_channels[l], H_l, W_l) with
    ``H_l = 2 H_{l+1}`` (or ``2 H_{l+1} + 1``: the deconvolved map is zero-padded at the
    bottom/right to the finer size) and returns a tuple of (B, out_channels, H_l, W_l).
    ``self.out_channels`` (one entry per level, as FPN's) and ``self.strides`` (the
    ``in_strides``, when given) describe them.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256,
                 in_strides: Sequence[int] | None = None):
        super().__init__()
        in_channels = tuple(in_channels)
        if not in_channels:
            raise ValueError('TCB needs at least one input level')
        if in_strides is not None and len(in_strides) != len(in_channels):
            raise ValueError(f'in_strides {tuple(in_strides)} and in_channels {in_channels} '
                             f'differ in length')
        self.in_channels = in_channels
        self.out_channels = (out_channels,) * len(in_channels)
        self.strides = tuple(in_strides) if in_strides is not None else None
        self.laterals = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, 3, padding=1), nn.ReLU(inplace=True),
                          nn.Conv2d(out_channels, out_channels, 3, padding=1))
            for c in in_channels)
        # upsamples[l] brings level l + 1 to level l
        self.upsamples = nn.ModuleList(
            nn.ConvTranspose2d(out_channels, out_channels, 2, stride=2)
            for _ in range(len(in_channels) - 1))
        self.outs = nn.ModuleList(
            nn.Sequential(nn.ReLU(inplace=False), nn.Conv2d(out_channels, out_channels, 3,
                                                            padding=1), nn.ReLU(inplace=True))
            for _ in in_channels)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> tuple[Tensor, ...]:
        if len(feats) != len(self.laterals):
            raise ValueError(f'TCB was built for {len(self.laterals)} levels, got {len(feats)}')
        outs: list[Tensor] = [None] * len(feats)  # type: ignore[list-item]
        coarser = None
        for level in reversed(range(len(feats))):
            x = self.laterals[level](feats[level])
            if coarser is not None:
                up = self.upsamples[level](coarser)
                dh, dw = x.shape[-2] - up.shape[-2], x.shape[-1] - up.shape[-1]
                if dh or dw:
                    if not (0 <= dh <= 1 and 0 <= dw <= 1):
                        raise ValueError(f'TCB level {level} is {tuple(x.shape[-2:])}, the level '
                                         f'above upsamples to {tuple(up.shape[-2:])}: levels '
                                         f'must halve in size')
                    up = F.pad(up, (0, dw, 0, dh))
                x = x + up
            coarser = self.outs[level](x)
            outs[level] = coarser
        return tuple(outs)
