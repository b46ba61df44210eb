"""Region Proposal Network head (Ren et al. 2015, Faster R-CNN; FPN variant of Lin et al. 2017).

One shared 3x3 conv + ReLU per pyramid level, then a 1x1 objectness classifier (one sigmoid
logit per anchor) and a 1x1 box regressor (4 deltas per anchor). Parameter names follow mmdet
(``rpn_conv``, ``rpn_cls``, ``rpn_reg``).

Proposals are produced for the whole batch at once: per level the ``nms_pre`` best anchors of
every image (one ``topk`` over (B, N_l)), decoding, clipping to each image's ``img_shape``,
the size filter, then one ``torchvision.ops.batched_nms`` over all images and levels (groups
``image * L + level``: NMS within a level, as mmdet and torchvision) and the ``max_per_img``
best of each image.
"""
from __future__ import annotations

import torch
from mmengine.structures import InstanceData
from torch import Tensor, nn

from toolbox.models.bases import BaseDenseHead
from toolbox.models.task_utils import proposals_from_levels
from toolbox.registry import MODELS


@MODELS.register_module()
class RPNHead(BaseDenseHead):
    """Class-agnostic anchor head proposing object boxes.

    Args:
        in_channels: channels of every input level.
        feat_channels: channels of the shared 3x3 conv (256).
        anchor_generator: ``AnchorGenerator``; mmdet: ``scales=[8]``, ratios 0.5/1/2, strides
            4..64 (sizes 32..512, three anchors per location). torchvision's rounded base
            anchors: ``round_base_anchors=True``.
        num_classes: 1 (objectness).
        bbox_coder: ``DeltaXYWHBoxCoder`` (stds 1, the torchvision weights (1, 1, 1, 1)).
        assigner: ``MaxIoUAssigner`` 0.7 / 0.3, low-quality matches at >= 0.3.
        sampler: ``RandomSampler`` 256 anchors, half positive, no gt added.
        loss_cls: sigmoid binary cross-entropy, i.e. ``FocalLoss(gamma=0, alpha=-1)``
            (focal loss with gamma 0 and no alpha weighting is exactly BCE).
        loss_bbox: ``L1Loss`` on deltas. Both losses are averaged over the sampled anchors
            (positives + negatives), as in mmdet and torchvision.
        test_cfg: ``nms_pre`` (per level and image, on scores), ``iou_threshold`` (0.7),
            ``max_per_img`` proposals, ``score_thr`` (kept if sigmoid >= it),
            ``min_bbox_size`` (kept if w and h > it), ``nms_across_levels`` (False: NMS within
            each level).

    Shapes: ``forward(feats)`` -> ``(cls_scores, bbox_preds)``, lists of (B, A, H_l, W_l) and
    (B, A * 4, H_l, W_l). Predictions: ``InstanceData(bboxes (P, 4) xyxy input frame,
    scores (P,) sigmoid, labels (P,) zeros)`` per image, sorted by score.
    """

    default_test_cfg = dict(nms_pre=1000, max_per_img=1000, iou_threshold=0.7, score_thr=0.0,
                            min_bbox_size=0.0, nms_across_levels=False)

    def __init__(self, in_channels: int,
                 anchor_generator: dict = dict(type='AnchorGenerator', scales=[8],
                                               ratios=[0.5, 1.0, 2.0],
                                               strides=[4, 8, 16, 32, 64]),
                 feat_channels: int = 256, num_classes: int = 1,
                 bbox_coder: dict = dict(type='DeltaXYWHBoxCoder'),
                 assigner: dict = dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                                       min_pos_iou=0.3, match_low_quality=True),
                 sampler: dict = dict(type='RandomSampler', num=256, pos_fraction=0.5,
                                      add_gt_as_proposals=False),
                 loss_cls: dict = dict(type='FocalLoss', gamma=0.0, alpha=-1.0,
                                       loss_weight=1.0),
                 loss_bbox: dict = dict(type='L1Loss', loss_weight=1.0),
                 reg_decoded_bbox: bool = False, test_cfg: dict | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(num_classes, prior_generator=anchor_generator, bbox_coder=bbox_coder,
                         assigner=assigner, sampler=sampler, loss_cls=loss_cls,
                         loss_bbox=loss_bbox, reg_decoded_bbox=reg_decoded_bbox,
                         test_cfg=test_cfg, init_cfg=init_cfg)
        num_anchors = self.prior_generator.num_base_anchors[0]
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors * num_classes, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(std=0.01) weights, zero biases (mmdet and torchvision)."""
        for conv in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feats):
        cls_scores, bbox_preds = [], []
        for x in feats:
            x = torch.relu(self.rpn_conv(x))
            cls_scores.append(self.rpn_cls(x))
            bbox_preds.append(self.rpn_reg(x))
        return cls_scores, bbox_preds

    def loss_by_feat(self, cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None) -> dict[str, Tensor]:
        anchors = self.grid_priors(cls_scores)
        cls_flat = self.flatten_levels(cls_scores, self.num_classes)  # (B, N, 1)
        reg_flat = self.flatten_levels(bbox_preds, 4)  # (B, N, 4)
        targets = self.get_targets(anchors, batch_gt_instances, batch_img_metas,
                                   batch_gt_instances_ignore, class_agnostic=True)
        num_sampled = (targets.pos_mask | targets.neg_mask).sum().item()
        avg_factor = self.avg_factor(num_sampled, cls_flat.device)
        loss_cls = self.loss_cls(cls_flat.reshape(-1, self.num_classes),
                                 targets.labels.reshape(-1),
                                 weight=targets.label_weights.reshape(-1),
                                 avg_factor=avg_factor)
        pos = targets.pos_mask
        pos_pred = reg_flat[pos]
        if self.reg_decoded_bbox:
            pos_anchors = anchors.expand(len(batch_gt_instances), -1, -1)[pos]
            pos_pred = self.bbox_coder.decode(pos_anchors, pos_pred)
        loss_bbox = self.loss_on_positives(self.loss_bbox, pos_pred, targets.bbox_targets[pos],
                                           avg_factor, reg_flat)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    @torch.no_grad()
    def predict_by_feat(self, cls_scores, bbox_preds, batch_img_metas,
                        cfg: dict | None = None) -> list[InstanceData]:
        cfg = dict(self.test_cfg, **(cfg or {}))
        per_level_anchors = self.grid_priors_per_level(cls_scores)
        return proposals_from_levels(
            [m.permute(0, 2, 3, 1).reshape(m.shape[0], -1) for m in cls_scores],
            [m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, 4) for m in bbox_preds],
            per_level_anchors, self.bbox_coder, batch_img_metas, cfg)
