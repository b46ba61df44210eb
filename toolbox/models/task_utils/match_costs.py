"""Pairwise costs between N predictions and G ground truths, for :class:`HungarianAssigner`.

Each cost is called as ``cost(pred_instances, gt_instances, img_meta=None)`` and returns an
(N, G) tensor already multiplied by its ``weight``; lower means a better match. Predictions
carry ``scores`` (N, C) logits and/or ``bboxes`` (N, 4); gts carry ``labels`` (G,) int64 and
``bboxes`` (G, 4). Boxes are ``xyxy`` absolute pixels.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
from torchvision.ops import box_convert, box_iou, generalized_box_iou

from toolbox.registry import TASK_UTILS


class BaseMatchCost(metaclass=ABCMeta):
    """A weighted (N, G) cost; subclasses implement :meth:`cost`."""

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def __call__(self, pred_instances, gt_instances, img_meta: dict | None = None) -> torch.Tensor:
        return self.cost(pred_instances, gt_instances, img_meta) * self.weight

    @abstractmethod
    def cost(self, pred_instances, gt_instances, img_meta: dict | None) -> torch.Tensor:
        """The unweighted (N, G) cost."""


@TASK_UTILS.register_module()
class ClassificationCost(BaseMatchCost):
    """``-softmax(scores)[:, gt_label]`` (DETR).

    ``pred_instances.scores`` are logits (N, C) or (N, C + 1) with background last; the softmax
    runs over all columns, so the background column lowers every class probability.
    """

    def cost(self, pred_instances, gt_instances, img_meta=None):
        probs = pred_instances.scores.softmax(dim=-1)
        return -probs[:, gt_instances.labels]


@TASK_UTILS.register_module()
class FocalLossCost(BaseMatchCost):
    """Sigmoid focal-loss cost of the gt class (Deformable DETR).

    With ``p = sigmoid(scores)`` (N, C), the cost of pairing prediction n with gt g of class
    c is ``pos[n, c] - neg[n, c]``: the focal loss of calling n a positive of class c minus
    that of calling it a negative, where ``pos = -alpha (1 - p)^gamma log(p + eps)`` and
    ``neg = -(1 - alpha) p^gamma log(1 - p + eps)``.
    """

    def __init__(self, weight: float = 1.0, alpha: float = 0.25, gamma: float = 2.0,
                 eps: float = 1e-12):
        super().__init__(weight)
        self.alpha = alpha
        self.gamma = gamma
        self.eps = eps

    def cost(self, pred_instances, gt_instances, img_meta=None):
        p = pred_instances.scores.sigmoid()[:, gt_instances.labels]  # (N, G)
        neg = -(1 - self.alpha) * p.pow(self.gamma) * torch.log(1 - p + self.eps)
        pos = -self.alpha * (1 - p).pow(self.gamma) * torch.log(p + self.eps)
        return pos - neg


@TASK_UTILS.register_module()
class BBoxL1Cost(BaseMatchCost):
    """L1 distance between predicted and gt boxes normalised by the image size.

    Both box sets (``xyxy`` absolute pixels) are divided by ``(w, h, w, h)`` from
    ``img_meta['img_shape'] = (h, w)``; with ``box_format='xywh'`` they are then converted to
    normalised ``(cx, cy, w, h)``, which is DETR's cost.
    """

    def __init__(self, weight: float = 1.0, box_format: str = 'xyxy'):
        super().__init__(weight)
        if box_format not in ('xyxy', 'xywh'):
            raise ValueError(f"box_format must be 'xyxy' or 'xywh', got {box_format!r}")
        self.box_format = box_format

    def cost(self, pred_instances, gt_instances, img_meta=None):
        if img_meta is None or 'img_shape' not in img_meta:
            raise ValueError("BBoxL1Cost normalises by the image size: pass img_meta with "
                             "'img_shape' = (h, w)")
        h, w = img_meta['img_shape'][:2]
        pred = pred_instances.bboxes
        factor = pred.new_tensor([w, h, w, h])
        pred = pred / factor
        gt = gt_instances.bboxes.to(pred) / factor
        if self.box_format == 'xywh':
            pred = box_convert(pred, 'xyxy', 'cxcywh')
            gt = box_convert(gt, 'xyxy', 'cxcywh')
        return torch.cdist(pred, gt, p=1)


@TASK_UTILS.register_module()
class IoUCost(BaseMatchCost):
    """``-GIoU`` (``iou_mode='giou'``) or ``-IoU`` (``'iou'``) between predicted and gt boxes."""

    def __init__(self, weight: float = 1.0, iou_mode: str = 'giou'):
        super().__init__(weight)
        if iou_mode not in ('giou', 'iou'):
            raise ValueError(f"iou_mode must be 'giou' or 'iou', got {iou_mode!r}")
        self.iou_mode = iou_mode

    def cost(self, pred_instances, gt_instances, img_meta=None):
        pred = pred_instances.bboxes
        gt = gt_instances.bboxes.to(pred)
        overlap = generalized_box_iou(pred, gt) if self.iou_mode == 'giou' else box_iou(pred, gt)
        return -overlap
