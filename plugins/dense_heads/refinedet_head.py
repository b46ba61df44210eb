"""RefineDet head (Zhang et al. 2018): anchor refinement module (ARM), transfer connection
block (TCB) and object detection module (ODM), the two-step cascaded regression.

* ARM, on the backbone sources: per anchor 2 logits (object, background) and 4 deltas that
  refine the anchor: ``refined = decode(anchor, arm_deltas)``.
* TCB (a neck plugin built from ``tcb``) turns the sources into ODM features.
* ODM, on the TCB features: per anchor ``C + 1`` softmax logits (background last) and 4
  deltas relative to the refined anchor: ``box = decode(refined, odm_deltas)``.
* Negative anchor filtering: anchors whose ARM object probability is <= ``objectness_thr``
  (negative confidence >= 0.99) are ignored by the ODM loss and removed at inference.

Training (reference/ANCHORS.md 3.1): each ground truth takes its best anchor, other anchors
are positive at IoU >= 0.5 and negative below; ARM matches against the anchors, ODM against
the refined anchors (ARM deltas detached). Negatives are mined per image by their
classification loss, ``neg_pos_ratio`` (3) per positive. Every loss is a sum divided by the
number of positives of its module (the batch total); an image without positives adds no
negatives, so a batch without positives gives zero losses.

Anchor order and output layout follow :class:`~toolbox.models.task_utils.AnchorGenerator`:
row ``(y * W + x) * A + a`` of a level. Parameter shapes match the RefineDet PyTorch port, so
the VGG16 model has its 34,440,884 (21 classes) / 36,100,484 (81) parameters.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torch import Tensor, nn

from toolbox.models.task_utils import nms_instances
from toolbox.registry import MODELS, TASK_UTILS

from toolbox_plugins.dense_heads.retina_head import mean_over_processes  # moved to core next

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


def mine_hard_negatives(cls_loss: Tensor, labels: Tensor, background: int,
                        neg_pos_ratio: float) -> tuple[Tensor, Tensor]:
    """Pick positives and the hardest negatives of each image.

    Args:
        cls_loss: (B, N) per-anchor classification loss (only its order matters).
        labels: (B, N) int64: ``background`` for negatives, -1 for ignored anchors, otherwise
            a positive class.
        background: the background label.
        neg_pos_ratio: negatives kept per positive of the same image.

    Returns:
        ``(pos, neg)`` (B, N) bool masks; image b gets ``min(ratio * num_pos_b,
        num_negatives_b)`` negatives, those with the highest ``cls_loss``.
    """
    pos = (labels >= 0) & (labels != background)
    candidates = labels == background
    num_neg = torch.minimum((neg_pos_ratio * pos.sum(1)).long(), candidates.sum(1))
    score = cls_loss.detach().masked_fill(~candidates, float('-inf'))
    rank = score.argsort(dim=1, descending=True).argsort(dim=1)
    neg = (rank < num_neg[:, None]) & candidates
    return pos, neg


@MODELS.register_module()
class RefineDetHead(nn.Module):
    """ARM + TCB + ODM.

    Args:
        num_classes: object classes C (the ODM predicts C + 1 with background last).
        in_channels: channels of the backbone sources (VGG16: 512, 512, 1024, 512).
        tcb: neck config (``dict(type='TCB', out_channels=256)``); ``in_channels`` and
            ``in_strides`` are filled in from this head's inputs and anchor strides. Any neck
            that keeps the number and sizes of the levels and declares ``out_channels`` per
            level fits.
        anchor_generator: ``AnchorGenerator`` config; RefineDet uses one size per level
            (32, 64, 128, 256 at strides 8, 16, 32, 64, centred at ``(x + 0.5) * stride``) and
            ratios 1, 1/2, 2 (``h / w``), 3 anchors per location: 6375 anchors for a 320x320
            input, 16320 for 512x512.
        bbox_coder: ``DeltaXYWHBoxCoder`` with SSD variances ``stds=(0.1, 0.1, 0.2, 0.2)``.
        assigner: ``MaxIoUAssigner`` (pos 0.5, neg 0.5, each gt's best anchor positive).
        loss_bbox: box loss on encoded deltas (``SmoothL1Loss``, beta 1).
        neg_pos_ratio: hard negative mining ratio (3) for both modules.
        objectness_thr: theta of negative anchor filtering (0.01).
        test_cfg: ``score_thr`` (0.01), ``nms_pre`` (1000 best anchors per class before NMS),
            ``iou_threshold`` (0.45), ``max_per_img`` (500).

    ``forward(feats)`` returns four lists over levels: ARM logits (B, A * 2, H, W), ARM deltas
    (B, A * 4, H, W), ODM logits (B, A * (C + 1), H, W), ODM deltas (B, A * 4, H, W).
    """

    def __init__(self, num_classes: int, in_channels: Sequence[int],
                 tcb: dict = dict(type='TCB', out_channels=256),
                 anchor_generator: dict = REFINEDET_ANCHORS,
                 bbox_coder: dict = dict(type='DeltaXYWHBoxCoder', stds=(0.1, 0.1, 0.2, 0.2)),
                 assigner: dict = dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                                       min_pos_iou=0.0, gt_max_assign_all=False),
                 loss_bbox: dict = dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0),
                 neg_pos_ratio: float = 3.0, objectness_thr: float = 0.01,
                 test_cfg: dict | None = None):
        super().__init__()
        in_channels = tuple(in_channels)
        self.num_classes = num_classes
        self.anchor_generator = TASK_UTILS.build(anchor_generator)
        if len(self.anchor_generator.strides) != len(in_channels):
            raise ValueError(f'{len(in_channels)} input levels but the anchor generator has '
                             f'{len(self.anchor_generator.strides)} strides')
        self.bbox_coder = TASK_UTILS.build(bbox_coder)
        self.assigner = TASK_UTILS.build(assigner)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.neg_pos_ratio = neg_pos_ratio
        self.objectness_thr = objectness_thr
        self.test_cfg = dict(score_thr=0.01, nms_pre=1000, iou_threshold=0.45, max_per_img=500)
        self.test_cfg.update(test_cfg or {})

        tcb = dict(tcb)
        tcb.setdefault('in_channels', in_channels)
        tcb.setdefault('in_strides', tuple(self.anchor_generator.strides))
        self.tcb = MODELS.build(tcb)
        odm_channels = tuple(self.tcb.out_channels)
        if len(odm_channels) != len(in_channels):
            raise ValueError(f'the tcb neck returns {len(odm_channels)} levels, the head has '
                             f'{len(in_channels)}')
        num_anchors = self.anchor_generator.num_base_anchors[0]
        self.num_anchors = num_anchors
        self.arm_cls = nn.ModuleList(nn.Conv2d(c, num_anchors * 2, 3, padding=1)
                                     for c in in_channels)
        self.arm_reg = nn.ModuleList(nn.Conv2d(c, num_anchors * 4, 3, padding=1)
                                     for c in in_channels)
        self.odm_cls = nn.ModuleList(
            nn.Conv2d(c, num_anchors * (num_classes + 1), 3, padding=1) for c in odm_channels)
        self.odm_reg = nn.ModuleList(nn.Conv2d(c, num_anchors * 4, 3, padding=1)
                                     for c in odm_channels)
        for module in (self.arm_cls, self.arm_reg, self.odm_cls, self.odm_reg):
            for conv in module:
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, feats: Sequence[Tensor]):
        arm_cls = [conv(x) for conv, x in zip(self.arm_cls, feats)]
        arm_reg = [conv(x) for conv, x in zip(self.arm_reg, feats)]
        odm_feats = self.tcb(feats)
        odm_cls = [conv(x) for conv, x in zip(self.odm_cls, odm_feats)]
        odm_reg = [conv(x) for conv, x in zip(self.odm_reg, odm_feats)]
        return arm_cls, arm_reg, odm_cls, odm_reg

    @staticmethod
    def _flatten(maps, channels: int) -> Tensor:
        """list of (B, A * K, H, W) -> (B, sum_l H_l W_l A, K), anchor order of the generator."""
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, channels) for m in maps],
                         dim=1)

    def anchors(self, maps) -> Tensor:
        """(N, 4) anchors of all levels for the output maps (or features) ``maps``."""
        sizes = [tuple(m.shape[-2:]) for m in maps]
        return torch.cat(self.anchor_generator.grid_anchors(sizes, device=maps[0].device))

    def flat_outputs(self, outs) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The four output lists flattened to (B, N, 2), (B, N, 4), (B, N, C + 1), (B, N, 4)."""
        arm_cls, arm_reg, odm_cls, odm_reg = outs
        return (self._flatten(arm_cls, 2), self._flatten(arm_reg, 4),
                self._flatten(odm_cls, self.num_classes + 1), self._flatten(odm_reg, 4))

    # ------------------------------------------------------------------ training
    def loss(self, feats, data_samples) -> dict[str, Tensor]:
        return self.loss_by_outputs(self(feats), data_samples)

    def _targets(self, anchors: Tensor, sample, binary: bool) -> tuple[Tensor, Tensor]:
        """Labels (N,) and encoded box targets (N, 4) of one image for reference boxes
        ``anchors`` (N, 4). Labels: the gt class (0 for every object if ``binary``), the
        background (``1`` if ``binary``, else ``num_classes``) or -1 (ignored)."""
        gt = sample.gt_instances
        ignored = sample.ignored_instances.bboxes if 'ignored_instances' in sample else None
        gt_labels = torch.zeros_like(gt.labels) if binary else gt.labels
        result = self.assigner.assign(anchors, gt.bboxes, gt_labels, ignored)
        labels = torch.full_like(result.gt_index, 1 if binary else self.num_classes)
        labels[result.gt_index < 0] = -1
        labels[result.pos_mask] = result.labels[result.pos_mask]
        targets = anchors.new_zeros(anchors.shape)
        if result.pos_mask.any():
            matched = gt.bboxes[result.gt_index[result.pos_mask] - 1]
            targets[result.pos_mask] = self.bbox_coder.encode(anchors[result.pos_mask], matched)
        return labels, targets

    def _module_losses(self, logits: Tensor, deltas: Tensor, labels: Tensor,
                       targets: Tensor) -> tuple[Tensor, Tensor]:
        """Softmax CE on positives + mined negatives and box loss on positives, both divided
        by the number of positives. logits (B, N, K) with background ``K - 1``."""
        num_logits = logits.shape[-1]
        ce = F.cross_entropy(logits.reshape(-1, num_logits), labels.clamp(min=0).reshape(-1),
                             reduction='none').reshape(labels.shape)
        pos, neg = mine_hard_negatives(ce, labels, num_logits - 1, self.neg_pos_ratio)
        num_pos = max(mean_over_processes(pos.sum().item(), logits.device), 1.0)
        loss_cls = (ce * (pos | neg)).sum() / num_pos
        if pos.any():
            loss_box = self.loss_bbox(deltas[pos], targets[pos], avg_factor=num_pos)
        else:
            loss_box = deltas.sum() * 0  # keep the graph connected
        return loss_cls, loss_box

    def loss_by_outputs(self, outs, data_samples) -> dict[str, Tensor]:
        arm_cls, arm_reg, odm_cls, odm_reg = self.flat_outputs(outs)
        anchors = self.anchors(outs[0])
        refined = self.bbox_coder.decode(anchors.expand_as(arm_reg), arm_reg.detach())

        arm_targets = [self._targets(anchors, s, binary=True) for s in data_samples]
        odm_targets = [self._targets(refined[b], s, binary=False)
                       for b, s in enumerate(data_samples)]
        arm_labels = torch.stack([t[0] for t in arm_targets])
        arm_boxes = torch.stack([t[1] for t in arm_targets])
        odm_labels = torch.stack([t[0] for t in odm_targets])
        odm_boxes = torch.stack([t[1] for t in odm_targets])

        # negative anchor filtering: the ODM ignores anchors the ARM is sure are background
        objectness = arm_cls.detach().softmax(-1)[..., 0]
        odm_labels = odm_labels.masked_fill(objectness <= self.objectness_thr, -1)

        loss_arm_cls, loss_arm_bbox = self._module_losses(arm_cls, arm_reg, arm_labels,
                                                          arm_boxes)
        loss_odm_cls, loss_odm_bbox = self._module_losses(odm_cls, odm_reg, odm_labels,
                                                          odm_boxes)
        return dict(loss_arm_cls=loss_arm_cls, loss_arm_bbox=loss_arm_bbox,
                    loss_odm_cls=loss_odm_cls, loss_odm_bbox=loss_odm_bbox)

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def predict(self, feats, data_samples) -> list[InstanceData]:
        return self.predict_by_outputs(self(feats), data_samples)

    @torch.no_grad()
    def predict_by_outputs(self, outs, data_samples) -> list[InstanceData]:
        """Per image: drop filtered anchors, decode the cascade, per class the ``nms_pre`` best
        anchors above ``score_thr``, class-aware NMS at ``iou_threshold``, the
        ``max_per_img`` best. Boxes are in the input (resized) frame, clipped to
        ``img_shape``; ``scores`` are the ODM softmax probabilities of ``labels``."""
        arm_cls, arm_reg, odm_cls, odm_reg = self.flat_outputs(outs)
        anchors = self.anchors(outs[0])
        objectness = arm_cls.softmax(-1)[..., 0]
        class_scores = odm_cls.softmax(-1)[..., :self.num_classes]
        cfg = self.test_cfg
        results = []
        for b, sample in enumerate(data_samples):
            keep = objectness[b] > self.objectness_thr
            _, boxes = cascade_decode(self.bbox_coder, anchors[keep], arm_reg[b][keep],
                                      odm_reg[b][keep], max_shape=sample.img_shape)
            scores = class_scores[b][keep]  # (K, C)
            k = min(cfg['nms_pre'], scores.shape[0]) if cfg['nms_pre'] > 0 else scores.shape[0]
            top_scores, top_idx = scores.topk(k, dim=0)  # (k, C) best anchors of each class
            labels = torch.arange(self.num_classes, device=scores.device).expand_as(top_idx)
            valid = top_scores > cfg['score_thr']
            results.append(nms_instances(boxes[top_idx[valid]], top_scores[valid],
                                         labels[valid], cfg['iou_threshold'],
                                         cfg['max_per_img']))
        return results
