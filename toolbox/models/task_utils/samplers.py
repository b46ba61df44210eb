"""Choose which assigned priors train a head: all of them, or a random subset.

Each sampler has ``sample(assign_result, pred_instances, gt_instances) -> SamplingResult``;
it reads ``pred_instances.priors`` (N, 4) and ``gt_instances.bboxes`` (G, 4) / ``labels`` (G,).
Boxes are ``xyxy`` absolute pixels.
"""
from __future__ import annotations

import copy
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass

import torch

from toolbox.registry import TASK_UTILS

from .assigners import AssignResult


@dataclass
class SamplingResult:
    """The positives and negatives chosen among N' priors (N, plus G gts if they were added).

    Attributes:
        pos_inds: (P,) int64 indices into ``priors`` of the positives, ascending.
        neg_inds: (Q,) int64 indices into ``priors`` of the negatives, ascending.
        priors: (N', 4) the priors actually used; the G gt boxes come first if the sampler
            added them as proposals.
        pos_priors: (P, 4) ``priors[pos_inds]``.
        neg_priors: (Q, 4) ``priors[neg_inds]``.
        pos_gt_bboxes: (P, 4) the gt box each positive is assigned to.
        pos_gt_labels: (P,) int64 its class.
        pos_assigned_gt_inds: (P,) int64 0-based index of that gt.
        pos_is_gt: (P,) bool, True for positives that are prepended gt boxes.
        num_gts: G.
    """
    pos_inds: torch.Tensor
    neg_inds: torch.Tensor
    priors: torch.Tensor
    pos_priors: torch.Tensor
    neg_priors: torch.Tensor
    pos_gt_bboxes: torch.Tensor
    pos_gt_labels: torch.Tensor
    pos_assigned_gt_inds: torch.Tensor
    pos_is_gt: torch.Tensor
    num_gts: int

    @property
    def num_pos(self) -> int:
        return self.pos_inds.numel()

    @property
    def num_neg(self) -> int:
        return self.neg_inds.numel()

    @classmethod
    def from_indices(cls, pos_inds: torch.Tensor, neg_inds: torch.Tensor, priors: torch.Tensor,
                     gt_bboxes: torch.Tensor, assign_result: AssignResult,
                     gt_flags: torch.Tensor) -> SamplingResult:
        """Gather every field from the chosen indices.

        Args:
            pos_inds, neg_inds: int64 indices into ``priors``.
            priors: (N', 4) priors, gts first if they were prepended.
            gt_bboxes: (G, 4) gt boxes.
            assign_result: the assignment of the N' priors (after ``add_gt_`` if gts were added).
            gt_flags: (N',) bool, True for prepended gts.
        """
        pos_assigned_gt_inds = assign_result.gt_inds[pos_inds] - 1
        return cls(pos_inds=pos_inds, neg_inds=neg_inds, priors=priors,
                   pos_priors=priors[pos_inds], neg_priors=priors[neg_inds],
                   pos_gt_bboxes=gt_bboxes.reshape(-1, 4)[pos_assigned_gt_inds],
                   pos_gt_labels=assign_result.labels[pos_inds],
                   pos_assigned_gt_inds=pos_assigned_gt_inds, pos_is_gt=gt_flags[pos_inds],
                   num_gts=assign_result.num_gts)


class BaseSampler(metaclass=ABCMeta):
    """Interface of every sampler."""

    @abstractmethod
    def sample(self, assign_result: AssignResult, pred_instances,
               gt_instances) -> SamplingResult:
        """Pick positives and negatives among the assigned ``pred_instances.priors``."""


@TASK_UTILS.register_module()
class PseudoSampler(BaseSampler):
    """Every positive and every negative, no sampling, no gt added (dense heads)."""

    def sample(self, assign_result: AssignResult, pred_instances,
               gt_instances) -> SamplingResult:
        priors = pred_instances.priors
        pos_inds = assign_result.pos_mask.nonzero().flatten()
        neg_inds = assign_result.neg_mask.nonzero().flatten()
        gt_flags = torch.zeros(priors.shape[0], dtype=torch.bool, device=priors.device)
        return SamplingResult.from_indices(pos_inds, neg_inds, priors, gt_instances.bboxes,
                                           assign_result, gt_flags)


@TASK_UTILS.register_module()
class RandomSampler(BaseSampler):
    """Uniform random subset of at most ``num`` priors, about ``pos_fraction`` positive.

    1. if ``add_gt_as_proposals`` and G > 0, the gt boxes are prepended to the priors as their
       own positives (on a copy of ``assign_result``; the caller's is not changed);
    2. at most ``int(num * pos_fraction)`` positives are drawn uniformly without replacement;
    3. negatives fill the rest up to ``num``, capped at ``int(neg_pos_ub * max(1, P))`` for P
       positives when ``neg_pos_ub >= 0`` (at least ``neg_pos_ub`` negatives, as in mmdet, so
       an image without positives still trains the background).

    Draws use ``torch.randperm`` on the CPU with the global torch RNG, so
    ``torch.manual_seed`` reproduces them on any device. Faster R-CNN uses (256, 0.5,
    add_gt_as_proposals=False) for the RPN and (512, 0.25) for the RoI head.
    """

    def __init__(self, num: int, pos_fraction: float, neg_pos_ub: float = -1,
                 add_gt_as_proposals: bool = True):
        if num <= 0:
            raise ValueError(f'num must be positive, got {num}')
        if not 0 <= pos_fraction <= 1:
            raise ValueError(f'pos_fraction must be in [0, 1], got {pos_fraction}')
        self.num = num
        self.pos_fraction = pos_fraction
        self.neg_pos_ub = neg_pos_ub
        self.add_gt_as_proposals = add_gt_as_proposals

    def sample(self, assign_result: AssignResult, pred_instances,
               gt_instances) -> SamplingResult:
        priors = pred_instances.priors
        gt_bboxes = gt_instances.bboxes
        gt_flags = torch.zeros(priors.shape[0], dtype=torch.bool, device=priors.device)
        if self.add_gt_as_proposals and gt_bboxes.shape[0] > 0:
            priors = torch.cat([gt_bboxes.to(priors), priors])
            assign_result = copy.copy(assign_result)
            assign_result.add_gt_(gt_instances.labels)
            gt_flags = torch.cat([gt_flags.new_ones(gt_bboxes.shape[0]), gt_flags])

        pos_inds = _random_choice(assign_result.pos_mask.nonzero().flatten(),
                                  int(self.num * self.pos_fraction))
        num_neg = self.num - pos_inds.numel()
        if self.neg_pos_ub >= 0:
            num_neg = min(num_neg, int(self.neg_pos_ub * max(1, pos_inds.numel())))
        neg_inds = _random_choice(assign_result.neg_mask.nonzero().flatten(), num_neg)
        return SamplingResult.from_indices(pos_inds, neg_inds, priors, gt_bboxes, assign_result,
                                           gt_flags)


def _random_choice(candidates: torch.Tensor, num: int) -> torch.Tensor:
    """At most ``num`` of the (M,) ``candidates``, uniformly without replacement, ascending."""
    if candidates.numel() <= num:
        return candidates
    chosen = torch.randperm(candidates.numel())[:num].to(candidates.device)
    return candidates[chosen].sort().values
