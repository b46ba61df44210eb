"""Box regression losses: L1, smooth L1 (on encoded deltas), GIoU and bounded IoU (on decoded
boxes)."""
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


def bounded_iou_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 0.2,
                     eps: float = 1e-3) -> torch.Tensor:
    """(N, 4) bounded IoU loss of paired ``xyxy`` boxes (Tychsen-Smith & Petersson 2018).

    With centre offsets ``dx, dy`` (target minus prediction) and sizes ``w, h``, each term
    bounds the IoU along one coordinate (the target is a constant: no gradient):

    * ``dx: 1 - max((w_t - 2 |dx|) / (w_t + 2 |dx| + eps), 0)`` (``dy`` with ``h_t``),
    * ``dw: 1 - min(w_t / (w_p + eps), w_p / (w_t + eps))`` (``dh`` with ``h``),

    then smooth L1 with ``beta`` against 0: ``0.5 x^2 / beta`` if ``x < beta`` else
    ``x - 0.5 beta``. A perfect box gives ``O((eps / w)^2)``, 0 as ``eps -> 0``.
    """
    if pred.numel() == 0:
        return pred.new_zeros(pred.shape)
    pred_w, pred_h = pred[:, 2] - pred[:, 0], pred[:, 3] - pred[:, 1]
    pred_cx, pred_cy = pred[:, 0] + 0.5 * pred_w, pred[:, 1] + 0.5 * pred_h
    target = target.detach()
    target_w, target_h = target[:, 2] - target[:, 0], target[:, 3] - target[:, 1]
    target_cx, target_cy = target[:, 0] + 0.5 * target_w, target[:, 1] + 0.5 * target_h
    dx, dy = (target_cx - pred_cx).abs(), (target_cy - pred_cy).abs()
    loss_dx = 1 - ((target_w - 2 * dx) / (target_w + 2 * dx + eps)).clamp(min=0)
    loss_dy = 1 - ((target_h - 2 * dy) / (target_h + 2 * dy + eps)).clamp(min=0)
    loss_dw = 1 - torch.min(target_w / (pred_w + eps), pred_w / (target_w + eps))
    loss_dh = 1 - torch.min(target_h / (pred_h + eps), pred_h / (target_h + eps))
    terms = torch.stack([loss_dx, loss_dy, loss_dw, loss_dh], dim=-1)
    return torch.where(terms < beta, 0.5 * terms * terms / beta, terms - 0.5 * beta)


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


@MODELS.register_module()
class BoundedIoULoss(_BoxLoss):
    """:func:`bounded_iou_loss` on decoded ``xyxy`` boxes; (N, 4) values, per-coordinate
    weights (Guided Anchoring's shape loss: ``beta=0.2``, ``eps=1e-3``)."""

    def __init__(self, beta: float = 0.2, eps: float = 1e-3, reduction: str = 'mean',
                 loss_weight: float = 1.0):
        super().__init__(reduction, loss_weight)
        self.beta, self.eps = beta, eps

    def elementwise(self, pred, target):
        return bounded_iou_loss(pred, target, self.beta, self.eps)
