"""Sigmoid focal loss (Lin et al., RetinaNet): FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from toolbox.models.loss_utils import weight_reduce_loss
from toolbox.registry import MODELS


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
                       alpha: float = 0.25) -> torch.Tensor:
    """Element-wise focal loss.

    Args:
        logits: (N, C) raw scores, one sigmoid per class (no background logit).
        targets: (N, C) one-hot float targets, or (N,) int64 labels with ``C`` meaning
            background (converted to one-hot without the background column).
    Returns:
        (N, C) loss, unreduced; ``alpha < 0`` disables the alpha weighting.
    """
    if targets.dim() == 1:
        targets = F.one_hot(targets, logits.shape[1] + 1)[:, :-1].to(logits.dtype)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


@MODELS.register_module()
class FocalLoss(nn.Module):
    """Registered wrapper of :func:`sigmoid_focal_loss` (gamma 2, alpha 0.25 by default)."""

    def __init__(self, gamma: float = 2.0, alpha: float = 0.25, reduction: str = 'mean',
                 loss_weight: float = 1.0):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha
        self.reduction, self.loss_weight = reduction, loss_weight

    def forward(self, logits, targets, weight=None, avg_factor=None):
        loss = sigmoid_focal_loss(logits, targets, self.gamma, self.alpha)
        if weight is not None and weight.dim() == 1:
            weight = weight[:, None]
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)
