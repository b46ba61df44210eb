"""Box regression losses: L1, smooth L1 (on encoded deltas) and GIoU (on decoded boxes)."""
from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.ops import generalized_box_iou_loss

from toolbox.models.loss_utils import weight_reduce_loss
from toolbox.registry import MODELS


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Element-wise Huber form: ``0.5 x^2 / beta`` if ``|x| < beta`` else ``|x| - 0.5 beta``."""
    diff = (pred - target).abs()
    if beta <= 0:
        return diff
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) ``1 - GIoU`` of paired ``xyxy`` boxes (N, 4)."""
    if pred.numel() == 0:
        return pred.sum(-1)
    return generalized_box_iou_loss(pred, target, reduction='none')


class _BoxLoss(nn.Module):
    def __init__(self, reduction: str = 'mean', loss_weight: float = 1.0):
        super().__init__()
        self.reduction, self.loss_weight = reduction, loss_weight

    def forward(self, pred, target, weight=None, avg_factor=None):
        loss = self.elementwise(pred, target)
        if weight is not None and weight.dim() > loss.dim():
            weight = weight.mean(-1)  # per-coordinate weight of a per-box loss
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


@MODELS.register_module()
class L1Loss(_BoxLoss):
    """``|pred - target|`` element-wise."""

    def elementwise(self, pred, target):
        return (pred - target).abs()


@MODELS.register_module()
class SmoothL1Loss(_BoxLoss):
    """:func:`smooth_l1_loss` with ``beta`` (1.0 as in SSD/RefineDet; 1/9 in Fast R-CNN)."""

    def __init__(self, beta: float = 1.0, reduction: str = 'mean', loss_weight: float = 1.0):
        super().__init__(reduction, loss_weight)
        self.beta = beta

    def elementwise(self, pred, target):
        return smooth_l1_loss(pred, target, self.beta)


@MODELS.register_module()
class GIoULoss(_BoxLoss):
    """:func:`giou_loss` on decoded ``xyxy`` boxes; one value per box."""

    def elementwise(self, pred, target):
        return giou_loss(pred, target)
