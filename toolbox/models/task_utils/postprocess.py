"""Post-processing shared by dense heads: score filtering, top-k and class-aware NMS."""
from __future__ import annotations

import torch
from mmengine.structures import InstanceData
from torchvision.ops import batched_nms


def select_topk_candidates(scores: torch.Tensor, score_thr: float, topk: int):
    """Pick (anchor, class) candidates from a (N, C) score matrix.

    Keeps entries with score > ``score_thr``, then the ``topk`` highest.
    Returns ``(scores (K,), anchor_index (K,), labels (K,))``.
    """
    num_classes = scores.shape[1]
    flat = scores.reshape(-1)
    keep = (flat > score_thr).nonzero(as_tuple=True)[0]
    flat = flat[keep]
    if topk > 0 and flat.numel() > topk:
        flat, order = flat.topk(topk)
        keep = keep[order]
    return flat, keep // num_classes, keep % num_classes


def nms_instances(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                  iou_threshold: float, max_per_img: int) -> InstanceData:
    """Class-aware NMS (``torchvision.ops.batched_nms``), then the ``max_per_img`` best.

    ``boxes`` (K, 4) ``xyxy``, ``scores`` (K,), ``labels`` (K,) -> InstanceData sorted by score.
    """
    keep = batched_nms(boxes, scores, labels, iou_threshold)
    if max_per_img > 0:
        keep = keep[:max_per_img]
    results = InstanceData()
    results.bboxes = boxes[keep]
    results.scores = scores[keep]
    results.labels = labels[keep]
    return results
