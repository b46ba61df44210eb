"""Long-tail classification losses: sigmoid Balanced Softmax, EQL v1, EQL v2 and CRL.

Call contract (every head of the toolbox): ``loss(logits, labels, weight=None, avg_factor=None)``.

* Sigmoid losses (:class:`SigmoidBalancedSoftmaxLoss`, :class:`EqualizationLoss`,
  :class:`EqualizationLossV2`, :class:`ClassRectificationLoss` with ``use_sigmoid=True``) are for
  heads without a background logit (RetinaNet, GA-RetinaNet): ``logits`` (N, C), one sigmoid per
  class; ``labels`` (N,) int64 in ``[0, C]`` where ``C`` is background (the row's target is all
  zeros); ``weight`` (N,) (the head's label weights; 0 for ignored anchors) or (N, C).
  ``focal_gamma`` / ``focal_alpha`` put the RetinaNet focal modulation
  ``alpha_t (1 - p_t)^gamma`` on each binary term (``focal_gamma=0, focal_alpha=-1``: plain
  BCE, the papers' form); a dense one-stage head needs it to cope with ~10^4 background anchors
  per image, which the papers' two-stage heads never see (their sampler keeps 512 RoIs).
* :class:`ClassRectificationLoss` with ``use_sigmoid=False`` is for softmax classifiers: box
  classifiers with a background class (RefineDet ODM) and pixel classifiers (DeepLab):
  ``logits`` (N, C, ...) and ``labels`` (N, ...), ``ignore_index`` entries give no loss.

Reductions follow the papers: ``'mean'`` without ``avg_factor`` divides the summed loss by the
number of non-ignored samples (rows, or pixels), not by N x C; a detection head's
``avg_factor`` (number of positive anchors) replaces that count. Class statistics come from the
training dataset through :class:`toolbox.engine.hooks.ClassCountsHook` (``set_class_counts``),
never from hand-typed lists. Formulas and constants: ``reference/ANCHORS.md`` sections 4.3-4.5.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from toolbox.models.loss_utils import weight_reduce_loss
from toolbox.registry import MODELS
from toolbox.structures import IGNORE_INDEX


# ----------------------------------------------------------------------------------- helpers
def _check_name(loss_name: str) -> str:
    if not loss_name.startswith('loss_'):
        raise ValueError(f"loss_name must start with 'loss_', got {loss_name!r}")
    return loss_name


def _one_hot_sigmoid(labels: Tensor, num_classes: int, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(N,) labels in ``[0, C]`` (``C`` = background) or ``ignore_index`` -> ``(targets (N, C)
    float one-hot without the background column, valid (N,) bool)``."""
    valid = labels != ignore_index
    if valid.any() and (labels[valid].min() < 0 or labels[valid].max() > num_classes):
        raise ValueError(f'labels must lie in [0, {num_classes}] ({num_classes} = background) or '
                         f'be ignore_index {ignore_index}, got {labels[valid].unique().tolist()}')
    safe = torch.where(valid, labels, torch.full_like(labels, num_classes))
    targets = F.one_hot(safe, num_classes + 1)[:, :num_classes]
    return targets, valid


def sigmoid_binary_terms(logits: Tensor, targets: Tensor, focal_gamma: float = 0.0,
                         focal_alpha: float = -1.0) -> Tensor:
    """Element-wise binary loss ``alpha_t (1 - p_t)^gamma BCE(z, y)`` of (N, C) logits and
    (N, C) float targets; ``gamma = 0`` and ``alpha < 0`` give plain BCE with logits."""
    targets = targets.to(logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
    if focal_gamma:
        prob = logits.sigmoid()
        p_t = prob * targets + (1 - prob) * (1 - targets)
        loss = loss * (1 - p_t) ** focal_gamma
    if focal_alpha >= 0:
        loss = loss * (focal_alpha * targets + (1 - focal_alpha) * (1 - targets))
    return loss


def _row_weight(weight: Tensor | None, valid: Tensor, dtype) -> Tensor:
    """Element weights (N, 1) or (N, C): the head's weights times the non-ignored mask."""
    mask = valid.to(dtype)[:, None]
    if weight is None:
        return mask
    weight = weight.to(dtype)
    return mask * (weight[:, None] if weight.dim() == 1 else weight)


def _reduce_rows(loss: Tensor, weight: Tensor, valid: Tensor, reduction: str,
                 avg_factor) -> Tensor:
    """Weighted (N, C) loss reduced; ``'mean'`` divides by ``avg_factor`` or else by the number
    of non-ignored rows (the papers' ``sum / n_i``)."""
    if reduction == 'mean' and avg_factor is None:
        avg_factor = valid.sum()
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def _counts_from(counts, key: str, owner: str):
    if isinstance(counts, Mapping):
        if key not in counts:
            raise KeyError(f'{owner}: class_counts() has no {key!r} entry (it has '
                           f'{sorted(counts)}); set count_key')
        return counts[key]
    return counts


# --------------------------------------------------------------- sigmoid balanced softmax
def sigmoid_balanced_softmax_loss(logits: Tensor, labels: Tensor, log_prior_odds: Tensor,
                                  focal_gamma: float = 0.0, focal_alpha: float = -1.0,
                                  ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Sigmoid form of Balanced Softmax (Ren et al., NeurIPS 2020; BALMS instance seg.).

    For a foreground row i (label y_i < C) every class logit is shifted by its prior odds::

        z'_ij = z_ij + log(f_j / (1 - f_j)) + log(C - 1)        (foreground rows only)
        loss_ij = BCE(sigmoid(z'_ij), y_ij)                      (times the focal factor)

    with f_j the training frequency of class j (``f = n / sum(n)``). Background rows keep
    their logits: the correction models the class prior *given* an object. ``log(C - 1)``
    makes the uniform prior f_j = 1/C a zero shift (plain BCE); the BALMS reference code drops
    that constant. Inference uses the plain logits.

    Args:
        logits: (N, C); labels: (N,) in ``[0, C]``, C = background, or ``ignore_index``.
        log_prior_odds: (C,) ``log(f_j / (1 - f_j)) + log(C - 1)``
            (:func:`sigmoid_log_prior_odds`).

    Returns:
        (N, C) element-wise loss (ignored rows included, the caller masks them).
    """
    targets, valid = _one_hot_sigmoid(labels, logits.shape[1], ignore_index)
    foreground = (valid & (labels < logits.shape[1])).to(logits.dtype)[:, None]
    adjusted = logits + foreground * log_prior_odds.to(logits.dtype)[None]
    return sigmoid_binary_terms(adjusted, targets, focal_gamma, focal_alpha)


def sigmoid_log_prior_odds(counts) -> Tensor:
    """(C,) ``log(f_j / (1 - f_j)) + log(C - 1)`` from (C,) class counts (zeros clamped to 1)."""
    counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64).clamp(min=1)
    if counts.dim() != 1 or counts.numel() < 2:
        raise ValueError(f'class counts must be a 1-D sequence of >= 2 classes, got shape '
                         f'{tuple(counts.shape)}')
    freq = counts / counts.sum()
    return (freq / (1 - freq)).log() + math.log(counts.numel() - 1)


@MODELS.register_module()
class SigmoidBalancedSoftmaxLoss(nn.Module):
    """Registered :func:`sigmoid_balanced_softmax_loss` for heads without a background logit.

    Args:
        class_counts: (C,) training counts, or ``None`` to get them from
            :class:`ClassCountsHook` (``count_key`` of the dataset's ``class_counts()``:
            ``'instance_counts'`` for detection).
        focal_gamma, focal_alpha: focal modulation of each binary term (module docstring).
        ignore_index, reduction, loss_weight, loss_name: as the other losses.
    """

    def __init__(self, class_counts: Sequence[int] | None = None,
                 count_key: str = 'instance_counts', focal_gamma: float = 0.0,
                 focal_alpha: float = -1.0, ignore_index: int = IGNORE_INDEX,
                 reduction: str = 'mean', loss_weight: float = 1.0,
                 loss_name: str = 'loss_cls'):
        super().__init__()
        self.count_key = count_key
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha
        self.ignore_index = ignore_index
        self.reduction, self.loss_weight = reduction, loss_weight
        self.loss_name = _check_name(loss_name)
        self.register_buffer('log_prior_odds', torch.zeros(0), persistent=False)
        if class_counts is not None:
            self.set_class_counts(class_counts)

    def set_class_counts(self, counts) -> None:
        counts = _counts_from(counts, self.count_key, type(self).__name__)
        self.log_prior_odds = sigmoid_log_prior_odds(counts).float().to(
            self.log_prior_odds.device)

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor=None, ignore_index: int | None = None) -> Tensor:
        if self.log_prior_odds.numel() == 0:
            raise RuntimeError('SigmoidBalancedSoftmaxLoss has no class counts: pass '
                               "class_counts=, or add dict(type='ClassCountsHook') to "
                               'custom_hooks')
        if self.log_prior_odds.numel() != logits.shape[1]:
            raise ValueError(f'SigmoidBalancedSoftmaxLoss has counts for '
                             f'{self.log_prior_odds.numel()} classes, the logits have '
                             f'{logits.shape[1]}')
        ignore = self.ignore_index if ignore_index is None else ignore_index
        loss = sigmoid_balanced_softmax_loss(logits, labels, self.log_prior_odds,
                                             self.focal_gamma, self.focal_alpha, ignore)
        valid = labels != ignore
        return self.loss_weight * _reduce_rows(loss, _row_weight(weight, valid, loss.dtype),
                                               valid, self.reduction, avg_factor)


# ----------------------------------------------------------------------------------- EQL v1
def equalization_loss(logits: Tensor, labels: Tensor, tail: Tensor, focal_gamma: float = 0.0,
                      focal_alpha: float = -1.0, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Equalization Loss (Tan et al., CVPR 2020), eq. (4)-(6)::

        w_ij = 1 - E(r_i) T_lambda(f_j) (1 - y_ij)
        L = - sum_i sum_j w_ij [y_ij log p_ij + (1 - y_ij) log(1 - p_ij)]   (/ N by the caller)

    E(r_i) = 1 for foreground rows (label < C), 0 for background rows (background proposals are
    excluded: their negatives keep full weight); T_lambda(f_j) = 1 for tail classes (image
    frequency f_j < lambda): for a foreground row, the negative terms of tail classes are
    dropped, so frequent classes' positives no longer discourage rare classes.

    Args:
        logits: (N, C); labels: (N,) in ``[0, C]`` (C = background) or ``ignore_index``.
        tail: (C,) bool, ``f_j < lambda``.

    Returns:
        (N, C) weighted element-wise loss.
    """
    targets, valid = _one_hot_sigmoid(labels, logits.shape[1], ignore_index)
    foreground = (valid & (labels < logits.shape[1])).to(logits.dtype)[:, None]
    eql_w = 1 - foreground * tail.to(logits.dtype)[None] * (1 - targets.to(logits.dtype))
    return eql_w * sigmoid_binary_terms(logits, targets, focal_gamma, focal_alpha)


@MODELS.register_module()
class EqualizationLoss(nn.Module):
    """Registered :func:`equalization_loss` (EQL v1).

    Args:
        lambda_: frequency threshold (0.00177 on LVIS v0.5, the paper's value; a class is tail
            when its image frequency is below it).
        image_frequencies: (C,) f_j = images containing class j / training images, or ``None``
            to take ``image_counts / num_images`` from :class:`ClassCountsHook`.
        focal_gamma, focal_alpha, ignore_index, reduction, loss_weight, loss_name: as
            :class:`SigmoidBalancedSoftmaxLoss`.
    """

    def __init__(self, lambda_: float = 0.00177,
                 image_frequencies: Sequence[float] | None = None, focal_gamma: float = 0.0,
                 focal_alpha: float = -1.0, ignore_index: int = IGNORE_INDEX,
                 reduction: str = 'mean', loss_weight: float = 1.0, loss_name: str = 'loss_cls'):
        super().__init__()
        self.lambda_ = lambda_
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha
        self.ignore_index = ignore_index
        self.reduction, self.loss_weight = reduction, loss_weight
        self.loss_name = _check_name(loss_name)
        self.register_buffer('tail', torch.zeros(0, dtype=torch.bool), persistent=False)
        if image_frequencies is not None:
            self.set_image_frequencies(image_frequencies)

    def set_image_frequencies(self, freq) -> None:
        freq = torch.as_tensor(np.asarray(freq, dtype=np.float64))
        if freq.dim() != 1:
            raise ValueError(f'image frequencies must be 1-D, got shape {tuple(freq.shape)}')
        self.tail = (freq < self.lambda_).to(self.tail.device)

    def set_class_counts(self, counts: Mapping) -> None:
        """Image frequencies ``image_counts / num_images`` from a ``class_counts()`` dict."""
        for key in ('image_counts', 'num_images'):
            _counts_from(counts, key, type(self).__name__)
        self.set_image_frequencies(np.asarray(counts['image_counts'], np.float64)
                                   / max(int(counts['num_images']), 1))

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor=None, ignore_index: int | None = None) -> Tensor:
        if self.tail.numel() != logits.shape[1]:
            raise RuntimeError(f'EqualizationLoss has image frequencies for {self.tail.numel()} '
                               f'classes, the logits have {logits.shape[1]}: pass '
                               "image_frequencies= or add dict(type='ClassCountsHook')")
        ignore = self.ignore_index if ignore_index is None else ignore_index
        loss = equalization_loss(logits, labels, self.tail, self.focal_gamma, self.focal_alpha,
                                 ignore)
        valid = labels != ignore
        return self.loss_weight * _reduce_rows(loss, _row_weight(weight, valid, loss.dtype),
                                               valid, self.reduction, avg_factor)


# ----------------------------------------------------------------------------------- EQL v2
def eqlv2_weights(pos_grad: Tensor, neg_grad: Tensor, gamma: float = 12.0, mu: float = 0.8,
                  alpha: float = 4.0) -> tuple[Tensor, Tensor]:
    """EQL v2 (Tan et al., CVPR 2021) eq. (6)-(7): per-class weights from the accumulated
    gradient ratio g_j = pos_grad_j / neg_grad_j::

        r_j = f(g_j) = 1 / (1 + exp(-gamma (g_j - mu)))     (weight of negative terms)
        q_j = 1 + alpha (1 - f(g_j))                          (weight of positive terms)

    A class without negative-gradient statistics yet (``neg_grad_j == 0``, e.g. the first
    iteration) gets ``q_j = r_j = 1``.

    Returns:
        ``(pos_w (C,), neg_w (C,))``.
    """
    ratio = pos_grad / neg_grad.clamp(min=1e-10)
    neg_w = torch.sigmoid(gamma * (ratio - mu))
    pos_w = 1 + alpha * (1 - neg_w)
    seen = neg_grad > 0
    return torch.where(seen, pos_w, torch.ones_like(pos_w)), \
        torch.where(seen, neg_w, torch.ones_like(neg_w))


def eqlv2_loss(logits: Tensor, labels: Tensor, pos_w: Tensor, neg_w: Tensor,
               focal_gamma: float = 0.0, focal_alpha: float = -1.0,
               ignore_index: int = IGNORE_INDEX) -> Tensor:
    """EQL v2 eq. (5): ``L = sum_ij (q_j y_ij + r_j (1 - y_ij)) BCE(z_ij, y_ij)`` (/ N by the
    caller), with ``(q, r) = (pos_w, neg_w)`` from :func:`eqlv2_weights`.

    Args:
        logits: (N, C); labels: (N,) in ``[0, C]`` (C = background) or ``ignore_index``.
        pos_w, neg_w: (C,).

    Returns:
        (N, C) weighted element-wise loss.
    """
    targets, _ = _one_hot_sigmoid(labels, logits.shape[1], ignore_index)
    targets = targets.to(logits.dtype)
    weight = pos_w.to(logits.dtype)[None] * targets + neg_w.to(logits.dtype)[None] * (1 - targets)
    return weight * sigmoid_binary_terms(logits, targets, focal_gamma, focal_alpha)


@MODELS.register_module()
class EqualizationLossV2(nn.Module):
    """Registered EQL v2: gradient-guided re-weighting of a sigmoid classifier.

    After each training call, the gradient magnitudes ``|dL/dz_ij|`` of the weighted loss
    (label weights included; for BCE ``w_ij |p_ij - y_ij|``, as the reference code) are summed
    per class into ``pos_grad`` (positive terms) and ``neg_grad`` (negative terms, background
    rows included). They are persistent buffers: they go into checkpoints, so a resumed run
    re-weights exactly like an uninterrupted one. In DDP the batch statistics are all-reduced
    (summed over processes) when a process group is initialised; otherwise they are local.
    Statistics are not updated in eval mode (validation losses) or when ``update=False``.

    Args:
        num_classes: C (the buffers' size, needed to load a checkpoint).
        gamma, mu, alpha: 12, 0.8, 4.0 (the paper's values).
        focal_gamma, focal_alpha, ignore_index, reduction, loss_weight, loss_name: as
            :class:`SigmoidBalancedSoftmaxLoss`.
    """

    def __init__(self, num_classes: int, gamma: float = 12.0, mu: float = 0.8,
                 alpha: float = 4.0, focal_gamma: float = 0.0, focal_alpha: float = -1.0,
                 ignore_index: int = IGNORE_INDEX, reduction: str = 'mean',
                 loss_weight: float = 1.0, loss_name: str = 'loss_cls'):
        super().__init__()
        self.num_classes = num_classes
        self.gamma, self.mu, self.alpha = gamma, mu, alpha
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha
        self.ignore_index = ignore_index
        self.reduction, self.loss_weight = reduction, loss_weight
        self.loss_name = _check_name(loss_name)
        self.register_buffer('pos_grad', torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer('neg_grad', torch.zeros(num_classes, dtype=torch.float64))

    def weights(self) -> tuple[Tensor, Tensor]:
        """Current ``(pos_w (C,), neg_w (C,))``."""
        return eqlv2_weights(self.pos_grad, self.neg_grad, self.gamma, self.mu, self.alpha)

    @torch.no_grad()
    def collect_grad(self, logits: Tensor, labels: Tensor, element_weight: Tensor,
                     ignore_index: int) -> None:
        """Add this batch's per-class positive / negative gradient magnitudes to the buffers."""
        targets, _ = _one_hot_sigmoid(labels, logits.shape[1], ignore_index)
        with torch.enable_grad():
            z = logits.detach().requires_grad_(True)
            terms = eqlv2_loss(z, labels, *self.weights(), self.focal_gamma, self.focal_alpha,
                               ignore_index) * element_weight.detach()
            grad, = torch.autograd.grad(terms.sum(), z)
        grad = grad.abs().double()
        targets = targets.double()
        stats = torch.stack([(grad * targets).sum(0), (grad * (1 - targets)).sum(0)])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
        self.pos_grad += stats[0]
        self.neg_grad += stats[1]

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor=None, ignore_index: int | None = None, update: bool = True) -> Tensor:
        if logits.shape[1] != self.num_classes:
            raise ValueError(f'EqualizationLossV2(num_classes={self.num_classes}) got logits '
                             f'with {logits.shape[1]} classes')
        ignore = self.ignore_index if ignore_index is None else ignore_index
        loss = eqlv2_loss(logits, labels, *self.weights(), self.focal_gamma, self.focal_alpha,
                          ignore)
        valid = labels != ignore
        element_weight = _row_weight(weight, valid, loss.dtype).expand_as(loss)
        if self.training and update:
            self.collect_grad(logits, labels, element_weight, ignore)
        return self.loss_weight * _reduce_rows(loss, element_weight, valid, self.reduction,
                                               avg_factor)


# --------------------------------------------------------------------------------------- CRL
def batch_minority_classes(counts: Tensor, rho: float = 0.5) -> Tensor:
    """CRL minority class profiling of one batch: the classes present in the batch, taken from
    the smallest up, whose cumulative count stays within ``rho`` times the batch size.

    Args:
        counts: (C,) samples of each class in the batch.

    Returns:
        (C,) bool.
    """
    order = torch.argsort(counts, stable=True)
    sorted_counts = counts[order]
    within = (sorted_counts.cumsum(0) <= rho * counts.sum()) & (sorted_counts > 0)
    minority = torch.zeros_like(counts, dtype=torch.bool)
    minority[order] = within
    return minority


def batch_imbalance(counts: Tensor) -> Tensor:
    """Imbalance measure of a batch, ``1 - min_c n_c / max_c n_c`` over the classes present:
    0 for a balanced batch (or one class), towards 1 as the batch gets more skewed."""
    present = counts[counts > 0].to(torch.float64)
    if present.numel() < 2:
        return counts.new_zeros((), dtype=torch.float64)
    return 1 - present.min() / present.max()


@torch.no_grad()
def mine_hard_samples(scores: Tensor, labels: Tensor, classes: Tensor, k: int = 25,
                      valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CRL class-level, score-based hard mining for each class c of ``classes``:

    * hard positives: the k samples of class c with the lowest score s_c(x);
    * hard negatives: the k samples of other classes with the highest score s_c(x).

    Args:
        scores: (C, N) class probabilities, class-major (no gradient needed).
        labels: (N,) int64; a label outside ``[0, C)`` (background C of a sigmoid head) is a
            negative of every class, never a positive.
        classes: (M,) int64 classes to mine.
        valid: (N,) bool, samples that take part (non-ignored); ``None``: all.

    Returns:
        ``(pos_idx (M, k), pos_ok (M, k), neg_idx (M, k), neg_ok (M, k))``: sample indices and
        whether each slot holds a sample (a class with fewer than k positives fills fewer).
    """
    sel = scores[classes]  # (M, N)
    is_class = labels[None] == classes[:, None]
    is_other = ~is_class if valid is None else ~is_class & valid[None]
    kk = min(k, scores.shape[1])
    big = torch.finfo(scores.dtype).max
    pos = torch.topk(torch.where(is_class, -sel, -big), kk, dim=1)
    neg = torch.topk(torch.where(is_other, sel, -big), kk, dim=1)
    return pos.indices, pos.values > -big, neg.indices, neg.values > -big


def class_rectification_term(pos_scores: Tensor, neg_scores: Tensor, pos_ok: Tensor,
                             neg_ok: Tensor, margin: float = 0.5) -> Tensor:
    """Class-level CRL relative comparison (Dong, Gong & Zhu, ICCV 2017 / TPAMI 2018, triplet
    form), averaged over every triplet of every mined class c::

        L_crl = mean over c, (+ in P_c), (- in N_c) of max(0, m + d(a, +) - d(a, -))

    with P_c / N_c the hard positives / negatives of class c (:func:`mine_hard_samples`). The
    anchor a of class c is the class itself (ideal score 1), so ``d(a, x) = 1 - s_c(x)`` and
    each term is ``max(0, m + s_c(-) - s_c(+))``: every hard positive must out-score every hard
    negative by the margin m on class c. (The papers' exact anchor choice could not be
    verified, ANCHORS.md 4.5; this is the class-level reading with a class-prototype anchor.)

    Args:
        pos_scores, neg_scores: (M, k) scores s_c of the mined samples; pos_ok, neg_ok: (M, k)
            bool, filled slots.

    Returns:
        scalar; 0 (connected to the scores) when no class has both a positive and a negative.
    """
    pair_ok = pos_ok[:, :, None] & neg_ok[:, None, :]  # (M, k+, k-)
    hinge = F.relu(margin + neg_scores[:, None, :] - pos_scores[:, :, None])
    if not pair_ok.any():
        return (pos_scores.sum() + neg_scores.sum()) * 0
    return hinge[pair_ok].mean()


def class_rectification_loss(logits: Tensor, labels: Tensor, use_sigmoid: bool = False,
                             rho: float = 0.5, k: int = 25, margin: float = 0.5,
                             eta: float = 0.01, focal_gamma: float = 0.0,
                             focal_alpha: float = -1.0, ignore_index: int = IGNORE_INDEX
                             ) -> tuple[Tensor, Tensor, Tensor]:
    """CRL pieces for one batch (TPAMI 2018 eq. ``L = alpha L_crl + (1 - alpha) L_ce``).

    The minority classes are profiled on the batch (:func:`batch_minority_classes`), their
    hard samples mined on detached scores (:func:`mine_hard_samples`), and only the mined
    samples' scores are recomputed with gradients (a gather of k logits per class, not a
    per-pixel copy).

    Args:
        logits: softmax: (N, C, ...) with labels (N, ...) in ``[0, C)``; sigmoid: (N, C) with
            labels (N,) in ``[0, C]``, C = background. ``ignore_index`` entries are left out.

    Returns:
        ``(base (element-wise: (N, ...) CE or (N, C) sigmoid terms), crl (scalar),
        alpha (scalar))`` with ``alpha = eta * Omega`` (:func:`batch_imbalance` of the batch's
        labels; background excluded for sigmoid heads).
    """
    num_classes = logits.shape[1]
    if use_sigmoid:
        targets, valid = _one_hot_sigmoid(labels, num_classes, ignore_index)
        base = sigmoid_binary_terms(logits, targets, focal_gamma, focal_alpha)
        flat_labels = labels
    else:
        base = F.cross_entropy(logits, labels, reduction='none', ignore_index=ignore_index)
        flat_labels = labels.reshape(-1)
        valid = flat_labels != ignore_index
    counts = torch.bincount(flat_labels[valid], minlength=num_classes + 1)[:num_classes]
    alpha = (eta * batch_imbalance(counts)).to(logits.dtype)
    classes = torch.nonzero(batch_minority_classes(counts, rho)).flatten()
    if classes.numel() == 0:
        return base, logits.sum() * 0, alpha
    with torch.no_grad():
        if use_sigmoid:
            scores = logits.detach().sigmoid().t()  # (C, N)
        else:  # (N, C, ...) -> class-major (C, N * ...)
            scores = logits.detach().softmax(1).reshape(logits.shape[0], num_classes, -1) \
                .transpose(0, 1).reshape(num_classes, -1)
    pos_idx, pos_ok, neg_idx, neg_ok = mine_hard_samples(scores, flat_labels, classes, k, valid)

    def scores_of(idx):  # (M, k) sample indices -> (M, k) scores of class c, with gradients
        if use_sigmoid:
            return logits[idx, classes[:, None]].sigmoid()
        per_image = logits.reshape(logits.shape[0], num_classes, -1)  # (B, C, P)
        image, pixel = idx // per_image.shape[2], idx % per_image.shape[2]
        return per_image[image, :, pixel].softmax(-1).gather(-1, classes[:, None, None].expand(
            -1, idx.shape[1], 1)).squeeze(-1)

    crl = class_rectification_term(scores_of(pos_idx), scores_of(neg_idx), pos_ok, neg_ok,
                                   margin)
    return base, crl, alpha


@MODELS.register_module()
class ClassRectificationLoss(nn.Module):
    """Registered CRL: ``(1 - alpha) * base + alpha * L_crl`` (:func:`class_rectification_loss`).

    The base is softmax cross-entropy (``use_sigmoid=False``; reduced as
    :class:`CrossEntropyLoss`: mean over non-ignored elements) or the sigmoid (focal) terms of
    a head without a background logit (``use_sigmoid=True``; reduced by ``avg_factor`` or the
    number of non-ignored rows). ``L_crl`` is a batch-level mean over triplets and is added
    as is; so ``reduction`` must be ``'mean'`` or ``'sum'``. With no minority class in the
    batch, or a balanced batch (``alpha = 0``), the loss is exactly the base loss.

    Args:
        use_sigmoid: sigmoid head (labels in ``[0, C]``, C = background) or softmax classifier.
        rho: minority profiling fraction (0.5). k: hard positives / negatives per class (25).
        margin: triplet margin m. eta: ``alpha = eta * Omega`` (the recalled 0.01 is
            unverified, ANCHORS.md 4.5).
        focal_gamma, focal_alpha: focal modulation of the sigmoid base (ignored for softmax).
        ignore_index, reduction, loss_weight, loss_name: as the other losses.
    """

    def __init__(self, use_sigmoid: bool = False, rho: float = 0.5, k: int = 25,
                 margin: float = 0.5, eta: float = 0.01, focal_gamma: float = 0.0,
                 focal_alpha: float = -1.0, ignore_index: int = IGNORE_INDEX,
                 reduction: str = 'mean', loss_weight: float = 1.0, loss_name: str = 'loss_crl'):
        super().__init__()
        if reduction not in ('mean', 'sum'):
            raise ValueError(f"ClassRectificationLoss: reduction must be 'mean' or 'sum' (the "
                             f'CRL term is a batch mean), got {reduction!r}')
        self.use_sigmoid = use_sigmoid
        self.rho, self.k, self.margin, self.eta = rho, k, margin, eta
        self.focal_gamma, self.focal_alpha = focal_gamma, focal_alpha
        self.ignore_index = ignore_index
        self.reduction, self.loss_weight = reduction, loss_weight
        self.loss_name = _check_name(loss_name)

    def forward(self, logits: Tensor, labels: Tensor, weight: Tensor | None = None,
                avg_factor=None, ignore_index: int | None = None) -> Tensor:
        ignore = self.ignore_index if ignore_index is None else ignore_index
        base, crl, alpha = class_rectification_loss(
            logits, labels, self.use_sigmoid, self.rho, self.k, self.margin, self.eta,
            self.focal_gamma, self.focal_alpha, ignore)
        valid = labels != ignore
        if self.use_sigmoid:
            base = _reduce_rows(base, _row_weight(weight, valid, base.dtype), valid,
                                self.reduction, avg_factor)
        else:
            if self.reduction == 'mean' and avg_factor is None:
                avg_factor = valid.sum()
            base = weight_reduce_loss(base, weight, self.reduction, avg_factor)
        return self.loss_weight * ((1 - alpha) * base + alpha * crl)
