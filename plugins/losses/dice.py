"""Soft Dice loss and Dice + cross-entropy (the UNETR / MONAI training loss), 2D and 3D.

Both take ``logits`` (B, C, *spatial) and integer ``labels`` (B, *spatial), any number of
spatial axes (2D: (B, C, H, W); 3D: (B, C, D, H, W)). Labels equal to ``ignore_index`` are
excluded from every sum (numerator and denominator of Dice, and the cross-entropy mean); any
other label outside ``[0, C)`` raises ``ValueError``.

Soft Dice, softmax over classes, for sample ``b`` and class ``c`` (MONAI's ``DiceLoss`` with
``softmax=True, to_onehot_y=True``, ``squared_pred=False``, ``jaccard=False``)::

    p = softmax(logits)[b, c],  g = onehot(labels)[b, c],  sums over non-ignored voxels
    loss[b, c] = 1 - (2 * sum(p * g) + smooth_nr) / (sum(p) + sum(g) + smooth_dr)

``batch=True`` sums over the batch too (one value per class). ``include_background=False``
drops class 0. ``reduction='mean'`` averages the (B, C) (or (C,)) matrix, as MONAI.

Dice + CE: ``lambda_dice * dice + lambda_ce * CE``, CE the mean softmax cross-entropy over the
non-ignored voxels (``F.cross_entropy(..., ignore_index=...)``); without ignored voxels this is
``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)``.

A sample whose voxels are all ignored gives the loss ``1 - smooth_nr / smooth_dr`` (0 with
the default smoothing) for every class, and no gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolbox.registry import MODELS
from toolbox.structures import IGNORE_INDEX


def _check_inputs(logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """Validate shapes and label range; return the ``(B, *spatial)`` valid-voxel mask."""
    if logits.dim() < 3:
        raise ValueError(f'Dice loss needs logits (B, C, *spatial), got shape '
                         f'{tuple(logits.shape)}')
    if labels.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f'labels shape {tuple(labels.shape)} does not match logits '
                         f'{tuple(logits.shape)} (expected (B, *spatial) = '
                         f'{tuple(logits.shape[:1] + logits.shape[2:])})')
    valid = labels != ignore_index
    num_classes = logits.shape[1]
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        values = labels[bad].unique()[:5].tolist()
        raise ValueError(f'labels {values} are outside 0..{num_classes - 1} (ignore_index '
                         f'{ignore_index})')
    return valid


def dice_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX,
              include_background: bool = True, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
              batch: bool = False) -> Tensor:
    """Soft Dice loss per sample and class (module docstring), unreduced.

    Args:
        logits: (B, C, *spatial) raw scores.
        labels: (B, *spatial) int class indices or ``ignore_index``.

    Returns:
        (B, C') loss, or (C',) with ``batch=True``; C' = C, or C - 1 without background.
    """
    valid = _check_inputs(logits, labels, ignore_index)
    num_classes = logits.shape[1]
    probs = logits.softmax(1)
    mask = valid.unsqueeze(1).to(probs.dtype)  # (B, 1, *spatial)
    target = F.one_hot(labels.where(valid, 0).long(), num_classes).movedim(-1, 1)
    target = target.to(probs.dtype) * mask
    probs = probs * mask
    if not include_background:
        probs, target = probs[:, 1:], target[:, 1:]
    axes = list(range(2, logits.dim()))
    if batch:
        axes = [0] + axes
    intersection = (probs * target).sum(axes)
    denominator = probs.sum(axes) + target.sum(axes)
    return 1.0 - (2.0 * intersection + smooth_nr) / (denominator + smooth_dr)


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == 'mean':
        return loss.mean()
    if reduction == 'sum':
        return loss.sum()
    if reduction == 'none':
        return loss
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _refuse_weights(name: str, weight, avg_factor) -> None:
    if weight is not None or avg_factor is not None:
        raise ValueError(f'{name} is a per-class set loss: per-element weight / avg_factor are '
                         f'not supported (exclude voxels with ignore_index instead)')


@MODELS.register_module()
class DiceLoss(nn.Module):
    """Registered soft Dice loss (module docstring).

    Args:
        include_background: keep class 0 in the loss (MONAI's default, True).
        smooth_nr, smooth_dr: added to the numerator / denominator.
        batch: sum over the batch before the ratio (one Dice per class).
        ignore_index: label excluded everywhere; a head may override it per call.
        reduction: 'mean' (over samples and classes), 'sum' or 'none' ((B, C') or (C',)).
        loss_weight: multiplier of the loss.
        loss_name: key in a head's loss dict (must start with ``loss_``).
    """

    def __init__(self, include_background: bool = True, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5, batch: bool = False, ignore_index: int = IGNORE_INDEX,
                 reduction: str = 'mean', loss_weight: float = 1.0,
                 loss_name: str = 'loss_dice'):
        super().__init__()
        if not loss_name.startswith('loss_'):
            raise ValueError(f"loss_name must start with 'loss_', got {loss_name!r}")
        _reduce(torch.zeros(1), reduction)  # validates the name
        self.include_background = include_background
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        self.batch = batch
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.loss_name = loss_name

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor=None, ignore_index: int | None = None) -> Tensor:
        _refuse_weights(type(self).__name__, weight, avg_factor)
        ignore = self.ignore_index if ignore_index is None else ignore_index
        loss = dice_loss(logits, labels, ignore, self.include_background, self.smooth_nr,
                         self.smooth_dr, self.batch)
        return self.loss_weight * _reduce(loss, self.reduction)


@MODELS.register_module()
class DiceCELoss(nn.Module):
    """Registered ``lambda_dice * Dice + lambda_ce * cross-entropy`` (module docstring).

    Args:
        lambda_dice, lambda_ce: weights of the two terms.
        include_background, smooth_nr, smooth_dr, batch: of the Dice term (:class:`DiceLoss`).
        ignore_index: label excluded from both terms; a head may override it per call.
        loss_weight: multiplier of the sum.
        loss_name: key in a head's loss dict.

    Both terms are means (Dice over samples and classes, CE over non-ignored voxels), so the
    result is a scalar.
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0,
                 include_background: bool = True, smooth_nr: float = 1e-5,
                 smooth_dr: float = 1e-5, batch: bool = False, ignore_index: int = IGNORE_INDEX,
                 loss_weight: float = 1.0, loss_name: str = 'loss_dice_ce'):
        super().__init__()
        if not loss_name.startswith('loss_'):
            raise ValueError(f"loss_name must start with 'loss_', got {loss_name!r}")
        if lambda_dice < 0 or lambda_ce < 0:
            raise ValueError(f'lambda_dice and lambda_ce must be >= 0, got {lambda_dice}, '
                             f'{lambda_ce}')
        self.lambda_dice, self.lambda_ce = float(lambda_dice), float(lambda_ce)
        self.include_background = include_background
        self.smooth_nr, self.smooth_dr = float(smooth_nr), float(smooth_dr)
        self.batch = batch
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight
        self.loss_name = loss_name

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor=None, ignore_index: int | None = None) -> Tensor:
        _refuse_weights(type(self).__name__, weight, avg_factor)
        ignore = self.ignore_index if ignore_index is None else ignore_index
        dice = dice_loss(logits, labels, ignore, self.include_background, self.smooth_nr,
                         self.smooth_dr, self.batch).mean()
        valid = labels != ignore
        if valid.any():
            ce = F.cross_entropy(logits, labels.long(), ignore_index=ignore)
        else:  # every voxel ignored: torch's mean would be 0 / 0
            ce = logits.sum() * 0.0
        return self.loss_weight * (self.lambda_dice * dice + self.lambda_ce * ce)
