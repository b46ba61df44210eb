"""A third-party plugin: registers into the toolbox's registries, never a scope of its own.

It uses only the toolbox's public pieces: ``BaseBackbone`` (the feature contract),
``weight_reduce_loss`` (the reduction every loss shares) and the ``MODELS`` registry.
"""
from __future__ import annotations

import torch
from torch import nn

from toolbox.models.bases import BaseBackbone
from toolbox.models.loss_utils import weight_reduce_loss
from toolbox.registry import MODELS


@MODELS.register_module()
class TinyConvBackbone(BaseBackbone):
    """Two stride-2 conv stages: (B, C, H, W) -> ((B, 16, H/2, W/2), (B, 32, H/4, W/4)).

    Built on the toolbox's ``BaseBackbone``, which gives it the feature contract
    (``out_indices``, ``out_channels``, ``strides``), ``frozen_stages``, ``norm_eval`` and
    ``pretrained`` / ``init_cfg`` loading in ``init_weights()``.

    Args:
        in_channels: channels of the input image.
        out_indices: stages to return (0: stride 2, 1: stride 4), ascending.
        frozen_stages: -1 freezes nothing, k the stages 0..k (numbered as ``out_indices``).
        pretrained, init_cfg: see ``BaseBackbone``.
    """

    def __init__(self, in_channels: int = 3, out_indices=(0, 1), frozen_stages: int = -1,
                 pretrained=None, init_cfg=None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         pretrained=pretrained, init_cfg=init_cfg)
        self.check_out_indices(2)
        if not -1 <= frozen_stages <= 1:
            raise ValueError(f'frozen_stages must be in -1..1, got {frozen_stages}')
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 2, 1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.out_channels = tuple((16, 32)[i] for i in self.out_indices)
        self.strides = tuple((2, 4)[i] for i in self.out_indices)
        self.freeze_stages()  # the convs keep PyTorch's default initialisation

    def frozen_modules(self):
        return [self.stage1, self.stage2][:self.frozen_stages + 1]

    def forward(self, x):
        c1 = self.stage1(x)
        feats = (c1, self.stage2(c1))
        return tuple(feats[i] for i in self.out_indices)


@MODELS.register_module()
class ScaledL1Loss(nn.Module):
    """``loss_weight * |pred - target|``, reduced as every toolbox loss is.

    The loss contract (docs/plugins.md): a detection head calls
    ``loss(pred, target, weight=None, avg_factor=None)`` with ``pred`` and ``target`` of the
    same shape (box losses: (P, 4) encoded deltas of the P positive priors), ``weight``
    broadcastable to them ((P, 4) or (P,) per box), and ``avg_factor`` the number the sum is
    divided by instead of the element count (the positives of the batch). Reduction:
    ``'mean'`` (``sum / avg_factor``, or the plain mean without one), ``'sum'``, ``'none'``.

    Args:
        reduction: ``'mean'``, ``'sum'`` or ``'none'``.
        loss_weight: factor of the reduced loss.
    """

    def __init__(self, reduction: str = 'mean', loss_weight: float = 1.0):
        super().__init__()
        self.reduction = reduction
        self.loss_weight = loss_weight

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None, avg_factor: float | None = None
                ) -> torch.Tensor:
        loss = torch.abs(pred - target)
        if weight is not None and weight.dim() < loss.dim():
            weight = weight.unsqueeze(-1)  # one weight per box for its 4 coordinates
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)
