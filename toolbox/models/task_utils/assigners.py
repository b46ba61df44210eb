"""Assign predictions (anchors, proposals, queries) to ground truths, vectorised.

Every assigner has ``assign(pred_instances, gt_instances, gt_instances_ignore=None,
img_meta=None) -> AssignResult``; what it reads from ``pred_instances`` depends on the rule:

* :class:`MaxIoUAssigner`: ``priors`` (N, 4), anchors or proposals;
* :class:`ApproxMaxIoUAssigner`: ``priors`` (N, 4) squares and ``approxs`` (N * k, 4) or
  (N, k, 4), k approximate anchors per location (Guided Anchoring);
* :class:`ATSSAssigner`: ``priors`` (N, 4) and ``level_ids`` (N,) int64, the pyramid level of
  each prior (``BaseDenseHead.get_targets(num_level_priors=...)`` adds it);
* :class:`HungarianAssigner`: whatever its match costs read (``scores``, ``bboxes``).

``gt_instances`` has ``bboxes`` (G, 4) and ``labels`` (G,) int64; ``gt_instances_ignore`` has
``bboxes`` (M, 4). Boxes are ``xyxy`` absolute pixels, 0-based, float32.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from toolbox.registry import TASK_UTILS


@dataclass
class AssignResult:
    """Result of assigning N predictions to G ground truths.

    Attributes:
        num_gts: G, the number of ground truths the predictions were assigned against.
        gt_inds: (N,) int64; -1 ignored, 0 negative (background), k > 0 positive for gt k - 1.
        max_overlaps: (N,) float, overlap of each prediction with its best gt (IoU for the
            max-IoU assigners; 0 where there is no gt, and 0 for Hungarian matching).
        labels: (N,) int64 class of the assigned gt, -1 where not positive.
    """
    num_gts: int
    gt_inds: torch.Tensor
    max_overlaps: torch.Tensor
    labels: torch.Tensor

    @property
    def num_preds(self) -> int:
        return self.gt_inds.numel()

    @property
    def pos_mask(self) -> torch.Tensor:
        """(N,) bool, True where the prediction is positive."""
        return self.gt_inds > 0

    @property
    def neg_mask(self) -> torch.Tensor:
        """(N,) bool, True where the prediction is negative (background)."""
        return self.gt_inds == 0

    def add_gt_(self, gt_labels: torch.Tensor) -> None:
        """Prepend the G ground truths as their own positives, in place.

        Afterwards entry ``g < G`` is gt ``g`` itself (``gt_inds`` g + 1, ``max_overlaps`` 1,
        ``labels`` ``gt_labels[g]``) and the former predictions follow from index G on. Used by
        samplers with ``add_gt_as_proposals``.
        """
        num = gt_labels.numel()
        self_inds = torch.arange(1, num + 1, dtype=torch.long, device=self.gt_inds.device)
        self.gt_inds = torch.cat([self_inds, self.gt_inds])
        self.max_overlaps = torch.cat([self.max_overlaps.new_ones(num), self.max_overlaps])
        self.labels = torch.cat([gt_labels.to(self.labels), self.labels])


class BaseAssigner(metaclass=ABCMeta):
    """Interface of every assigner (see the module docstring for the fields read)."""

    @abstractmethod
    def assign(self, pred_instances, gt_instances, gt_instances_ignore=None,
               img_meta: dict | None = None) -> AssignResult:
        """Assign the N predictions of ``pred_instances`` to the G boxes of ``gt_instances``."""


@TASK_UTILS.register_module()
class MaxIoUAssigner(BaseAssigner):
    """Max-IoU assignment of priors (RetinaNet, RPN, SSD, RefineDet, R-CNN heads).

    With ``overlaps`` (G, N) the IoU of every gt with every prior:

    1. priors with max IoU < ``neg_iou_thr`` (or in ``[low, high)`` for a ``(low, high)``
       tuple) are negative;
    2. priors with max IoU >= ``pos_iou_thr`` are positive for their best gt (first gt on ties);
    3. if ``match_low_quality``, every gt whose best IoU is >= ``min_pos_iou`` also takes its
       best prior (all priors tied at that IoU if ``gt_max_assign_all``, and then only when
       the IoU is > 0), so that every object has at least one positive; when several gts
       claim the same prior the later gt wins;
    4. priors whose intersection with an ignored box, over the prior's own area (IoF), exceeds
       ``ignore_iof_thr`` are ignored unless they are positive (off when ``ignore_iof_thr``
       <= 0). This applies also when the image has no gt.

    The rest (between the thresholds) is ignored (-1).
    """

    def __init__(self, pos_iou_thr: float, neg_iou_thr, min_pos_iou: float = 0.0,
                 gt_max_assign_all: bool = True, match_low_quality: bool = True,
                 ignore_iof_thr: float = -1):
        if isinstance(neg_iou_thr, (tuple, list)):
            if len(neg_iou_thr) != 2:
                raise ValueError(f'neg_iou_thr must be a float or a (low, high) pair, '
                                 f'got {neg_iou_thr!r}')
            neg_iou_thr = tuple(neg_iou_thr)
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.match_low_quality = match_low_quality
        self.ignore_iof_thr = ignore_iof_thr

    def assign(self, pred_instances, gt_instances, gt_instances_ignore=None,
               img_meta: dict | None = None) -> AssignResult:
        """Assign ``pred_instances.priors`` (N, 4) to ``gt_instances.bboxes`` (G, 4)."""
        priors = pred_instances.priors
        overlaps = box_iou(gt_instances.bboxes, priors)  # (G, N)
        result = self.assign_wrt_overlaps(overlaps, gt_instances.labels)
        self._ignore_(result, priors, gt_instances_ignore)
        return result

    def assign_wrt_overlaps(self, overlaps: torch.Tensor,
                            gt_labels: torch.Tensor) -> AssignResult:
        """Apply rules 1-3 to ``overlaps`` (G, N) with ``gt_labels`` (G,) int64."""
        num_gts, num_preds = overlaps.shape
        gt_inds = overlaps.new_full((num_preds,), -1, dtype=torch.long)
        labels = overlaps.new_full((num_preds,), -1, dtype=torch.long)
        if num_gts == 0 or num_preds == 0:
            gt_inds.fill_(0)
            return AssignResult(num_gts, gt_inds, overlaps.new_zeros(num_preds), labels)

        max_overlaps, argmax = overlaps.max(dim=0)  # (N,)
        if isinstance(self.neg_iou_thr, tuple):
            low, high = self.neg_iou_thr
            gt_inds[(max_overlaps >= low) & (max_overlaps < high)] = 0
        else:
            gt_inds[(max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)] = 0
        pos = max_overlaps >= self.pos_iou_thr
        gt_inds[pos] = argmax[pos] + 1

        if self.match_low_quality:
            gt_max, gt_argmax = overlaps.max(dim=1)  # (G,)
            valid = gt_max >= self.min_pos_iou
            gt_ids = torch.arange(1, num_gts + 1, device=overlaps.device)
            if self.gt_max_assign_all:
                is_best = (overlaps == gt_max[:, None]) & valid[:, None] & (overlaps > 0)
                # 1-based id of the last gt that claims each prior, 0 where none does
                claimed_by = (is_best.long() * gt_ids[:, None]).amax(dim=0)
            else:
                claimed_by = torch.zeros_like(gt_inds).scatter_reduce(
                    0, gt_argmax[valid], gt_ids[valid], reduce='amax')
            gt_inds = torch.where(claimed_by > 0, claimed_by, gt_inds)

        positive = gt_inds > 0
        labels[positive] = gt_labels[gt_inds[positive] - 1].long()
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)

    def _ignore_(self, result: AssignResult, priors: torch.Tensor, gt_instances_ignore) -> None:
        """Rule 4, in place: non-positive priors inside an ignored region become -1."""
        if self.ignore_iof_thr <= 0 or gt_instances_ignore is None or priors.numel() == 0:
            return
        ignored = gt_instances_ignore.bboxes
        if ignored.numel() == 0:
            return
        iof = _iof(priors, ignored).max(dim=1).values  # (N,)
        result.gt_inds[(iof > self.ignore_iof_thr) & (result.gt_inds <= 0)] = -1


@TASK_UTILS.register_module()
class ApproxMaxIoUAssigner(MaxIoUAssigner):
    """Max-IoU assignment over approximate anchors (Guided Anchoring, Wang et al. 2019).

    A location n has k approximate anchors (shapes sampled around it) and one square. Its
    overlap with gt g is the max IoU of its k approxs with g; the :class:`MaxIoUAssigner` rules
    then apply to these (G, N) overlaps, and ignore regions act on the squares.

    Reads ``pred_instances.priors`` (N, 4), the squares, and ``pred_instances.approxs``,
    location-major: either (N, k, 4), which fits in an ``InstanceData`` of length N, or the flat
    (N * k, 4) (``approxs.view(N, k, 4)``). ``approxs_per_octave`` k is inferred from the shapes.
    """

    def assign(self, pred_instances, gt_instances, gt_instances_ignore=None,
               img_meta: dict | None = None) -> AssignResult:
        squares = pred_instances.priors
        num_squares = squares.shape[0]
        approxs = pred_instances.approxs
        if approxs.dim() == 2 and num_squares > 0 and approxs.shape[0] % num_squares == 0:
            approxs = approxs.reshape(num_squares, -1, 4)
        elif approxs.dim() == 2 and num_squares == 0 and approxs.shape[0] == 0:
            approxs = approxs.reshape(0, 1, 4)
        if (approxs.dim() != 3 or approxs.shape[0] != num_squares or approxs.shape[2] != 4
                or (num_squares > 0 and approxs.shape[1] == 0)):
            raise ValueError(f'approxs must be (N * k, 4) or (N, k, 4) with k >= 1 and N = '
                             f'{num_squares} squares, got {tuple(pred_instances.approxs.shape)}')

        gt_bboxes = gt_instances.bboxes
        num_approxs = approxs.shape[1]
        all_overlaps = box_iou(gt_bboxes, approxs.reshape(-1, 4))  # (G, N * k)
        overlaps = all_overlaps.view(gt_bboxes.shape[0], num_squares, num_approxs).amax(dim=2)
        result = self.assign_wrt_overlaps(overlaps, gt_instances.labels)
        self._ignore_(result, squares, gt_instances_ignore)
        return result


@TASK_UTILS.register_module()
class ATSSAssigner(BaseAssigner):
    """Adaptive training sample selection (ATSS, Zhang et al. CVPR 2020), vectorised.

    For every gt g:

    1. candidates: on each pyramid level, the ``topk`` priors whose centres are nearest to g's
       centre (all of the level's priors when it has fewer);
    2. threshold t_g = mean + std (unbiased) of the candidates' IoUs with g;
    3. a candidate is positive for g when its IoU >= t_g and its centre lies inside g (more
       than 0.01 px from every side);
    4. a prior positive for several gts goes to the one with the highest IoU (the first gt on
       ties); every other prior is negative (``max_overlaps`` is then its best IoU).

    Priors whose intersection with an ignored box over their own area exceeds
    ``ignore_iof_thr`` are left out of the candidates and ignored (-1) unless positive, as in
    :class:`MaxIoUAssigner` (off when ``ignore_iof_thr`` <= 0).

    The threshold adapts to each object's statistics, so the positives no longer depend on a
    hand-set IoU (RetinaNet's 0.5 / 0.4), and one square anchor per location suffices (the
    paper's ``octave_base_scale=8, scales_per_octave=1, ratios=[1.0]``).

    Args:
        topk: candidates per level and gt (9 in the paper).
        ignore_iof_thr: see above.

    Reads ``pred_instances.priors`` (N, 4) and ``pred_instances.level_ids`` (N,), the level of
    each prior; level ids need not be sorted.
    """

    def __init__(self, topk: int = 9, ignore_iof_thr: float = -1):
        if topk < 1:
            raise ValueError(f'topk must be >= 1, got {topk}')
        self.topk = int(topk)
        self.ignore_iof_thr = ignore_iof_thr

    def assign(self, pred_instances, gt_instances, gt_instances_ignore=None,
               img_meta: dict | None = None) -> AssignResult:
        priors = pred_instances.priors
        if 'level_ids' not in pred_instances:
            raise ValueError('ATSSAssigner needs pred_instances.level_ids (N,), the pyramid '
                             'level of each prior: pass num_level_priors to get_targets')
        level_ids = pred_instances.level_ids.long()
        gt_bboxes, gt_labels = gt_instances.bboxes, gt_instances.labels
        num_gts, num_preds = gt_bboxes.shape[0], priors.shape[0]
        gt_inds = priors.new_zeros((num_preds,), dtype=torch.long)
        labels = priors.new_full((num_preds,), -1, dtype=torch.long)
        ignored = self._ignored_priors(priors, gt_instances_ignore)
        if num_gts == 0 or num_preds == 0:
            if ignored is not None:
                gt_inds[ignored] = -1
            return AssignResult(num_gts, gt_inds, priors.new_zeros(num_preds), labels)

        overlaps = box_iou(priors, gt_bboxes)  # (N, G)
        prior_centres = (priors[:, :2] + priors[:, 2:]) / 2
        gt_centres = (gt_bboxes[:, :2] + gt_bboxes[:, 2:]) / 2
        distances = torch.cdist(prior_centres, gt_centres)  # (N, G)
        if ignored is not None:
            distances[ignored] = float('inf')

        # 1. per level, the topk nearest priors of every gt: (K, G) indices into the N priors
        num_levels = int(level_ids.max()) + 1
        candidates = []
        for level in range(num_levels):  # a handful of levels, not a loop over boxes
            level_inds = torch.nonzero(level_ids == level).squeeze(1)
            if level_inds.numel() == 0:
                continue
            k = min(self.topk, level_inds.numel())
            nearest = distances[level_inds].topk(k, dim=0, largest=False).indices  # (k, G)
            candidates.append(level_inds[nearest])
        candidates = torch.cat(candidates)  # (K, G)
        gt_range = torch.arange(num_gts, device=priors.device)
        candidate_ious = overlaps[candidates, gt_range]  # (K, G)
        if ignored is not None:
            candidate_ious = candidate_ious.masked_fill(ignored[candidates], float('nan'))

        # 2-3. adaptive threshold and centre-inside test
        threshold = _nanmean(candidate_ious) + _nanstd(candidate_ious)  # (G,)
        centres = prior_centres[candidates]  # (K, G, 2)
        inside = torch.cat([centres - gt_bboxes[None, :, :2],
                            gt_bboxes[None, :, 2:] - centres], dim=2).amin(dim=2) > 0.01
        is_pos = (candidate_ious >= threshold[None]) & inside  # NaN (ignored) compares False

        # 4. resolve priors claimed by several gts by IoU
        claimed = torch.full_like(overlaps, -1.0)  # (N, G): IoU where positive for that gt
        claimed[candidates[is_pos], gt_range.expand_as(candidates)[is_pos]] = \
            candidate_ious[is_pos]
        best_iou, best_gt = claimed.max(dim=1)
        positive = best_iou >= 0
        gt_inds[positive] = best_gt[positive] + 1
        labels[positive] = gt_labels[best_gt[positive]].long()
        result = AssignResult(num_gts, gt_inds, overlaps.max(dim=1).values, labels)
        if ignored is not None:
            result.gt_inds[ignored & ~positive] = -1
        return result

    def _ignored_priors(self, priors, gt_instances_ignore):
        """(N,) bool, priors inside an ignored region, or None when nothing is ignored."""
        if self.ignore_iof_thr <= 0 or gt_instances_ignore is None \
                or gt_instances_ignore.bboxes.numel() == 0 or priors.numel() == 0:
            return None
        return _iof(priors, gt_instances_ignore.bboxes).max(dim=1).values > self.ignore_iof_thr


def _nanmean(x: torch.Tensor) -> torch.Tensor:
    return torch.nanmean(x, dim=0)


def _nanstd(x: torch.Tensor) -> torch.Tensor:
    """Unbiased std over dim 0 ignoring NaN (torch has no nanstd); 0 with < 2 values."""
    valid = ~torch.isnan(x)
    count = valid.sum(dim=0)
    centred = torch.where(valid, x - _nanmean(x)[None], torch.zeros_like(x))
    return (centred.pow(2).sum(dim=0) / (count - 1).clamp(min=1)).sqrt()


@TASK_UTILS.register_module()
class HungarianAssigner(BaseAssigner):
    """One-to-one matching of N predictions to G gts (DETR, Carion et al. 2020).

    The cost matrix (N, G) is the sum of the ``match_costs`` (each built from a config dict in
    ``TASK_UTILS`` or given as a callable ``(pred_instances, gt_instances, img_meta) -> (N,
    G)``); it is detached and moved to the CPU as float32, and
    ``scipy.optimize.linear_sum_assignment`` finds the matching of least total cost. Matched
    predictions are positive for their gt; all others are negative (0), none is ignored. With
    G > N only N gts are matched. ``max_overlaps`` is all zeros: the matching minimises a cost,
    it computes no overlap. Non-finite costs (a diverged prediction) are replaced by the
    largest float32 so that such a pair is matched only when nothing else is left, as in the
    ``transformers`` matcher; the loss then shows the problem.
    """

    def __init__(self, match_costs):
        if isinstance(match_costs, dict) or callable(match_costs):
            match_costs = [match_costs]
        if not match_costs:
            raise ValueError('HungarianAssigner needs at least one match cost')
        self.match_costs = [cost if callable(cost) else TASK_UTILS.build(cost)
                            for cost in match_costs]

    def assign(self, pred_instances, gt_instances, gt_instances_ignore=None,
               img_meta: dict | None = None) -> AssignResult:
        """Match ``pred_instances`` (N) to ``gt_instances`` (G); ignore regions are not used."""
        gt_labels = gt_instances.labels
        num_gts, num_preds = gt_labels.numel(), len(pred_instances)
        device = gt_labels.device
        gt_inds = torch.zeros(num_preds, dtype=torch.long, device=device)
        labels = torch.full((num_preds,), -1, dtype=torch.long, device=device)
        max_overlaps = torch.zeros(num_preds, device=device)
        if num_gts == 0 or num_preds == 0:
            return AssignResult(num_gts, gt_inds, max_overlaps, labels)

        cost = sum(match_cost(pred_instances, gt_instances, img_meta)
                   for match_cost in self.match_costs)
        cost = cost.detach().cpu().float()
        if cost.shape != (num_preds, num_gts):
            raise ValueError(f'match costs gave a {tuple(cost.shape)} matrix, expected '
                             f'({num_preds}, {num_gts})')
        big = torch.finfo(torch.float32).max
        cost = torch.nan_to_num(cost, nan=big, posinf=big, neginf=big)
        pred_idx, gt_idx = linear_sum_assignment(cost.numpy())
        pred_idx = torch.as_tensor(pred_idx, dtype=torch.long, device=device)
        gt_idx = torch.as_tensor(gt_idx, dtype=torch.long, device=device)
        gt_inds[pred_idx] = gt_idx + 1
        labels[pred_idx] = gt_labels[gt_idx].long()
        return AssignResult(num_gts, gt_inds, max_overlaps, labels)


def _iof(boxes: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(N, M) intersection of ``boxes`` (N, 4) with ``regions`` (M, 4) over the box area."""
    lt = torch.max(boxes[:, None, :2], regions[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)
    return inter / area.clamp(min=1e-6)[:, None]
