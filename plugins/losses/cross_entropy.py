"""Softmax cross-entropy for pixel (and box) classifiers, and Balanced Softmax (Ren et al. 2020).

Both take ``logits`` (N, C, ...) and integer ``labels`` (N, ...): (N, C) for box classifiers,
(B, C, H, W) with (B, H, W) labels for segmentation. Labels equal to ``ignore_index`` contribute
no loss; any other label outside ``[0, C)`` is an error (torch raises).

Mean reduction (``avg_non_ignore=True``, the default) divides the summed, class-weighted loss
by the number of *non-ignored* elements, ``sum_i w[y_i] * ce_i / #{i : y_i != ignore}``. Without
class weights this is ``F.cross_entropy(..., ignore_index=...)``; with class weights torch
would divide by ``sum_i w[y_i]`` instead (mmseg divides by the count, as here).
``avg_non_ignore=False`` divides by every element, ignored ones included (mmseg's legacy mean).

Balanced Softmax (ANCHORS.md 4.3) is cross-entropy on ``logits + log(n_c)``, n_c the training
frequency of class c (pixel counts for segmentation); inference uses the plain logits. The counts
come from the training dataset's ``class_counts()``: :class:`toolbox.engine.hooks.ClassCountsHook`
hands them to every module with a ``set_class_counts`` method before training starts.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolbox.models.loss_utils import weight_reduce_loss
from toolbox.registry import MODELS
from toolbox.structures import IGNORE_INDEX


def cross_entropy(logits: Tensor, labels: Tensor, class_weight: Tensor | None = None,
                  ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Element-wise softmax cross-entropy.

    Args:
        logits: (N, C, ...) raw scores.
        labels: (N, ...) int64 class indices; ``ignore_index`` entries give 0.
        class_weight: (C,) weight of each target class, or ``None``.

    Returns:
        (N, ...) loss ``class_weight[y] * (logsumexp(logits) - logits[y])``, unreduced.
    """
    return F.cross_entropy(logits, labels, weight=class_weight, reduction='none',
                           ignore_index=ignore_index)


def _reduce(loss: Tensor, labels: Tensor, ignore_index: int, weight, reduction: str,
            avg_factor, avg_non_ignore: bool) -> Tensor:
    if reduction == 'mean' and avg_factor is None and avg_non_ignore:
        avg_factor = (labels != ignore_index).sum()
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class CrossEntropyLoss(nn.Module):
    """Registered softmax cross-entropy (see the module docstring for the mean).

    Args:
        class_weight: (C,) per-class weights, or ``None``.
        ignore_index: label that gives no loss; a head may override it per call.
        avg_non_ignore: mean over non-ignored elements (True) or over all elements.
        reduction: 'mean', 'sum' or 'none'.
        loss_weight: multiplier of the loss.
        loss_name: key of the loss in a head's loss dict (must start with ``loss_``).
    """

    def __init__(self, class_weight: Sequence[float] | None = None,
                 ignore_index: int = IGNORE_INDEX,
                 avg_non_ignore: bool = True, reduction: str = 'mean', loss_weight: float = 1.0,
                 loss_name: str = 'loss_ce'):
        super().__init__()
        if not loss_name.startswith('loss_'):
            raise ValueError(f"loss_name must start with 'loss_', got {loss_name!r}")
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.loss_name = loss_name
        self.class_weight = None if class_weight is None else \
            torch.as_tensor(class_weight, dtype=torch.float32)

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor=None, ignore_index: int | None = None) -> Tensor:
        ignore = self.ignore_index if ignore_index is None else ignore_index
        class_weight = None if self.class_weight is None else \
            self.class_weight.to(logits.device, logits.dtype)
        loss = cross_entropy(logits, labels, class_weight, ignore)
        return self.loss_weight * _reduce(loss, labels, ignore, weight, self.reduction,
                                          avg_factor, self.avg_non_ignore)


@MODELS.register_module()
class BalancedSoftmaxLoss(nn.Module):
    """Balanced Softmax: cross-entropy of ``logits + log(prior)`` (Ren et al., NeurIPS 2020).

    ``log(prior_c) = log(n_c / sum n)``; adding ``log(n_c)`` instead gives the same loss (softmax
    is shift-invariant). Classes with zero count are clamped to a count of 1 so that the prior
    stays finite. ``tau`` scales the adjustment, ``logits + tau * log(prior)``: the logit-adjusted
    loss of Menon et al. (ICLR 2021), of which Balanced Softmax is ``tau = 1`` and plain
    cross-entropy ``tau = 0``; a smaller ``tau`` trades less of the frequent classes' accuracy
    for the rare ones'.

    Args:
        class_counts: (C,) training frequencies; ``None`` leaves them to
            :meth:`set_class_counts` (called by :class:`ClassCountsHook` from the dataset).
        count_key: which entry of a dataset's ``class_counts()`` dict to use:
            ``'pixel_counts'`` (segmentation datasets) or ``'instance_counts'`` (detection).
        tau: strength of the adjustment (>= 0; 1 = Balanced Softmax).
        ignore_index, avg_non_ignore, reduction, loss_weight, loss_name: as
            :class:`CrossEntropyLoss`.
    """

    def __init__(self, class_counts: Sequence[int] | None = None,
                 count_key: str = 'pixel_counts', tau: float = 1.0,
                 ignore_index: int = IGNORE_INDEX,
                 avg_non_ignore: bool = True, reduction: str = 'mean', loss_weight: float = 1.0,
                 loss_name: str = 'loss_balanced_softmax'):
        super().__init__()
        if not loss_name.startswith('loss_'):
            raise ValueError(f"loss_name must start with 'loss_', got {loss_name!r}")
        if tau < 0:
            raise ValueError(f'BalancedSoftmaxLoss: tau must be >= 0, got {tau}')
        self.count_key = count_key
        self.tau = tau
        self.ignore_index = ignore_index
        self.avg_non_ignore = avg_non_ignore
        self.reduction = reduction
        self.loss_weight = loss_weight
        self.loss_name = loss_name
        # not persistent: counts come from the constructor or the dataset, not from checkpoints
        self.register_buffer('log_prior', torch.zeros(0), persistent=False)
        if class_counts is not None:
            self.set_class_counts(class_counts)

    def set_class_counts(self, counts) -> None:
        """Set the prior from (C,) counts or from a dataset's ``class_counts()`` dict."""
        if isinstance(counts, Mapping):
            if self.count_key not in counts:
                raise KeyError(f'BalancedSoftmaxLoss: class_counts() has no {self.count_key!r} '
                               f'entry (it has {sorted(counts)}); set count_key')
            counts = counts[self.count_key]
        counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64).clamp(min=1)
        if counts.dim() != 1 or counts.numel() < 2:
            raise ValueError(f'class counts must be a 1-D sequence of >= 2 classes, got shape '
                             f'{tuple(counts.shape)}')
        self.log_prior = (counts / counts.sum()).log().float().to(self.log_prior.device)

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor=None, ignore_index: int | None = None) -> Tensor:
        if self.log_prior.numel() == 0:
            raise RuntimeError('BalancedSoftmaxLoss has no class counts: pass class_counts=, or '
                               "add dict(type='ClassCountsHook') to custom_hooks so that the "
                               "training dataset's class_counts() are used")
        if self.log_prior.numel() != logits.shape[1]:
            raise ValueError(f'BalancedSoftmaxLoss has counts for {self.log_prior.numel()} '
                             f'classes but the logits have {logits.shape[1]}')
        ignore = self.ignore_index if ignore_index is None else ignore_index
        shape = [1, -1] + [1] * (logits.dim() - 2)
        adjusted = logits + self.tau * self.log_prior.to(logits.dtype).view(shape)
        loss = cross_entropy(adjusted, labels, None, ignore)
        return self.loss_weight * _reduce(loss, labels, ignore, weight, self.reduction,
                                          avg_factor, self.avg_non_ignore)

