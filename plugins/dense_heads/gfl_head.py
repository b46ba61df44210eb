"""GFL dense head (Li et al., NeurIPS 2020, "Generalized Focal Loss: Learning Qualified and
Distributed Bounding Boxes"): the ATSS detector with its two outputs reshaped.

* Classification-IoU joint score: the class branch is trained with the quality focal loss,
  whose target for a positive is the IoU of its (detached) predicted box with its gt box, so
  that one score both classifies and ranks boxes by localisation quality; no centre-ness.
* General distribution of box sides: each of the four distances ``(l, t, r, b)`` from a
  prior's centre to the box sides (in units of the level's stride) is a softmax over the
  bins ``0, 1, ..., reg_max``, its value the expectation; trained with GIoU on the decoded
  boxes plus the distribution focal loss, both weighted by the positive's highest class
  probability (detached) and averaged by the sum of those weights.

Shapes: ``forward(feats)`` returns ``(cls_scores, bbox_preds)``, lists of
(B, A * C, H_l, W_l) and (B, A * 4 * (reg_max + 1), H_l, W_l); boxes are ``xyxy`` in the
input frame.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmcv.cnn import Scale
from mmengine.structures import InstanceData
from torch import Tensor, nn
from toolbox.models.task_utils import detections_from_levels
from toolbox.registry import MODELS
from toolbox.structures import paired_box_iou

from .retina_head import RetinaHead


def distribution_expectation(logits: Tensor) -> Tensor:
    """(..., n + 1) logits over the bins ``0..n`` -> (...,) expected bin (GFL's integral)."""
    bins = torch.arange(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    return F.softmax(logits, dim=-1) @ bins


@MODELS.register_module()
class GFLHead(RetinaHead):
    """RetinaNet subnets, a box conv of ``4 * (reg_max + 1)`` bins per anchor and a learnable
    ``Scale`` (init 1) per level on the bin logits, trained with ``ATSSAssigner``.

    Args:
        reg_max: largest distance a side can take, in strides (the bins are ``0..reg_max``;
            16 in the paper). Targets are clamped to ``[0, reg_max - 0.01]``.
        loss_cls: ``QualityFocalLoss`` (beta 2).
        loss_dfl: ``DistributionFocalLoss`` (weight 0.25).
        other arguments: :class:`RetinaHead` (the paper: ``ATSSAssigner`` with topk 9, one
            square anchor of octave base scale 8 per location, ``GIoULoss`` with weight 2,
            GN in the subnets). The box coder must be ``DistancePointBBoxCoder`` and
            ``reg_decoded_bbox`` True (the defaults).
    """

    def __init__(self, num_classes: int, in_channels: int, anchor_generator: dict,
                 reg_max: int = 16,
                 loss_cls: dict = dict(type='QualityFocalLoss', beta=2.0, loss_weight=1.0),
                 loss_bbox: dict = dict(type='GIoULoss', loss_weight=2.0),
                 loss_dfl: dict = dict(type='DistributionFocalLoss', loss_weight=0.25),
                 **kwargs):
        kwargs.setdefault('assigner', dict(type='ATSSAssigner', topk=9))
        kwargs.setdefault('bbox_coder', dict(type='DistancePointBBoxCoder'))
        kwargs.setdefault('reg_decoded_bbox', True)
        if kwargs['bbox_coder'].get('type') != 'DistancePointBBoxCoder' or \
                not kwargs['reg_decoded_bbox']:
            raise ValueError(f"GFLHead regresses side distances on decoded boxes: it needs "
                             f"bbox_coder=dict(type='DistancePointBBoxCoder') and "
                             f"reg_decoded_bbox=True, got {kwargs['bbox_coder']} and "
                             f"{kwargs['reg_decoded_bbox']}")
        super().__init__(num_classes, in_channels, anchor_generator, loss_cls=loss_cls,
                         loss_bbox=loss_bbox, **kwargs)
        self.reg_max = reg_max
        num_anchors = self.prior_generator.num_base_anchors[0]
        self.retina_reg = nn.Conv2d(self.retina_reg.in_channels,
                                    num_anchors * 4 * (reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.prior_generator.strides)
        self.loss_dfl = MODELS.build(loss_dfl)
        self.reset_parameters()

    def forward(self, feats):
        if len(feats) != len(self.scales):
            raise ValueError(f'GFLHead has scales for {len(self.scales)} levels, got '
                             f'{len(feats)} maps')
        cls_scores, bbox_preds = [], []
        for x, scale in zip(feats, self.scales):
            cls_feat, reg_feat = self.subnet_features(x)
            cls_scores.append(self.retina_cls(cls_feat))
            bbox_preds.append(scale(self.retina_reg(reg_feat)))
        return cls_scores, bbox_preds

    def prior_strides(self, maps) -> Tensor:
        """(N,) stride of each prior of :meth:`grid_priors`, in the same order."""
        counts = torch.as_tensor(self.num_priors_per_level(maps), device=maps[0].device)
        strides = torch.as_tensor(self.prior_generator.strides, dtype=torch.float32,
                                  device=maps[0].device)
        return torch.repeat_interleave(strides, counts)

    def loss_by_feat(self, cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None) -> dict[str, Tensor]:
        anchors = self.grid_priors(cls_scores)
        targets = self.get_targets(anchors, batch_gt_instances, batch_img_metas,
                                   batch_gt_instances_ignore,
                                   num_level_priors=self.num_priors_per_level(cls_scores))
        num_images, bins = len(batch_gt_instances), self.reg_max + 1
        cls_flat = self.flatten_levels(cls_scores, self.num_classes)  # (B, N, C)
        dist_flat = self.flatten_levels(bbox_preds, 4 * bins)  # (B, N, 4 * bins)
        pos = targets.pos_mask
        quality = cls_flat.new_zeros(pos.shape)  # (B, N) IoU targets of the positives
        if pos.any():
            pos_anchors = anchors.expand(num_images, -1, -1)[pos]
            pos_strides = self.prior_strides(cls_scores).expand(num_images, -1)[pos][:, None]
            pos_logits = dist_flat[pos].reshape(-1, bins)  # (P * 4, bins)
            pred_boxes = self.bbox_coder.decode(
                pos_anchors, distribution_expectation(pos_logits).reshape(-1, 4) * pos_strides)
            gt_boxes = targets.bbox_targets[pos]
            iou = paired_box_iou(pred_boxes.detach(), gt_boxes)
            quality[pos] = iou.clamp(min=0).to(quality.dtype)
        loss_cls = self.loss_cls(cls_flat.reshape(-1, self.num_classes),
                                 (targets.labels.reshape(-1), quality.reshape(-1)),
                                 weight=targets.label_weights.reshape(-1),
                                 avg_factor=targets.avg_factor)
        if not pos.any():  # zeros connected to the box branch (DDP sees every parameter used)
            zero = dist_flat.sum() * 0
            return dict(loss_cls=loss_cls, loss_bbox=zero, loss_dfl=zero)
        # each positive counts by its best class probability (detached), as in the paper
        box_weights = cls_flat[pos].detach().sigmoid().max(dim=1).values
        box_avg = self.avg_factor(box_weights.sum().item(), cls_flat.device)
        loss_bbox = self.loss_bbox(pred_boxes, gt_boxes, weight=box_weights, avg_factor=box_avg)
        side_targets = self.bbox_coder.encode(pos_anchors, gt_boxes) / pos_strides
        side_targets = side_targets.clamp(min=0, max=self.reg_max - 0.01)
        loss_dfl = self.loss_dfl(pos_logits, side_targets.reshape(-1),
                                 weight=box_weights[:, None].expand(-1, 4).reshape(-1),
                                 avg_factor=4.0 * box_avg)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_dfl=loss_dfl)

    @torch.no_grad()
    def predict_by_feat(self, cls_scores, bbox_preds, batch_img_metas,
                        cfg: dict | None = None) -> list[InstanceData]:
        """:meth:`RetinaHead.predict_by_feat` with the expected side distances (pixels) in
        place of the deltas; the score is the joint class-quality probability."""
        cfg = dict(self.test_cfg, **(cfg or {}))
        num_images, bins = cls_scores[0].shape[0], self.reg_max + 1
        per_level_anchors = self.grid_priors_per_level(cls_scores)
        scores = [m.permute(0, 2, 3, 1).reshape(num_images, -1, self.num_classes).sigmoid()
                  for m in cls_scores]
        distances = [distribution_expectation(
            m.permute(0, 2, 3, 1).reshape(num_images, -1, 4, bins)) * stride
            for m, stride in zip(bbox_preds, self.prior_generator.strides)]
        return detections_from_levels(scores, distances, per_level_anchors, self.bbox_coder,
                                      batch_img_metas, cfg)
