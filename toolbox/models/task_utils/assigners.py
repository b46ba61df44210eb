"""Anchor-to-ground-truth assignment, vectorised over anchors and boxes."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou

from toolbox.registry import TASK_UTILS


@dataclass
class AssignResult:
    """Result of assigning N anchors to G ground-truth boxes.

    Attributes:
        gt_index: (N,) int64; -1 ignored, 0 negative (background), k > 0 positive for gt k - 1.
        max_iou: (N,) IoU of each anchor with its best ground truth (0 if G == 0).
        labels: (N,) int64 class of the assigned gt, -1 where not positive.
    """
    gt_index: torch.Tensor
    max_iou: torch.Tensor
    labels: torch.Tensor

    @property
    def pos_mask(self) -> torch.Tensor:
        return self.gt_index > 0

    @property
    def neg_mask(self) -> torch.Tensor:
        return self.gt_index == 0


@TASK_UTILS.register_module()
class MaxIoUAssigner:
    """Max-IoU assignment (RetinaNet, RPN, SSD, RefineDet).

    1. anchors with max IoU < ``neg_iou_thr`` (or inside a ``(low, high)`` range) are negative;
    2. anchors with max IoU >= ``pos_iou_thr`` are positive for their best gt;
    3. if ``match_low_quality``, every gt also takes the anchor(s) with its highest IoU when
       that IoU >= ``min_pos_iou`` (all tied anchors if ``gt_max_assign_all``), so that
       every object has at least one positive;
    4. anchors whose IoU with an ignored box (``ignore_iof_thr`` over the anchor area) exceeds
       the threshold are ignored unless positive.
    The rest (between the thresholds) is ignored.
    """

    def __init__(self, pos_iou_thr: float, neg_iou_thr, min_pos_iou: float = 0.0,
                 gt_max_assign_all: bool = True, match_low_quality: bool = True,
                 ignore_iof_thr: float = -1):
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.match_low_quality = match_low_quality
        self.ignore_iof_thr = ignore_iof_thr

    def assign(self, anchors: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
               ignored_boxes: torch.Tensor | None = None) -> AssignResult:
        """``anchors`` (N, 4), ``gt_boxes`` (G, 4), ``gt_labels`` (G,), all ``xyxy``."""
        num_anchors = anchors.shape[0]
        gt_index = anchors.new_full((num_anchors,), -1, dtype=torch.long)
        labels = anchors.new_full((num_anchors,), -1, dtype=torch.long)
        if gt_boxes.numel() == 0:
            gt_index[:] = 0
            return AssignResult(gt_index, anchors.new_zeros(num_anchors), labels)

        ious = box_iou(gt_boxes, anchors)  # (G, N)
        max_iou, argmax = ious.max(dim=0)
        if isinstance(self.neg_iou_thr, (tuple, list)):
            low, high = self.neg_iou_thr
            gt_index[(max_iou >= low) & (max_iou < high)] = 0
        else:
            gt_index[(max_iou >= 0) & (max_iou < self.neg_iou_thr)] = 0
        pos = max_iou >= self.pos_iou_thr
        gt_index[pos] = argmax[pos] + 1

        if self.match_low_quality:
            gt_max_iou, gt_argmax = ious.max(dim=1)  # (G,)
            valid = gt_max_iou >= self.min_pos_iou
            if self.gt_max_assign_all:
                # every anchor tied with a gt's best IoU; later gts win ties, as in mmdet
                is_best = (ious == gt_max_iou[:, None]) & valid[:, None] & (ious > 0)
                has_best = is_best.any(dim=0)
                last_gt = (is_best * torch.arange(1, len(gt_boxes) + 1,
                                                  device=ious.device)[:, None]).max(dim=0).values
                gt_index[has_best] = last_gt[has_best]
            else:
                gt_ids = torch.arange(len(gt_boxes), device=ious.device)[valid]
                gt_index[gt_argmax[valid]] = gt_ids + 1

        if ignored_boxes is not None and ignored_boxes.numel() and self.ignore_iof_thr > 0:
            iof = _iof(anchors, ignored_boxes).max(dim=1).values
            gt_index[(iof > self.ignore_iof_thr) & (gt_index <= 0)] = -1

        positive = gt_index > 0
        labels[positive] = gt_labels[gt_index[positive] - 1]
        return AssignResult(gt_index, max_iou, labels)


def _iof(boxes: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """(N, M) intersection over the area of ``boxes``."""
    lt = torch.max(boxes[:, None, :2], regions[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)
    return inter / area.clamp(min=1e-6)[:, None]
