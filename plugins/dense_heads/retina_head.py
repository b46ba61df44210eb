"""RetinaNet dense head (Lin et al. 2017): per-level class and box subnets over anchors.

Parameter names follow mmdet (``cls_convs.{i}.conv``, ``reg_convs.{i}.conv``, ``retina_cls``,
``retina_reg``) so that the R50-FPN recipe has exactly MMDetection's parameter count.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from mmengine.dist import all_reduce, get_world_size
from mmengine.structures import InstanceData

from toolbox.models.task_utils import nms_instances, select_topk_candidates
from toolbox.registry import MODELS, TASK_UTILS


class ConvReLU(nn.Module):
    """3x3 conv (with bias) + ReLU; the parameter lives at ``.conv`` as in mmdet's ConvModule."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def mean_over_processes(value: float, device) -> float:
    """Average a count over DDP processes so that every process normalises alike."""
    if get_world_size() == 1:
        return value
    tensor = torch.tensor(float(value), device=device)
    all_reduce(tensor, op='mean')
    return tensor.item()


@MODELS.register_module()
class RetinaHead(nn.Module):
    """Shared class/box subnets applied to every pyramid level.

    Args:
        num_classes: number of object classes C (no background logit: sigmoid per class).
        in_channels: channels of every input level.
        feat_channels, stacked_convs: width and depth of each subnet (256, 4).
        anchor_generator: ``AnchorGenerator`` config (RetinaNet: octave_base_scale 4,
            scales_per_octave 3, ratios 0.5/1/2, strides 8..128).
        bbox_coder: box coder config (``DeltaXYWHBoxCoder``).
        assigner: ``MaxIoUAssigner`` config (pos 0.5, neg 0.4, min_pos_iou 0).
        loss_cls: ``FocalLoss`` config; loss_bbox: ``L1Loss``/``SmoothL1Loss`` on deltas or
            ``GIoULoss`` on decoded boxes (set ``reg_decoded_bbox=True``).
        test_cfg: ``dict(nms_pre=1000, score_thr=0.05, iou_threshold=0.5, max_per_img=100)``.
        prior_prob: initial foreground probability of the classifier bias (0.01).

    Shapes: ``forward(feats)`` takes a tuple of (B, in_channels, H_l, W_l) and returns
    ``(cls_scores, bbox_preds)``, lists of (B, A * C, H_l, W_l) and (B, A * 4, H_l, W_l).
    """

    def __init__(self, num_classes: int, in_channels: int, anchor_generator: dict,
                 feat_channels: int = 256, stacked_convs: int = 4,
                 bbox_coder: dict = dict(type='DeltaXYWHBoxCoder'),
                 assigner: dict = dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                       min_pos_iou=0.0),
                 loss_cls: dict = dict(type='FocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0),
                 loss_bbox: dict = dict(type='L1Loss', loss_weight=1.0),
                 reg_decoded_bbox: bool = False, test_cfg: dict | None = None,
                 prior_prob: float = 0.01):
        super().__init__()
        self.num_classes = num_classes
        self.anchor_generator = TASK_UTILS.build(anchor_generator)
        self.bbox_coder = TASK_UTILS.build(bbox_coder)
        self.assigner = TASK_UTILS.build(assigner)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.reg_decoded_bbox = reg_decoded_bbox
        self.test_cfg = dict(nms_pre=1000, score_thr=0.05, iou_threshold=0.5, max_per_img=100)
        self.test_cfg.update(test_cfg or {})
        num_anchors = self.anchor_generator.num_base_anchors[0]
        self.cls_convs = nn.ModuleList(
            ConvReLU(in_channels if i == 0 else feat_channels, feat_channels)
            for i in range(stacked_convs))
        self.reg_convs = nn.ModuleList(
            ConvReLU(in_channels if i == 0 else feat_channels, feat_channels)
            for i in range(stacked_convs))
        self.retina_cls = nn.Conv2d(feat_channels, num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(feat_channels, num_anchors * 4, 3, padding=1)
        self._init_weights(prior_prob)

    def _init_weights(self, prior_prob: float):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)
        nn.init.constant_(self.retina_cls.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward(self, feats):
        cls_scores, bbox_preds = [], []
        for x in feats:
            cls_feat, reg_feat = x, x
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            cls_scores.append(self.retina_cls(cls_feat))
            bbox_preds.append(self.retina_reg(reg_feat))
        return cls_scores, bbox_preds

    def _flatten(self, maps, channels: int) -> torch.Tensor:
        """list of (B, A * K, H, W) -> (B, sum_l H_l W_l A, K), anchor order of AnchorGenerator."""
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, channels) for m in maps],
                         dim=1)

    def _anchors(self, feats_or_maps) -> tuple[torch.Tensor, list[int]]:
        sizes = [tuple(m.shape[-2:]) for m in feats_or_maps]
        per_level = self.anchor_generator.grid_anchors(sizes, device=feats_or_maps[0].device)
        return torch.cat(per_level), [len(a) for a in per_level]

    def loss(self, feats, data_samples) -> dict[str, torch.Tensor]:
        cls_scores, bbox_preds = self(feats)
        anchors, _ = self._anchors(cls_scores)
        cls_flat = self._flatten(cls_scores, self.num_classes)  # (B, N, C)
        reg_flat = self._flatten(bbox_preds, 4)  # (B, N, 4)

        labels, label_weights, box_targets, pos_masks = [], [], [], []
        for sample in data_samples:
            gt = sample.gt_instances
            ignored = sample.ignored_instances.bboxes if 'ignored_instances' in sample else None
            result = self.assigner.assign(anchors, gt.bboxes, gt.labels, ignored)
            image_labels = torch.full_like(result.gt_index, self.num_classes)
            image_labels[result.pos_mask] = result.labels[result.pos_mask]
            labels.append(image_labels)
            label_weights.append((result.gt_index >= 0).float())
            targets = anchors.new_zeros(anchors.shape)
            if result.pos_mask.any():
                matched = gt.bboxes[result.gt_index[result.pos_mask] - 1]
                targets[result.pos_mask] = matched if self.reg_decoded_bbox else \
                    self.bbox_coder.encode(anchors[result.pos_mask], matched)
            box_targets.append(targets)
            pos_masks.append(result.pos_mask)
        labels, label_weights = torch.stack(labels), torch.stack(label_weights)
        box_targets, pos_masks = torch.stack(box_targets), torch.stack(pos_masks)

        num_pos = max(mean_over_processes(pos_masks.sum().item(), anchors.device), 1.0)
        loss_cls = self.loss_cls(cls_flat.reshape(-1, self.num_classes), labels.reshape(-1),
                                 weight=label_weights.reshape(-1), avg_factor=num_pos)
        pos_pred = reg_flat[pos_masks]
        if self.reg_decoded_bbox:
            pos_anchors = anchors.expand(len(data_samples), -1, -1)[pos_masks]
            pos_pred = self.bbox_coder.decode(pos_anchors, pos_pred)
        loss_bbox = self.loss_bbox(pos_pred, box_targets[pos_masks], avg_factor=num_pos)
        if pos_pred.numel() == 0:
            loss_bbox = reg_flat.sum() * 0  # keep the graph connected on empty batches
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    @torch.no_grad()
    def predict(self, feats, data_samples) -> list[InstanceData]:
        """Per image: sigmoid scores, ``nms_pre`` best per level above ``score_thr``, decode,
        class-aware NMS. Boxes are in the input (resized) frame, clipped to ``img_shape``."""
        cls_scores, bbox_preds = self(feats)
        per_level_anchors = self.anchor_generator.grid_anchors(
            [tuple(m.shape[-2:]) for m in cls_scores], device=cls_scores[0].device)
        cfg = self.test_cfg
        results = []
        for b, sample in enumerate(data_samples):
            boxes, scores, labels = [], [], []
            for anchors, cls_map, reg_map in zip(per_level_anchors, cls_scores, bbox_preds):
                level_scores = cls_map[b].permute(1, 2, 0).reshape(-1, self.num_classes).sigmoid()
                level_deltas = reg_map[b].permute(1, 2, 0).reshape(-1, 4)
                s, idx, lab = select_topk_candidates(level_scores, cfg['score_thr'],
                                                     cfg['nms_pre'])
                boxes.append(self.bbox_coder.decode(anchors[idx], level_deltas[idx],
                                                    max_shape=sample.img_shape))
                scores.append(s)
                labels.append(lab)
            results.append(nms_instances(torch.cat(boxes), torch.cat(scores), torch.cat(labels),
                                         cfg['iou_threshold'], cfg['max_per_img']))
        return results
