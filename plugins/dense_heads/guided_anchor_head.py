"""Guided Anchoring (Wang et al., CVPR 2019): anchors whose locations and shapes are predicted.

Per pyramid level (stride s) the head predicts

* a location map (1x1 conv, sigmoid): the probability that an object centre falls in a cell;
* a shape map (1x1 conv to ``(dw, dh)``): the anchor of a cell is the square of side
  ``anchor_scale * s`` centred on it, resized by ``w = anchor_scale * s * exp(std_w * dw)``
  (``anchor_coder``, means 0);
* feature adaption: a 3x3 deformable conv (4 offset groups, ``torchvision.ops.deform_conv2d``)
  whose offsets are a 1x1 conv of the *detached* shape map, so features follow anchor shapes;
* classification and box regression on the adapted features, relative to the guided anchors.

Training targets:

* location (:meth:`GuidedAnchorHead.loc_targets`): each gt goes to level
  ``floor(log2(sqrt(w h)) - log2(anchor_scale * s_0) + 0.5)`` (clamped); on that level, the
  centre region (box shrunk to ``center_ratio`` of its width and height, rounded to cells) is
  positive with weight 1, the rest of the ignore region (``ignore_ratio``) has weight 0, the
  ignore regions of the gt on the two adjacent levels have weight 0, every other cell is a
  negative with weight ``outside_weight`` (0.1). A centre region wins over any ignore region
  (MMDetection writes the gts in order, so there a later gt's ignore region can overwrite an
  earlier gt's centre; the two rules differ only for overlapping objects). Focal loss averaged
  over ``(number of cells) / 200``.
* shape: ``ApproxMaxIoUAssigner`` over the 9 approximate anchors of each cell (3 scales x 3
  ratios), ``RandomSampler``; the bounded IoU loss between the predicted anchor and the gt of
  each sampled positive, averaged over the positives.
* classification / regression: the usual dense-head targets on the guided anchors of every cell.

Inference skips the cells whose location probability is under ``loc_filter_thr`` (0.01): the
classifier and regressor are evaluated only at the kept cells (:func:`masked_conv2d`), and the
skipped cells are never proposed. Parameter names follow MMDetection (``conv_loc``,
``conv_shape``, ``feature_adaption.conv_offset`` / ``conv_adaption``, ``conv_cls``,
``conv_reg``; GA-RetinaNet ``retina_cls`` / ``retina_reg``), so the COCO recipes have its
parameter counts (GA-RPN R50-FPN 28,034,520; GA-RetinaNet R50-FPN 37,600,439).

All boxes ``xyxy`` absolute pixels in the input frame.
"""
from __future__ import annotations

import math

import torch
from mmcv.cnn import ConvModule
from mmengine.structures import InstanceData
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from toolbox.models.bases import BaseDenseHead
from toolbox.models.layers import deform_conv_forward
from toolbox.models.task_utils import (PseudoSampler, centers_inside, nms_instances,
                                       proposals_from_levels, select_topk_candidates)
from toolbox.models.utils import to_float32
from toolbox.registry import MODELS, TASK_UTILS


def masked_conv2d(x: Tensor, conv: nn.Conv2d, index: Tensor) -> Tensor:
    """``conv(x)`` evaluated only at the cells ``index`` (K, 3) ``[b, y, x]`` -> (K, C_out).

    Equal to ``conv(x)[index[:, 0], :, index[:, 1], index[:, 2]]`` for a stride-1 conv with
    ``padding = kernel // 2`` (MMCV's ``MaskedConv2d``), without computing the other cells:
    the k x k patches of the K cells are gathered and multiplied by the kernel once.
    """
    kh, kw = conv.kernel_size
    ph, pw = conv.padding
    if index.numel() == 0:
        return x.new_zeros((0, conv.out_channels))
    padded = nn.functional.pad(x, (pw, pw, ph, ph))
    dy, dx = torch.meshgrid(torch.arange(kh, device=x.device), torch.arange(kw, device=x.device),
                            indexing='ij')
    ys = index[:, 1, None] + dy.reshape(1, -1)  # (K, kh kw), in padded coordinates
    xs = index[:, 2, None] + dx.reshape(1, -1)
    patches = padded.permute(0, 2, 3, 1)[index[:, 0, None], ys, xs]  # (K, kh kw, C)
    patches = patches.permute(0, 2, 1).reshape(index.shape[0], -1)  # (K, C kh kw)
    out = patches @ conv.weight.reshape(conv.out_channels, -1).t()
    return out + conv.bias if conv.bias is not None else out


class FeatureAdaption(nn.Module):
    """3x3 deformable conv whose offsets come from the (detached) anchor shape map.

    ``conv_offset``: 1x1, 2 -> ``deform_groups * 2 * 3 * 3`` channels, no bias;
    ``conv_adaption``: ``torchvision.ops.DeformConv2d`` 3x3, no bias (MMCV's ``DeformConv2d``);
    then ReLU. ``forward(x (B, C, H, W), shape (B, 2, H, W)) -> (B, C_out, H, W)``. With zero
    offsets it is a plain 3x3 conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 deform_groups: int = 4):
        super().__init__()
        self.conv_offset = nn.Conv2d(2, deform_groups * 2 * kernel_size * kernel_size, 1,
                                     bias=False)
        self.conv_adaption = DeformConv2d(in_channels, out_channels, kernel_size,
                                          padding=(kernel_size - 1) // 2, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """MMDetection: offsets normal(0.1), deformable kernel normal(0.01)."""
        nn.init.normal_(self.conv_offset.weight, std=0.1)
        nn.init.normal_(self.conv_adaption.weight, std=0.01)

    def forward(self, x: Tensor, shape: Tensor) -> Tensor:
        offset = self.conv_offset(shape.detach())
        return torch.relu(deform_conv_forward(self.conv_adaption, x, offset))


def calc_region(boxes: Tensor, ratio: float, featmap_size) -> Tensor:
    """(G, 4) boxes in cell units -> (G, 4) int64 inclusive cell ranges ``x1, y1, x2, y2`` of
    the box shrunk by ``ratio`` on each side (``round``), clamped to ``[0, W]`` / ``[0, H]``."""
    x1 = torch.round((1 - ratio) * boxes[:, 0] + ratio * boxes[:, 2])
    y1 = torch.round((1 - ratio) * boxes[:, 1] + ratio * boxes[:, 3])
    x2 = torch.round(ratio * boxes[:, 0] + (1 - ratio) * boxes[:, 2])
    y2 = torch.round(ratio * boxes[:, 1] + (1 - ratio) * boxes[:, 3])
    h, w = featmap_size
    return torch.stack([x1.clamp(0, w), y1.clamp(0, h), x2.clamp(0, w), y2.clamp(0, h)],
                       dim=1).long()


def _region_masks(regions: Tensor, featmap_size) -> Tensor:
    """(G, 4) inclusive cell ranges -> (G, H * W) bool masks."""
    h, w = featmap_size
    ys = torch.arange(h, device=regions.device)
    xs = torch.arange(w, device=regions.device)
    in_y = (ys >= regions[:, 1, None]) & (ys <= regions[:, 3, None])  # (G, H)
    in_x = (xs >= regions[:, 0, None]) & (xs <= regions[:, 2, None])  # (G, W)
    return (in_y[:, :, None] & in_x[:, None, :]).reshape(regions.shape[0], h * w)


class GuidedAnchorHead(BaseDenseHead):
    """Location, shape, feature adaption and the GA-RPN-style 1x1 classifier / regressor.

    Args:
        num_classes: C (1 for GA-RPN).
        in_channels: channels of the features this head's branches read.
        feat_channels: channels of the adapted features.
        approx_anchor_generator: the k approximate anchors per cell of the shape targets
            (GA-RPN: ``octave_base_scale=8, scales_per_octave=3``, ratios 0.5/1/2).
        square_anchor_generator: one square per cell (``scales=[8], ratios=[1.0]``).
        anchor_coder: decodes ``(0, 0, dw, dh)`` on squares (``wh_ratio_clip=1e-6``).
        bbox_coder: box deltas relative to the guided anchors.
        anchor_scale: the "8" of the level assignment; the approximate generator's smallest
            scale by default (its ``octave_base_scale``).
        deform_groups: offset groups of the feature adaption (4).
        loc_filter_thr: inference keeps cells with sigmoid(location) >= it (0.01).
        center_ratio, ignore_ratio, outside_weight: location targets (0.2, 0.5, 0.1).
        loc_avg_divisor: the location loss is averaged over ``cells / loc_avg_divisor`` (200).
        ga_assigner, ga_sampler: shape targets (``ApproxMaxIoUAssigner``, ``RandomSampler``).
        assigner, sampler: classification / regression targets on guided anchors.
        loss_loc: ``FocalLoss``; loss_shape: ``BoundedIoULoss(beta=0.2)``; loss_cls,
            loss_bbox: as any dense head. Box and class losses are averaged over the sampled
            anchors with a random sampler, over the positives with ``PseudoSampler``.
        test_cfg: see the subclasses.

    ``forward(feats)`` -> ``(cls_scores, bbox_preds, shape_preds, loc_preds)``: lists of
    (B, C, H, W), (B, 4, H, W), (B, 2, H, W), (B, 1, H, W) (one anchor per cell).
    """

    cls_bias_prior: bool = False  # classifier bias at probability 0.01 (focal-loss heads)

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 256,
                 approx_anchor_generator: dict = dict(type='AnchorGenerator',
                                                      octave_base_scale=8, scales_per_octave=3,
                                                      ratios=[0.5, 1.0, 2.0],
                                                      strides=[4, 8, 16, 32, 64]),
                 square_anchor_generator: dict = dict(type='AnchorGenerator', ratios=[1.0],
                                                      scales=[8], strides=[4, 8, 16, 32, 64]),
                 anchor_coder: dict = dict(type='DeltaXYWHBoxCoder', wh_ratio_clip=1e-6),
                 bbox_coder: dict = dict(type='DeltaXYWHBoxCoder'),
                 anchor_scale: float | None = None, deform_groups: int = 4,
                 loc_filter_thr: float = 0.01, center_ratio: float = 0.2,
                 ignore_ratio: float = 0.5, outside_weight: float = 0.1,
                 loc_avg_divisor: float = 200.0,
                 ga_assigner: dict = dict(type='ApproxMaxIoUAssigner', pos_iou_thr=0.7,
                                          neg_iou_thr=0.3, min_pos_iou=0.3),
                 ga_sampler: dict = dict(type='RandomSampler', num=256, pos_fraction=0.5,
                                         add_gt_as_proposals=False),
                 assigner: dict = dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                                       min_pos_iou=0.3),
                 sampler: dict = dict(type='RandomSampler', num=256, pos_fraction=0.5,
                                      add_gt_as_proposals=False),
                 loss_loc: dict = dict(type='FocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0),
                 loss_shape: dict = dict(type='BoundedIoULoss', beta=0.2, loss_weight=1.0),
                 loss_cls: dict = dict(type='FocalLoss', gamma=0.0, alpha=-1.0,
                                       loss_weight=1.0),
                 loss_bbox: dict = dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0),
                 reg_decoded_bbox: bool = False, test_cfg: dict | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(num_classes, prior_generator=square_anchor_generator,
                         bbox_coder=bbox_coder, assigner=assigner, sampler=sampler,
                         loss_cls=loss_cls, loss_bbox=loss_bbox,
                         reg_decoded_bbox=reg_decoded_bbox, test_cfg=test_cfg,
                         init_cfg=init_cfg)
        if self.prior_generator.num_base_anchors[0] != 1:
            raise ValueError('square_anchor_generator must give one anchor per cell')
        self.approx_generator = TASK_UTILS.build(approx_anchor_generator)
        self.anchor_coder = TASK_UTILS.build(anchor_coder)
        self.ga_assigner = TASK_UTILS.build(ga_assigner)
        self.ga_sampler = TASK_UTILS.build(ga_sampler)
        self.loss_loc = MODELS.build(loss_loc)
        self.loss_shape = MODELS.build(loss_shape)
        self.anchor_scale = float(self.approx_generator.scales.min()) if anchor_scale is None \
            else float(anchor_scale)
        self.loc_filter_thr = loc_filter_thr
        self.center_ratio, self.ignore_ratio = center_ratio, ignore_ratio
        self.outside_weight = outside_weight
        self.loc_avg_divisor = loc_avg_divisor
        self.in_channels, self.feat_channels = in_channels, feat_channels
        self.deform_groups = deform_groups
        self.init_layers()
        self.reset_parameters()

    # ------------------------------------------------------------------ layers
    def init_layers(self) -> None:
        self.conv_loc = nn.Conv2d(self.in_channels, 1, 1)
        self.conv_shape = nn.Conv2d(self.in_channels, 2, 1)
        self.feature_adaption = FeatureAdaption(self.in_channels, self.feat_channels, 3,
                                                self.deform_groups)
        self.conv_cls = nn.Conv2d(self.feat_channels, self.num_classes, 1)
        self.conv_reg = nn.Conv2d(self.feat_channels, 4, 1)

    def out_convs(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        """The (classifier, regressor) convs evaluated on the adapted features."""
        return self.conv_cls, self.conv_reg

    def reset_parameters(self) -> None:
        """Normal(0.01) convs, zero biases; the location bias (and with ``cls_bias_prior`` the
        classifier bias) at probability 0.01 (MMDetection)."""
        prior_bias = -math.log((1 - 0.01) / 0.01)
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and not isinstance(module, DeformConv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if isinstance(module, FeatureAdaption):
                module.reset_parameters()
        nn.init.constant_(self.conv_loc.bias, prior_bias)
        if self.cls_bias_prior:
            nn.init.constant_(self.out_convs()[0].bias, prior_bias)

    def level_features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One level -> ``(cls_feat, reg_feat, shape_pred, loc_pred)``, features adapted."""
        loc_pred = self.conv_loc(x)
        shape_pred = self.conv_shape(x)
        feat = self.feature_adaption(x, shape_pred)
        return feat, feat, shape_pred, loc_pred

    def forward(self, feats):
        cls_conv, reg_conv = self.out_convs()
        outs = ([], [], [], [])
        for x in feats:
            cls_feat, reg_feat, shape_pred, loc_pred = self.level_features(x)
            for out, value in zip(outs, (cls_conv(cls_feat), reg_conv(reg_feat), shape_pred,
                                         loc_pred)):
                out.append(value)
        return outs

    # ------------------------------------------------------------------ anchors
    def square_anchors(self, maps) -> list[Tensor]:
        """Per level (H W, 4) squares (cached through :meth:`grid_priors`)."""
        squares = self.grid_priors(maps)
        return list(squares.split(self.num_priors_per_level(maps)))

    def guided_anchors(self, squares: Tensor, shape: Tensor) -> Tensor:
        """Squares (N, 4) and shape deltas (B, N, 2) -> (B, N, 4) anchors (no gradient)."""
        deltas = torch.cat([torch.zeros_like(shape), shape], dim=-1).detach()
        return self.anchor_coder.decode(squares.expand(shape.shape[0], -1, -1), deltas)

    # ------------------------------------------------------------------ targets
    def loc_targets(self, batch_gt_instances, featmap_sizes, device
                    ) -> tuple[list[Tensor], list[Tensor], float]:
        """Location targets and weights per level, (B, H_l W_l) each, and the loss average
        factor ``(B sum_l H_l W_l) / loc_avg_divisor`` (module docstring). Vectorised over
        the gts of the whole batch."""
        num_images, num_levels = len(batch_gt_instances), len(featmap_sizes)
        strides = self.approx_generator.strides
        boxes = torch.cat([g.bboxes for g in batch_gt_instances]).to(device).reshape(-1, 4)
        image_ids = torch.cat([torch.full((len(g),), i, dtype=torch.long)
                               for i, g in enumerate(batch_gt_instances)]).to(device)
        scale = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-6).sqrt()
        levels = torch.floor(torch.log2(scale) - math.log2(self.anchor_scale * strides[0])
                             + 0.5).clamp(0, num_levels - 1).long()
        r_center, r_ignore = (1 - self.center_ratio) / 2, (1 - self.ignore_ratio) / 2
        gts_of_image = torch.nn.functional.one_hot(image_ids, num_images).t().float()  # (B, G)
        targets, weights = [], []
        for level, (size, stride) in enumerate(zip(featmap_sizes, strides)):
            cells = boxes / stride
            center = _region_masks(calc_region(cells, r_center, size), size).float()
            ignore = _region_masks(calc_region(cells, r_ignore, size), size).float()
            own = (levels == level).float()[:, None]
            adjacent = ((levels - level).abs() == 1).float()[:, None]
            is_center = gts_of_image @ (center * own) > 0  # (B, H W)
            is_ignored = gts_of_image @ (ignore * (own + adjacent)) > 0
            weight = torch.full(is_center.shape, self.outside_weight, device=device)
            weight[is_ignored] = 0.0
            weight[is_center] = 1.0
            targets.append(is_center.float())
            weights.append(weight)
        num_cells = num_images * sum(h * w for h, w in featmap_sizes)
        return targets, weights, num_cells / self.loc_avg_divisor

    def shape_targets(self, squares: Tensor, approxs: Tensor, batch_gt_instances,
                      batch_gt_instances_ignore=None):
        """Sampled positives of the shape loss: ``(image index (P,), cell index (P,), gt boxes
        (P, 4))`` from the approximate-anchor assignment of every image."""
        ignores = batch_gt_instances_ignore or [None] * len(batch_gt_instances)
        image_ids, cells, gts = [], [], []
        for i, (gt, ignore) in enumerate(zip(batch_gt_instances, ignores)):
            pred = InstanceData(priors=squares, approxs=approxs)
            assigned = self.ga_assigner.assign(pred, gt, ignore)
            sampled = self.ga_sampler.sample(assigned, InstanceData(priors=squares), gt)
            image_ids.append(torch.full_like(sampled.pos_inds, i))
            cells.append(sampled.pos_inds)
            gts.append(sampled.pos_gt_bboxes.reshape(-1, 4))
        return torch.cat(image_ids), torch.cat(cells), torch.cat(gts)

    # ------------------------------------------------------------------ losses
    def loss_by_feat(self, cls_scores, bbox_preds, shape_preds, loc_preds, batch_gt_instances,
                     batch_img_metas, batch_gt_instances_ignore=None) -> dict[str, Tensor]:
        device = cls_scores[0].device
        sizes = [tuple(m.shape[-2:]) for m in cls_scores]
        squares = self.grid_priors(cls_scores)  # (N, 4)
        approxs = torch.cat(self.approx_generator.grid_anchors(sizes, device=device))
        approxs = approxs.reshape(squares.shape[0], -1, 4)  # (N, k, 4), cell-major

        loc_targets, loc_weights, loc_avg = self.loc_targets(batch_gt_instances, sizes, device)
        loc_flat = self.flatten_levels(loc_preds, 1).reshape(-1, 1)
        loss_loc = self.loss_loc(loc_flat, torch.cat(loc_targets, 1).reshape(-1, 1),
                                 weight=torch.cat(loc_weights, 1).reshape(-1), avg_factor=loc_avg)

        shape_flat = self.flatten_levels(shape_preds, 2)  # (B, N, 2)
        image_ids, cells, gt_boxes = self.shape_targets(squares, approxs, batch_gt_instances,
                                                        batch_gt_instances_ignore)
        pos_shape = shape_flat[image_ids, cells]
        pred_anchors = self.anchor_coder.decode(
            squares[cells], torch.cat([torch.zeros_like(pos_shape), pos_shape], dim=-1))
        loss_shape = self.loss_on_positives(self.loss_shape, pred_anchors, gt_boxes,
                                            self.avg_factor(cells.numel(), device), shape_flat)

        anchors = self.guided_anchors(squares, shape_flat)  # (B, N, 4), all cells in training
        cls_flat = self.flatten_levels(cls_scores, self.num_classes)
        reg_flat = self.flatten_levels(bbox_preds, 4)
        targets = self.get_targets(anchors, batch_gt_instances, batch_img_metas,
                                   batch_gt_instances_ignore)
        if isinstance(self.sampler, PseudoSampler):
            avg_factor = targets.avg_factor
        else:
            avg_factor = self.avg_factor((targets.pos_mask | targets.neg_mask).sum().item(),
                                         device)
        loss_cls = self.loss_cls(cls_flat.reshape(-1, self.num_classes),
                                 targets.labels.reshape(-1),
                                 weight=targets.label_weights.reshape(-1), avg_factor=avg_factor)
        pos = targets.pos_mask
        pos_pred = reg_flat[pos]
        if self.reg_decoded_bbox:
            pos_pred = self.bbox_coder.decode(anchors[pos], pos_pred)
        loss_bbox = self.loss_on_positives(self.loss_bbox, pos_pred, targets.bbox_targets[pos],
                                           avg_factor, reg_flat)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_shape=loss_shape,
                    loss_loc=loss_loc)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, x, data_samples) -> list[InstanceData]:
        """Masked inference: the classifier and regressor run only at the cells kept by the
        location filter; the skipped cells get ``-inf`` logits (never predicted)."""
        metas = [s.metainfo for s in data_samples]
        if self.training:
            return self.predict_by_feat(*to_float32(self(x)), batch_img_metas=metas)
        cls_conv, reg_conv = self.out_convs()
        outs = ([], [], [], [])
        for feat in x:
            cls_feat, reg_feat, shape_pred, loc_pred = self.level_features(feat)
            keep = loc_pred[:, 0].sigmoid() >= self.loc_filter_thr  # (B, H, W)
            index = keep.nonzero()  # (K, 3) [b, y, x]
            b, _, h, w = loc_pred.shape
            # fp32 maps (decoded in fp32 anyway): under autocast the masked products are bf16
            # or fp16 and the bias addition may promote them
            cls_map = loc_pred.new_full((b, h, w, self.num_classes), float('-inf'),
                                        dtype=torch.float32)
            reg_map = loc_pred.new_zeros((b, h, w, 4), dtype=torch.float32)
            cls_map[keep] = masked_conv2d(cls_feat, cls_conv, index).float()
            reg_map[keep] = masked_conv2d(reg_feat, reg_conv, index).float()
            for out, value in zip(outs, (cls_map.permute(0, 3, 1, 2),
                                         reg_map.permute(0, 3, 1, 2), shape_pred, loc_pred)):
                out.append(value)
        return self.predict_by_feat(*to_float32(outs), batch_img_metas=metas)

    def level_candidates(self, cls_scores, bbox_preds, shape_preds, loc_preds):
        """Per level ``(logits (B, N_l, C), deltas (B, N_l, 4), anchors (B, N_l, 4))``; in eval
        mode the cells under ``loc_filter_thr`` get ``-inf`` logits."""
        squares = self.square_anchors(cls_scores)
        out = []
        for sq, cls_map, reg_map, shape_map, loc_map in zip(squares, cls_scores, bbox_preds,
                                                            shape_preds, loc_preds):
            b = cls_map.shape[0]
            logits = cls_map.permute(0, 2, 3, 1).reshape(b, -1, self.num_classes)
            if not self.training:
                keep = loc_map.permute(0, 2, 3, 1).reshape(b, -1, 1).sigmoid() \
                    >= self.loc_filter_thr
                logits = logits.masked_fill(~keep, float('-inf'))
            shape = shape_map.permute(0, 2, 3, 1).reshape(b, -1, 2)
            out.append((logits, reg_map.permute(0, 2, 3, 1).reshape(b, -1, 4),
                        self.guided_anchors(sq, shape)))
        return out


@MODELS.register_module()
class GARPNHead(GuidedAnchorHead):
    """GA-RPN: a 3x3 conv + ReLU (``rpn_conv``), then the guided anchor branches with a
    class-agnostic sigmoid classifier. Proposals as :class:`RPNHead` (batched per-level top-k,
    NMS within each level, ``max_per_img``), from the kept cells only.

    ``test_cfg``: ``nms_pre`` 1000, ``max_per_img`` 1000, ``iou_threshold`` 0.7,
    ``min_bbox_size`` 0, ``score_thr`` 0, ``nms_across_levels`` False.
    """

    default_test_cfg = dict(nms_pre=1000, max_per_img=1000, iou_threshold=0.7, score_thr=0.0,
                            min_bbox_size=0.0, nms_across_levels=False)

    def __init__(self, in_channels: int, num_classes: int = 1, feat_channels: int = 256,
                 **kwargs):
        self._rpn_in_channels = in_channels
        super().__init__(num_classes, feat_channels, feat_channels, **kwargs)

    def init_layers(self) -> None:
        self.rpn_conv = nn.Conv2d(self._rpn_in_channels, self.feat_channels, 3, padding=1)
        super().init_layers()

    def level_features(self, x):
        return super().level_features(torch.relu(self.rpn_conv(x)))

    @torch.no_grad()
    def predict_by_feat(self, cls_scores, bbox_preds, shape_preds, loc_preds, batch_img_metas,
                        cfg: dict | None = None) -> list[InstanceData]:
        cfg = dict(self.test_cfg, **(cfg or {}))
        levels = self.level_candidates(cls_scores, bbox_preds, shape_preds, loc_preds)
        return proposals_from_levels([lg[..., 0] for lg, _, _ in levels],
                                     [d for _, d, _ in levels], [a for _, _, a in levels],
                                     self.bbox_coder, batch_img_metas, cfg)


@MODELS.register_module()
class GARetinaHead(GuidedAnchorHead):
    """GA-RetinaNet: RetinaNet's class and box subnets (``stacked_convs`` 3x3 ``ConvModule``),
    the location branch on the class features, the shape branch on the box features, one
    feature adaption per subnet, and 3x3 ``retina_cls`` / ``retina_reg`` (focal loss).

    ``test_cfg``: ``nms_pre`` 1000 per level, ``score_thr`` 0.05, class-aware NMS
    ``iou_threshold`` 0.5, ``max_per_img`` 100.
    """

    default_test_cfg = dict(nms_pre=1000, score_thr=0.05, iou_threshold=0.5, max_per_img=100)
    cls_bias_prior = True

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 256,
                 stacked_convs: int = 4, norm_cfg: dict | None = None,
                 approx_anchor_generator: dict = dict(type='AnchorGenerator',
                                                      octave_base_scale=4, scales_per_octave=3,
                                                      ratios=[0.5, 1.0, 2.0],
                                                      strides=[8, 16, 32, 64, 128]),
                 square_anchor_generator: dict = dict(type='AnchorGenerator', ratios=[1.0],
                                                      scales=[4],
                                                      strides=[8, 16, 32, 64, 128]),
                 ga_assigner: dict = dict(type='ApproxMaxIoUAssigner', pos_iou_thr=0.5,
                                          neg_iou_thr=0.4, min_pos_iou=0.4),
                 assigner: dict = dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                                       min_pos_iou=0.0),
                 sampler: dict = dict(type='PseudoSampler'),
                 loss_cls: dict = dict(type='FocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0),
                 loss_bbox: dict = dict(type='SmoothL1Loss', beta=0.04, loss_weight=1.0),
                 **kwargs):
        self.stacked_convs, self.norm_cfg = stacked_convs, norm_cfg
        self._subnet_in_channels = in_channels
        super().__init__(num_classes, feat_channels, feat_channels,
                         approx_anchor_generator=approx_anchor_generator,
                         square_anchor_generator=square_anchor_generator,
                         ga_assigner=ga_assigner, assigner=assigner, sampler=sampler,
                         loss_cls=loss_cls, loss_bbox=loss_bbox, **kwargs)

    def init_layers(self) -> None:
        c_in, c = self._subnet_in_channels, self.feat_channels
        self.cls_convs = nn.ModuleList(
            ConvModule(c_in if i == 0 else c, c, 3, padding=1, norm_cfg=self.norm_cfg)
            for i in range(self.stacked_convs))
        self.reg_convs = nn.ModuleList(
            ConvModule(c_in if i == 0 else c, c, 3, padding=1, norm_cfg=self.norm_cfg)
            for i in range(self.stacked_convs))
        self.conv_loc = nn.Conv2d(c, 1, 1)
        self.conv_shape = nn.Conv2d(c, 2, 1)
        self.feature_adaption_cls = FeatureAdaption(c, c, 3, self.deform_groups)
        self.feature_adaption_reg = FeatureAdaption(c, c, 3, self.deform_groups)
        self.retina_cls = nn.Conv2d(c, self.num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(c, 4, 3, padding=1)

    def out_convs(self):
        return self.retina_cls, self.retina_reg

    def level_features(self, x):
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        loc_pred = self.conv_loc(cls_feat)
        shape_pred = self.conv_shape(reg_feat)
        return (self.feature_adaption_cls(cls_feat, shape_pred),
                self.feature_adaption_reg(reg_feat, shape_pred), shape_pred, loc_pred)

    @torch.no_grad()
    def predict_by_feat(self, cls_scores, bbox_preds, shape_preds, loc_preds, batch_img_metas,
                        cfg: dict | None = None) -> list[InstanceData]:
        """Per image: sigmoid scores of the kept cells centred inside the image (not in its
        padding), ``nms_pre`` best per level above ``score_thr``, decode on the guided
        anchors, class-aware NMS."""
        cfg = dict(self.test_cfg, **(cfg or {}))
        levels = self.level_candidates(cls_scores, bbox_preds, shape_preds, loc_preds)
        results = []
        for b, meta in enumerate(batch_img_metas):
            boxes, scores, labels = [], [], []
            for logits, deltas, anchors in levels:
                inside = centers_inside(anchors[b], meta['img_shape'])[:, None]
                s, idx, lab = select_topk_candidates(logits[b].sigmoid() * inside,
                                                     cfg['score_thr'], cfg['nms_pre'])
                boxes.append(self.bbox_coder.decode(anchors[b, idx], deltas[b, idx],
                                                    max_shape=meta['img_shape']))
                scores.append(s)
                labels.append(lab)
            results.append(nms_instances(torch.cat(boxes), torch.cat(scores), torch.cat(labels),
                                         cfg['iou_threshold'], cfg['max_per_img']))
        return results
