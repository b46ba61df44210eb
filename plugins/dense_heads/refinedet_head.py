"""RefineDet head (Zhang et al. 2018): anchor refinement module (ARM), transfer connection
block (TCB) and object detection module (ODM), the two-step cascaded regression.

* ARM, on the backbone sources: per anchor 2 logits (object, background) and 4 deltas that
  refine the anchor: ``refined = decode(anchor, arm_deltas)``.
* TCB, the detector's neck (:class:`toolbox_plugins.necks.tcb.TCB`), turns the sources into
  ODM features; the head receives ``(backbone_feats, neck_feats)`` (``uses_backbone_feats``).
* ODM, on the TCB features: per anchor ``C + 1`` softmax logits (background last) and 4
  deltas relative to the refined anchor: ``box = decode(refined, odm_deltas)``.
* Negative anchor filtering: anchors whose ARM object probability is <= ``objectness_thr``
  (negative confidence >= 0.99) are ignored by the ODM loss and removed at inference.

Training (reference/ANCHORS.md 3.1): each ground truth takes its best anchor, other anchors
are positive at IoU >= 0.5 and negative below; ARM matches against the anchors, ODM against
the refined anchors (ARM deltas detached). Negatives are mined per image by their
confidence loss for the background (``-log softmax[background]``, as SSD), ``neg_pos_ratio``
(3) per positive; the configured classification loss (softmax cross-entropy by default) is then
applied to positives and mined negatives. Every loss is a sum divided by the
number of positives of its module (the batch total); an image without positives adds no
negatives, so a batch without positives gives zero losses.

Anchor order and output layout follow :class:`~toolbox.models.task_utils.AnchorGenerator`:
row ``(y * W + x) * A + a`` of a level. Parameter shapes match the RefineDet PyTorch port, so
the VGG16 model has its 34,440,884 (21 classes) / 36,100,484 (81) parameters.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmengine.structures import InstanceData
from torch import Tensor, nn

from toolbox.models.bases import BaseDenseHead
from toolbox.models.task_utils import centers_inside, nms_instances
from toolbox.registry import MODELS

REFINEDET_ANCHORS = dict(type='AnchorGenerator', strides=[8, 16, 32, 64],
                         base_sizes=[32, 64, 128, 256], scales=[1.0], ratios=[1.0, 0.5, 2.0],
                         center_offset=0.5)


def cascade_decode(coder, anchors: Tensor, arm_deltas: Tensor, odm_deltas: Tensor,
                   max_shape=None) -> tuple[Tensor, Tensor]:
    """The two-step regression: ``refined = decode(anchors, arm_deltas)``, then
    ``boxes = decode(refined, odm_deltas)`` (clipped to ``max_shape = (h, w)`` if given).

    ``anchors`` (..., 4) ``xyxy`` broadcastable to the deltas (..., 4); returns
    ``(refined, boxes)``, both (..., 4) ``xyxy``. The refined anchors are not clipped.
    """
    refined = coder.decode(anchors.expand_as(arm_deltas), arm_deltas)
    return refined, coder.decode(refined, odm_deltas, max_shape=max_shape)


def mine_hard_negatives(neg_loss: Tensor, labels: Tensor, background: int,
                        neg_pos_ratio: float) -> tuple[Tensor, Tensor]:
    """Pick positives and the hardest negatives of each image.

    Args:
        neg_loss: (B, N) per-anchor confidence loss of the background (only its order
            matters).
        labels: (B, N) int64: ``background`` for negatives, -1 for ignored anchors, otherwise
            a positive class.
        background: the background label.
        neg_pos_ratio: negatives kept per positive of the same image.

    Returns:
        ``(pos, neg)`` (B, N) bool masks; image b gets ``min(ratio * num_pos_b,
        num_negatives_b)`` negatives, those with the highest ``neg_loss``.
    """
    pos = (labels >= 0) & (labels != background)
    candidates = labels == background
    num_neg = torch.minimum((neg_pos_ratio * pos.sum(1)).long(), candidates.sum(1))
    score = neg_loss.detach().masked_fill(~candidates, float('-inf'))
    rank = score.argsort(dim=1, descending=True).argsort(dim=1)
    neg = (rank < num_neg[:, None]) & candidates
    return pos, neg


@MODELS.register_module()
class RefineDetHead(BaseDenseHead):
    """ARM on the backbone sources + ODM on the TCB neck's outputs.

    Args:
        num_classes: object classes C (the ODM predicts C + 1 with background last).
        in_channels: channels of the backbone sources (VGG16: 512, 512, 1024, 512).
        feat_channels: channels of the neck's (TCB) outputs, one per level or one for all
            (256).
        anchor_generator: ``AnchorGenerator`` config; RefineDet uses one size per level
            (32, 64, 128, 256 at strides 8, 16, 32, 64, centred at ``(x + 0.5) * stride``) and
            ratios 1, 1/2, 2 (``h / w``), 3 anchors per location: 6375 anchors for a 320x320
            input, 16320 for 512x512.
        bbox_coder: ``DeltaXYWHBoxCoder`` with SSD variances ``stds=(0.1, 0.1, 0.2, 0.2)``.
        assigner: ``MaxIoUAssigner`` (pos 0.5, neg 0.5, each gt's best anchor positive).
        loss_cls: ODM classification loss over C + 1 logits (``CrossEntropyLoss``); called
            with ``weight`` = positives and mined negatives, ``avg_factor`` = positives.
        loss_arm_cls: ARM object / background loss (``CrossEntropyLoss``), called alike.
        loss_bbox: box loss on encoded deltas (``SmoothL1Loss``, beta 1).
        neg_pos_ratio: hard negative mining ratio (3) for both modules.
        objectness_thr: theta of negative anchor filtering (0.01).
        test_cfg: ``score_thr`` (0.01), ``nms_pre`` (1000 best anchors per class before NMS),
            ``iou_threshold`` (0.45), ``max_per_img`` (500).

    ``forward((backbone_feats, neck_feats))`` returns four lists over levels: ARM logits
    (B, A * 2, H, W), ARM deltas (B, A * 4, H, W), ODM logits (B, A * (C + 1), H, W), ODM
    deltas (B, A * 4, H, W).
    """

    uses_backbone_feats = True
    default_test_cfg = dict(score_thr=0.01, nms_pre=1000, iou_threshold=0.45, max_per_img=500)

    def __init__(self, num_classes: int, in_channels: Sequence[int],
                 feat_channels: int | Sequence[int] = 256,
                 anchor_generator: dict = REFINEDET_ANCHORS,
                 bbox_coder: dict = dict(type='DeltaXYWHBoxCoder', stds=(0.1, 0.1, 0.2, 0.2)),
                 assigner: dict = dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                                       min_pos_iou=0.0, gt_max_assign_all=False),
                 loss_cls: dict = dict(type='CrossEntropyLoss'),
                 loss_arm_cls: dict = dict(type='CrossEntropyLoss'),
                 loss_bbox: dict = dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0),
                 neg_pos_ratio: float = 3.0, objectness_thr: float = 0.01,
                 test_cfg: dict | None = None, init_cfg: dict | list | None = None):
        super().__init__(num_classes, prior_generator=anchor_generator, bbox_coder=bbox_coder,
                         assigner=assigner, loss_cls=loss_cls, loss_bbox=loss_bbox,
                         test_cfg=test_cfg, init_cfg=init_cfg)
        in_channels = tuple(in_channels)
        feat_channels = (feat_channels,) * len(in_channels) if isinstance(feat_channels, int) \
            else tuple(feat_channels)
        if not len(self.prior_generator.strides) == len(in_channels) == len(feat_channels):
            raise ValueError(f'RefineDetHead: {len(in_channels)} source levels, '
                             f'{len(feat_channels)} neck levels and '
                             f'{len(self.prior_generator.strides)} anchor strides must agree')
        self.loss_arm_cls = MODELS.build(loss_arm_cls)
        self.neg_pos_ratio = neg_pos_ratio
        self.objectness_thr = objectness_thr
        num_anchors = self.prior_generator.num_base_anchors[0]
        self.num_anchors = num_anchors
        self.arm_cls = nn.ModuleList(nn.Conv2d(c, num_anchors * 2, 3, padding=1)
                                     for c in in_channels)
        self.arm_reg = nn.ModuleList(nn.Conv2d(c, num_anchors * 4, 3, padding=1)
                                     for c in in_channels)
        self.odm_cls = nn.ModuleList(
            nn.Conv2d(c, num_anchors * (num_classes + 1), 3, padding=1) for c in feat_channels)
        self.odm_reg = nn.ModuleList(nn.Conv2d(c, num_anchors * 4, 3, padding=1)
                                     for c in feat_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform convs and zero biases (the RefineDet PyTorch port)."""
        for module in (self.arm_cls, self.arm_reg, self.odm_cls, self.odm_reg):
            for conv in module:
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, feats):
        sources, odm_feats = feats
        if len(sources) != len(self.arm_cls) or len(odm_feats) != len(self.odm_cls):
            raise ValueError(f'RefineDetHead has {len(self.arm_cls)} levels, got '
                             f'{len(sources)} backbone and {len(odm_feats)} neck maps')
        arm_cls = [conv(x) for conv, x in zip(self.arm_cls, sources)]
        arm_reg = [conv(x) for conv, x in zip(self.arm_reg, sources)]
        odm_cls = [conv(x) for conv, x in zip(self.odm_cls, odm_feats)]
        odm_reg = [conv(x) for conv, x in zip(self.odm_reg, odm_feats)]
        return arm_cls, arm_reg, odm_cls, odm_reg

    def flat_outputs(self, arm_cls, arm_reg, odm_cls, odm_reg
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The four output lists flattened to (B, N, 2), (B, N, 4), (B, N, C + 1), (B, N, 4)."""
        return (self.flatten_levels(arm_cls, 2), self.flatten_levels(arm_reg, 4),
                self.flatten_levels(odm_cls, self.num_classes + 1),
                self.flatten_levels(odm_reg, 4))

    # ------------------------------------------------------------------ training
    def _labels(self, targets) -> Tensor:
        """Target labels with -1 where the prior is ignored (zero label weight)."""
        return targets.labels.masked_fill(targets.label_weights == 0, -1)

    def _module_losses(self, loss_cls, logits: Tensor, deltas: Tensor, labels: Tensor,
                       box_targets: Tensor) -> tuple[Tensor, Tensor]:
        """Classification loss on positives + mined negatives and box loss on positives, both
        divided by the number of positives. logits (B, N, K) with background ``K - 1``."""
        num_logits = logits.shape[-1]
        background_loss = -logits.detach().log_softmax(-1)[..., num_logits - 1]
        pos, neg = mine_hard_negatives(background_loss, labels, num_logits - 1,
                                       self.neg_pos_ratio)
        num_pos = self.avg_factor(pos.sum().item(), logits.device)
        loss = loss_cls(logits.reshape(-1, num_logits), labels.clamp(min=0).reshape(-1),
                        weight=(pos | neg).reshape(-1).to(logits.dtype), avg_factor=num_pos)
        loss_box = self.loss_on_positives(self.loss_bbox, deltas[pos], box_targets[pos],
                                          num_pos, deltas)
        return loss, loss_box

    def loss_by_feat(self, arm_cls, arm_reg, odm_cls, odm_reg, batch_gt_instances,
                     batch_img_metas, batch_gt_instances_ignore=None) -> dict[str, Tensor]:
        anchors = self.grid_priors(arm_cls)
        arm_cls, arm_reg, odm_cls, odm_reg = self.flat_outputs(arm_cls, arm_reg, odm_cls,
                                                               odm_reg)
        refined = self.bbox_coder.decode(anchors.expand_as(arm_reg), arm_reg.detach())
        arm_targets = self.get_targets(anchors, batch_gt_instances, batch_img_metas,
                                       batch_gt_instances_ignore, background_label=1,
                                       class_agnostic=True)
        odm_targets = self.get_targets(refined, batch_gt_instances, batch_img_metas,
                                       batch_gt_instances_ignore)
        # negative anchor filtering: the ODM ignores anchors the ARM is sure are background
        objectness = arm_cls.detach().softmax(-1)[..., 0]
        odm_labels = self._labels(odm_targets).masked_fill(objectness <= self.objectness_thr, -1)

        loss_arm_cls, loss_arm_bbox = self._module_losses(
            self.loss_arm_cls, arm_cls, arm_reg, self._labels(arm_targets),
            arm_targets.bbox_targets)
        loss_odm_cls, loss_odm_bbox = self._module_losses(
            self.loss_cls, odm_cls, odm_reg, odm_labels, odm_targets.bbox_targets)
        return dict(loss_arm_cls=loss_arm_cls, loss_arm_bbox=loss_arm_bbox,
                    loss_odm_cls=loss_odm_cls, loss_odm_bbox=loss_odm_bbox)

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def predict_by_feat(self, arm_cls, arm_reg, odm_cls, odm_reg, batch_img_metas,
                        cfg: dict | None = None) -> list[InstanceData]:
        """Per image: drop filtered anchors and those centred in the padding, decode the
        cascade, per class the ``nms_pre`` best anchors above ``score_thr``, class-aware NMS
        at ``iou_threshold``, the ``max_per_img`` best. Boxes are in the input (resized)
        frame, clipped to ``img_shape``; ``scores`` are the ODM softmax probabilities of
        ``labels``."""
        cfg = dict(self.test_cfg, **(cfg or {}))
        anchors = self.grid_priors(arm_cls)
        arm_cls, arm_reg, odm_cls, odm_reg = self.flat_outputs(arm_cls, arm_reg, odm_cls,
                                                               odm_reg)
        objectness = arm_cls.softmax(-1)[..., 0]
        class_scores = odm_cls.softmax(-1)[..., :self.num_classes]
        results = []
        for b, meta in enumerate(batch_img_metas):
            keep = (objectness[b] > self.objectness_thr) & centers_inside(anchors,
                                                                           meta['img_shape'])
            _, boxes = cascade_decode(self.bbox_coder, anchors[keep], arm_reg[b][keep],
                                      odm_reg[b][keep], max_shape=meta['img_shape'])
            scores = class_scores[b][keep]  # (K, C)
            k = min(cfg['nms_pre'], scores.shape[0]) if cfg['nms_pre'] > 0 else scores.shape[0]
            top_scores, top_idx = scores.topk(k, dim=0)  # (k, C) best anchors of each class
            labels = torch.arange(self.num_classes, device=scores.device).expand_as(top_idx)
            valid = top_scores > cfg['score_thr']
            results.append(nms_instances(boxes[top_idx[valid]], top_scores[valid],
                                         labels[valid], cfg['iou_threshold'],
                                         cfg['max_per_img']))
        return results
