"""Deformable convolution v1 (Dai et al. 2017) and v2 (modulated, Zhu et al. 2019).

Both are ``torchvision.ops.DeformConv2d`` (C++/CUDA ``deform_conv2d``) with the layer that
predicts their offsets attached, the "Pack" form of mmcv/mmdet:

* ``conv_offset``: ``nn.Conv2d(in_channels, deform_groups * c * k * k, k, stride, padding,
  dilation, bias=True)`` with c = 2 (v1: offsets) or 3 (v2: offsets and mask logits), applied
  to the same input and therefore producing one value per *output* position. It is
  zero-initialised, so at construction the sampling grid is the regular one: v1 equals a plain
  conv with the same weight, v2 equals half of it (mask ``sigmoid(0) = 0.5``).
* Channel layout of ``conv_offset``'s output (B, deform_groups * c * k * k, H_out, W_out):
  for v2 the first ``2 * dg * k * k`` channels are the offsets and the last ``dg * k * k`` the
  mask logits (mmcv's ``o1, o2, mask = chunk(3)``, ``offset = cat(o1, o2)``). Within the
  offsets, group g, kernel position p = i * k + j (row-major) has channels
  ``g * 2 * k * k + 2 * p`` (dy, rows) and ``... + 2 * p + 1`` (dx, columns): the layout
  ``torchvision.ops.deform_conv2d`` reads (checked by a test: a dx of +1 samples the next
  column), which is also the layout of mmcv's kernels, so mmcv/mmdet DCN checkpoints load by
  key name (``weight``, ``bias``, ``conv_offset.weight``, ``conv_offset.bias``) and mean the
  same.

:func:`build_conv` picks a plain ``nn.Conv2d`` or one of these from mmdet's ``dcn`` config
(``dict(type='DCN' | 'DCNv2', deform_groups=1)``); :func:`init_deform_convs` re-zeroes the
offset layers after a model-wide conv initialisation (which treats ``conv_offset``, an
``nn.Conv2d``, like every other conv).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torchvision.ops import DeformConv2d


def deform_conv_forward(layer: DeformConv2d, x: Tensor, offset: Tensor,
                        mask: Tensor | None = None) -> Tensor:
    """``DeformConv2d.forward(layer, x, offset, mask)``, in fp32 under CPU autocast.

    torchvision's CPU kernel has no bf16 version ("deformable_im2col" not implemented for
    'BFloat16') and CPU autocast does not cast for it, so bf16 training on a CPU stopped at the
    first deformable conv; on CUDA autocast already runs the op in fp32. Inputs are cast to
    fp32 here and the output is fp32 (the next layer's autocast casts it back)."""
    if x.device.type == 'cpu' and torch.is_autocast_enabled('cpu'):
        with torch.autocast('cpu', enabled=False):
            return DeformConv2d.forward(layer, x.float(), offset.float(),
                                        None if mask is None else mask.float())
    return DeformConv2d.forward(layer, x, offset, mask)


class DeformConv2dPack(DeformConv2d):
    """DCNv1: (B, in_channels, H, W) -> (B, out_channels, H_out, W_out), H_out as ``nn.Conv2d``.

    ``weight`` (out_channels, in_channels / groups, k, k) and ``bias`` (optional) as a conv;
    ``conv_offset`` predicts ``deform_groups * 2 * k * k`` offsets per output position (module
    docstring). ``in_channels`` must be divisible by ``deform_groups``.
    """

    offset_factor = 2  # channels per kernel position and deform group: (dy, dx)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
                 deform_groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        if deform_groups < 1 or in_channels % deform_groups:
            raise ValueError(f'{type(self).__name__}: in_channels ({in_channels}) must be '
                             f'divisible by deform_groups ({deform_groups})')
        self.deform_groups = deform_groups
        kh, kw = self.kernel_size
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * self.offset_factor * kh * kw,
                                     self.kernel_size, stride=self.stride, padding=self.padding,
                                     dilation=self.dilation, bias=True)
        self.init_offset()

    def init_offset(self) -> None:
        """Zero ``conv_offset`` (weight and bias): regular sampling grid, v2 mask 0.5."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        return deform_conv_forward(self, x, self.conv_offset(x))


class ModulatedDeformConv2dPack(DeformConv2dPack):
    """DCNv2: DCNv1 whose sampled values are also scaled by a learned mask in (0, 1).

    ``conv_offset`` predicts ``deform_groups * 3 * k * k`` channels per output position: the
    offsets (first two thirds) and the mask logits (last third, through a sigmoid).
    """

    offset_factor = 3  # (dy, dx) and a mask logit

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_offset(x)
        num_offsets = out.shape[1] * 2 // 3
        offset, mask = out[:, :num_offsets], out[:, num_offsets:].sigmoid()
        return deform_conv_forward(self, x, offset, mask)


DCN_TYPES = {'DCN': DeformConv2dPack, 'DCNv2': ModulatedDeformConv2dPack}


def build_conv(dcn: dict | None, in_channels: int, out_channels: int, kernel_size: int,
               stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1,
               bias: bool = False) -> nn.Module:
    """A plain ``nn.Conv2d`` (``dcn=None``) or the deformable conv named by ``dcn``.

    Args:
        dcn: ``None``, ``dict(type='DCN', deform_groups=1)`` (v1) or
            ``dict(type='DCNv2', deform_groups=1)`` (v2), mmdet's config names.
        Others: as ``nn.Conv2d``.
    """
    if dcn is None:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
    cfg = dict(dcn)
    conv_type = cfg.pop('type', None)
    if conv_type not in DCN_TYPES:
        raise ValueError(f'dcn type must be one of {list(DCN_TYPES)}, got {conv_type!r}')
    unknown = set(cfg) - {'deform_groups'}
    if unknown:
        raise ValueError(f'dcn config {dict(dcn)}: unknown keys {sorted(unknown)}; '
                         f'accepted: type, deform_groups')
    return DCN_TYPES[conv_type](in_channels, out_channels, kernel_size, stride=stride,
                                padding=padding, dilation=dilation, groups=groups, bias=bias,
                                **cfg)


def check_stage_with_dcn(dcn: dict | None, stage_with_dcn, owner: str) -> tuple[bool, ...]:
    """Validate a backbone's ``dcn`` / ``stage_with_dcn`` pair (4 bools; a ``dcn`` config
    exactly when at least one stage is selected); returns ``stage_with_dcn`` as a tuple.

    Raises:
        ValueError: naming ``owner`` and both options.
    """
    stage_with_dcn = tuple(stage_with_dcn)
    if len(stage_with_dcn) != 4 or not all(isinstance(s, bool) for s in stage_with_dcn):
        raise ValueError(f'{owner} stage_with_dcn needs 4 bools (one per stage), got '
                         f'{stage_with_dcn}')
    if (dcn is None) == any(stage_with_dcn):
        raise ValueError(f'{owner} dcn and stage_with_dcn must agree: dcn={dcn} with '
                         f'stage_with_dcn={stage_with_dcn} (give a dcn config and select at '
                         f'least one stage, or neither)')
    return stage_with_dcn


def init_deform_convs(modules: Iterable[nn.Module]) -> None:
    """Kaiming-normal (fan-out, ReLU gain) weight, zero bias and zero ``conv_offset`` for every
    deformable conv in ``modules`` (e.g. ``self.modules()``): the init
    :func:`~toolbox.models.bases.kaiming_init_conv_norm` gives a conv, without the offsets."""
    for m in modules:
        if isinstance(m, DeformConv2dPack):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            m.init_offset()
