"""The focal loss family.

* Sigmoid focal loss (Lin et al., RetinaNet): ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``.
* Generalized focal loss (Li et al., NeurIPS 2020, "Generalized Focal Loss: Learning Qualified
  and Distributed Bounding Boxes"): the quality focal loss (QFL), a focal loss with a soft
  target ``y`` in [0, 1] (the IoU of the predicted box for a positive, 0 otherwise),
  ``QFL(sigma) = -|y - sigma|^beta ((1 - y) log(1 - sigma) + y log(sigma))``, and the
  distribution focal loss (DFL) on a discretised box side, ``DFL(S_i, S_i+1) =
  -((y_i+1 - y) log S_i + (y - y_i) log S_i+1)`` for a target ``y`` between the bins
  ``y_i <= y <= y_i+1``.
"""
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


def quality_focal_loss(logits: torch.Tensor, labels: torch.Tensor, quality: torch.Tensor,
                       beta: float = 2.0) -> torch.Tensor:
    """Per-prior QFL (GFL paper, eq. 5), summed over the classes.

    Args:
        logits: (N, C) raw class scores (one sigmoid per class, no background logit).
        labels: (N,) int64 class of each prior; ``C`` (or any value outside ``[0, C)``) is
            background.
        quality: (N,) soft target of the labelled class (the IoU of a positive's predicted
            box with its gt box); ignored for background priors.
        beta: modulating exponent (2 in the paper).

    Returns:
        (N,) loss, unreduced: every class of every prior is a negative with target 0
        (``BCE(x, 0) * sigma^beta``) except the labelled class of a positive
        (``BCE(x, y) * |y - sigma|^beta``).
    """
    num_classes = logits.shape[1]
    prob = logits.sigmoid()
    positive = (labels >= 0) & (labels < num_classes)
    targets = torch.zeros_like(logits)
    rows = positive.nonzero(as_tuple=True)[0]
    targets[rows, labels[rows]] = quality[rows].to(logits.dtype)
    is_target = torch.zeros_like(logits, dtype=torch.bool)
    is_target[rows, labels[rows]] = True
    modulator = torch.where(is_target, (targets - prob).abs(), prob).pow(beta)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
    return (ce * modulator).sum(dim=1)


def distribution_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-side DFL (GFL paper, eq. 6).

    Args:
        logits: (N, n + 1) raw scores over the bins ``0, 1, ..., n`` of one box side.
        target: (N,) float distances in ``[0, n)`` (bin units: the side's distance over the
            level's stride).

    Returns:
        (N,) the cross-entropy with the two bins around the target, weighted by closeness:
        ``(y_r - y) CE(logits, y_l) + (y - y_l) CE(logits, y_r)``, ``y_l = floor(y)``.
    """
    left = target.long()
    right = left + 1
    weight_left = right.to(target.dtype) - target
    weight_right = target - left.to(target.dtype)
    return (F.cross_entropy(logits, left, reduction='none') * weight_left
            + F.cross_entropy(logits, right, reduction='none') * weight_right)


@MODELS.register_module()
class QualityFocalLoss(nn.Module):
    """Registered wrapper of :func:`quality_focal_loss`; ``target`` is the pair
    ``(labels (N,), quality (N,))``, ``weight`` (N,) per prior (beta 2 by default)."""

    def __init__(self, beta: float = 2.0, reduction: str = 'mean', loss_weight: float = 1.0):
        super().__init__()
        self.beta = beta
        self.reduction, self.loss_weight = reduction, loss_weight

    def forward(self, logits, target, weight=None, avg_factor=None):
        labels, quality = target
        loss = quality_focal_loss(logits, labels, quality, self.beta)
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)


@MODELS.register_module()
class DistributionFocalLoss(nn.Module):
    """Registered wrapper of :func:`distribution_focal_loss` (GFL: loss weight 0.25)."""

    def __init__(self, reduction: str = 'mean', loss_weight: float = 1.0):
        super().__init__()
        self.reduction, self.loss_weight = reduction, loss_weight

    def forward(self, logits, target, weight=None, avg_factor=None):
        loss = distribution_focal_loss(logits, target)
        return self.loss_weight * weight_reduce_loss(loss, weight, self.reduction, avg_factor)
