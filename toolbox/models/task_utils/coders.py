"""Box coders: ``xyxy`` boxes <-> regression targets relative to reference boxes or points."""
from __future__ import annotations

import math

import torch

from toolbox.registry import TASK_UTILS
from toolbox.structures.boxes import clip_boxes


@TASK_UTILS.register_module()
class DeltaXYWHBoxCoder:
    """The R-CNN parameterisation ``(dx, dy, dw, dh)``, normalised by ``means`` and ``stds``.

    ``dx = (gx - px) / pw``, ``dw = log(gw / pw)`` with centres and sizes of the reference
    box ``p`` and target ``g`` (widths ``x2 - x1``, no +1). SSD/RefineDet "variances"
    ``(0.1, 0.1, 0.2, 0.2)`` are ``stds`` here. All tensors (..., 4) ``xyxy``.

    Decoding clamps ``dw``, ``dh`` to ``[-log(1 / wh_ratio_clip), log(1 / wh_ratio_clip)]``
    (mmdet); with ``clamp_below=False`` only from above (torchvision's ``bbox_xform_clip``).
    """

    def __init__(self, means=(0.0, 0.0, 0.0, 0.0), stds=(1.0, 1.0, 1.0, 1.0),
                 wh_ratio_clip: float = 16 / 1000, clip_border: bool = True,
                 clamp_below: bool = True):
        self.means = means
        self.stds = stds
        self.max_log_ratio = abs(math.log(wh_ratio_clip))
        self.clip_border = clip_border
        self.clamp_below = clamp_below

    def encode(self, boxes: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
        pw, ph = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        px, py = boxes[..., 0] + 0.5 * pw, boxes[..., 1] + 0.5 * ph
        gw, gh = gt_boxes[..., 2] - gt_boxes[..., 0], gt_boxes[..., 3] - gt_boxes[..., 1]
        gx, gy = gt_boxes[..., 0] + 0.5 * gw, gt_boxes[..., 1] + 0.5 * gh
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph,
                              torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
        return (deltas - deltas.new_tensor(self.means)) / deltas.new_tensor(self.stds)

    def decode(self, boxes: torch.Tensor, deltas: torch.Tensor, max_shape=None) -> torch.Tensor:
        """Apply ``deltas`` to ``boxes``; clip to ``max_shape = (h, w)`` if given."""
        deltas = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        pw, ph = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        px, py = boxes[..., 0] + 0.5 * pw, boxes[..., 1] + 0.5 * ph
        low = -self.max_log_ratio if self.clamp_below else None
        dw = deltas[..., 2].clamp(low, self.max_log_ratio)
        dh = deltas[..., 3].clamp(low, self.max_log_ratio)
        cx, cy = px + deltas[..., 0] * pw, py + deltas[..., 1] * ph
        w, h = pw * dw.exp(), ph * dh.exp()
        out = torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)
        if max_shape is not None and self.clip_border:
            out = clip_boxes(out, max_shape)
        return out


@TASK_UTILS.register_module()
class DistancePointBBoxCoder:
    """Boxes as distances ``(left, top, right, bottom)`` from a point to their four sides
    (FCOS, GFL). Points are (..., 2) ``xy``, or (..., 4) ``xyxy`` priors whose centres are the
    points (anchor-based heads that regress distances, e.g. :class:`GFLHead`). Distances
    are in the frame of the points (pixels), not normalised.

    Args:
        clip_border: clip decoded boxes to ``max_shape`` when it is given.
    """

    def __init__(self, clip_border: bool = True):
        self.clip_border = clip_border

    @staticmethod
    def points_of(priors: torch.Tensor) -> torch.Tensor:
        return (priors[..., :2] + priors[..., 2:]) / 2 if priors.shape[-1] == 4 else priors

    def encode(self, points: torch.Tensor, gt_boxes: torch.Tensor, max_dis: float | None = None,
               eps: float = 0.1) -> torch.Tensor:
        """(..., 4) distances from each point to its box's sides; with ``max_dis`` clamped to
        ``[0, max_dis - eps]`` (GFL's distribution support)."""
        points = self.points_of(points)
        distances = torch.cat([points - gt_boxes[..., :2], gt_boxes[..., 2:] - points], dim=-1)
        if max_dis is not None:
            distances = distances.clamp(min=0, max=max_dis - eps)
        return distances

    def decode(self, points: torch.Tensor, distances: torch.Tensor,
               max_shape=None) -> torch.Tensor:
        """(..., 4) ``xyxy`` boxes ``(x - l, y - t, x + r, y + b)``; clipped to
        ``max_shape = (h, w)`` if given."""
        points = self.points_of(points)
        out = torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)
        if max_shape is not None and self.clip_border:
            out = clip_boxes(out, max_shape)
        return out
