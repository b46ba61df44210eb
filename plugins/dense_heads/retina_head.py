"""RetinaNet dense head (Lin et al. 2017): per-level class and box subnets over anchors.

Parameter names follow mmdet (mmcv ``ConvModule``: ``cls_convs.{i}.conv``,
``reg_convs.{i}.conv``; ``retina_cls``, ``retina_reg``) so that the R50-FPN recipe has exactly
MMDetection's parameter count.
"""
from __future__ import annotations

import math

import torch
from mmcv.cnn import ConvModule, build_activation_layer
from mmengine.structures import InstanceData
from torch import Tensor, nn

from toolbox.models.bases import BaseDenseHead
from toolbox.models.layers import build_norm_layer, resolve_norm_cfg
from toolbox.models.task_utils import detections_from_levels
from toolbox.registry import MODELS


@MODELS.register_module()
class RetinaHead(BaseDenseHead):
    """Shared class/box subnets applied to every pyramid level.

    Args:
        num_classes: number of object classes C (no background logit: sigmoid per class).
        in_channels: channels of every input level.
        feat_channels, stacked_convs: width and depth of each subnet (256, 4).
        anchor_generator: ``AnchorGenerator`` config (RetinaNet: octave_base_scale 4,
            scales_per_octave 3, ratios 0.5/1/2, strides 8..128).
        bbox_coder: box coder config (``DeltaXYWHBoxCoder``).
        assigner: ``MaxIoUAssigner`` config (pos 0.5, neg 0.4, min_pos_iou 0), or
            ``ATSSAssigner`` (gets the priors' pyramid levels).
        sampler: ``PseudoSampler`` (every positive and negative anchor).
        loss_cls: ``FocalLoss`` config; loss_bbox: ``L1Loss``/``SmoothL1Loss`` on deltas or
            ``GIoULoss`` on decoded boxes (set ``reg_decoded_bbox=True``).
        test_cfg: ``dict(nms_pre=1000, score_thr=0.05, iou_threshold=0.5, max_per_img=100)``.
        prior_prob: initial foreground probability of the classifier bias (0.01).
        norm_cfg: norm of the subnet convs (``None`` in the paper; e.g. GN).

    Shapes: ``forward(feats)`` takes a tuple of (B, in_channels, H, W) and returns
    ``(cls_scores, bbox_preds)``, lists of (B, A * C, H_l, W_l) and (B, A * 4, H_l, W_l).
    """

    default_test_cfg = dict(nms_pre=1000, score_thr=0.05, iou_threshold=0.5, max_per_img=100)

    def __init__(self, num_classes: int, in_channels: int, anchor_generator: dict,
                 feat_channels: int = 256, stacked_convs: int = 4,
                 bbox_coder: dict = dict(type='DeltaXYWHBoxCoder'),
                 assigner: dict = dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                       min_pos_iou=0.0),
                 sampler: dict = dict(type='PseudoSampler'),
                 loss_cls: dict = dict(type='FocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0),
                 loss_bbox: dict = dict(type='L1Loss', loss_weight=1.0),
                 reg_decoded_bbox: bool = False, test_cfg: dict | None = None,
                 prior_prob: float = 0.01, norm_cfg: dict | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(num_classes, prior_generator=anchor_generator, bbox_coder=bbox_coder,
                         assigner=assigner, sampler=sampler, loss_cls=loss_cls,
                         loss_bbox=loss_bbox, reg_decoded_bbox=reg_decoded_bbox,
                         test_cfg=test_cfg, init_cfg=init_cfg)
        self.prior_prob = prior_prob
        num_anchors = self.prior_generator.num_base_anchors[0]
        self.cls_convs = nn.ModuleList(
            ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, padding=1,
                       norm_cfg=norm_cfg) for i in range(stacked_convs))
        self.reg_convs = nn.ModuleList(
            ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, padding=1,
                       norm_cfg=norm_cfg) for i in range(stacked_convs))
        self.retina_cls = nn.Conv2d(feat_channels, num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(feat_channels, num_anchors * 4, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(std=0.01) convs, zero biases, classifier bias at ``prior_prob``."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.constant_(self.retina_cls.bias,
                          -math.log((1 - self.prior_prob) / self.prior_prob))

    def subnet_features(self, x):
        """One level's (B, C_in, H, W) map through the class and box subnets -> two
        (B, feat_channels, H, W) maps."""
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return cls_feat, reg_feat

    def forward(self, feats):
        cls_scores, bbox_preds = [], []
        for x in feats:
            cls_feat, reg_feat = self.subnet_features(x)
            cls_scores.append(self.retina_cls(cls_feat))
            bbox_preds.append(self.retina_reg(reg_feat))
        return cls_scores, bbox_preds

    def anchors_targets_and_cls_loss(self, cls_scores, batch_gt_instances, batch_img_metas,
                                     batch_gt_instances_ignore=None):
        """The part of the loss every anchor head of this family shares: the anchors (N, 4),
        their assigned ``DenseTargets`` and the classification loss over every anchor."""
        anchors = self.grid_priors(cls_scores)
        cls_flat = self.flatten_levels(cls_scores, self.num_classes)  # (B, N, C)
        targets = self.get_targets(anchors, batch_gt_instances, batch_img_metas,
                                   batch_gt_instances_ignore,
                                   num_level_priors=self.num_priors_per_level(cls_scores))
        loss_cls = self.loss_cls(cls_flat.reshape(-1, self.num_classes),
                                 targets.labels.reshape(-1),
                                 weight=targets.label_weights.reshape(-1),
                                 avg_factor=targets.avg_factor)
        return anchors, targets, loss_cls

    def loss_by_feat(self, cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None) -> dict[str, torch.Tensor]:
        anchors, targets, loss_cls = self.anchors_targets_and_cls_loss(
            cls_scores, batch_gt_instances, batch_img_metas, batch_gt_instances_ignore)
        reg_flat = self.flatten_levels(bbox_preds, 4)  # (B, N, 4)
        pos = targets.pos_mask
        pos_pred = reg_flat[pos]
        if self.reg_decoded_bbox:
            pos_anchors = anchors.expand(len(batch_gt_instances), -1, -1)[pos]
            pos_pred = self.bbox_coder.decode(pos_anchors, pos_pred)
        loss_bbox = self.loss_on_positives(self.loss_bbox, pos_pred, targets.bbox_targets[pos],
                                           targets.avg_factor, reg_flat)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    @torch.no_grad()
    def predict_by_feat(self, cls_scores, bbox_preds, batch_img_metas,
                        cfg: dict | None = None, score_factors: list[Tensor] | None = None
                        ) -> list[InstanceData]:
        """Per image: sigmoid scores of the anchors centred inside the image (not in its
        padding), ``nms_pre`` best per level above ``score_thr``, decode, class-aware NMS
        (batched over the images: :func:`~toolbox.models.task_utils.detections_from_levels`).
        Boxes are in the input (resized) frame, clipped to ``img_shape``. ``score_factors``:
        per level (B, N_l) quality probabilities that multiply the selected scores
        (:class:`ATSSHead`'s centre-ness)."""
        cfg = dict(self.test_cfg, **(cfg or {}))
        per_level_anchors = self.grid_priors_per_level(cls_scores)
        num_images = cls_scores[0].shape[0]
        scores = [m.permute(0, 2, 3, 1).reshape(num_images, -1, self.num_classes).sigmoid()
                  for m in cls_scores]
        deltas = [m.permute(0, 2, 3, 1).reshape(num_images, -1, 4) for m in bbox_preds]
        return detections_from_levels(scores, deltas, per_level_anchors, self.bbox_coder,
                                      batch_img_metas, cfg, score_factors)


@MODELS.register_module()
class RetinaSepBNHead(RetinaHead):
    """RetinaNet head whose subnet convs are shared across levels but whose norms are not
    (mmdet's ``RetinaSepBNHead``; the SpineNet / TF RetinaNet head with ``batch_norm`` per
    level).

    Each subnet conv ``j`` is one ``cls_convs[j]`` / ``reg_convs[j]`` (3x3 conv *with bias*, no
    norm, no activation, as in the TF head) applied to every level, followed by its own norm for
    that level (``cls_norms[level][j]`` / ``reg_norms[level][j]``) and ``act_cfg``. The
    classifier and box convs are shared too. For L levels and N subnet convs this is
    ``2 L N`` norms instead of the ``2 N`` convs' worth of extra parameters of separate heads.

    Args:
        num_levels: pyramid levels the head is applied to (one norm set per level); must equal
            the number of anchor strides.
        norm_cfg: norm of every subnet conv (``dict(type='BN')`` by default; the SpineNet
            recipes use SyncBN with momentum 0.01, eps 1e-3).
        act_cfg: activation after each norm (ReLU, or SiLU for the swish recipes).
        other arguments: :class:`RetinaHead`.

    Shapes: as :class:`RetinaHead`; ``forward`` needs exactly ``num_levels`` maps.
    """

    def __init__(self, num_classes: int, in_channels: int, anchor_generator: dict,
                 num_levels: int = 5, norm_cfg: dict | None = None,
                 act_cfg: dict | None = None, **kwargs):
        super().__init__(num_classes, in_channels, anchor_generator, norm_cfg=None, **kwargs)
        strides = self.prior_generator.strides
        if num_levels != len(strides):
            raise ValueError(f'RetinaSepBNHead: num_levels={num_levels} but the anchor '
                             f'generator has {len(strides)} strides {strides}')
        self.num_levels = num_levels
        norm_cfg = resolve_norm_cfg(norm_cfg or dict(type='BN', requires_grad=True), 2)
        act_cfg = dict(act_cfg or dict(type='ReLU', inplace=True))
        feat_channels = self.retina_cls.in_channels
        stacked_convs = len(self.cls_convs)
        for convs in (self.cls_convs, self.reg_convs):
            for j, conv in enumerate(convs):
                convs[j] = ConvModule(conv.in_channels, feat_channels, 3, padding=1,
                                      norm_cfg=None, act_cfg=None)
        self.cls_norms = nn.ModuleList(
            nn.ModuleList(build_norm_layer(norm_cfg, feat_channels)[1]
                          for _ in range(stacked_convs)) for _ in range(num_levels))
        self.reg_norms = nn.ModuleList(
            nn.ModuleList(build_norm_layer(norm_cfg, feat_channels)[1]
                          for _ in range(stacked_convs)) for _ in range(num_levels))
        self.act = build_activation_layer(act_cfg)
        self.reset_parameters()

    def forward(self, feats):
        if len(feats) != self.num_levels:
            raise ValueError(f'RetinaSepBNHead has norms for {self.num_levels} levels, got '
                             f'{len(feats)} maps')
        cls_scores, bbox_preds = [], []
        for x, cls_norms, reg_norms in zip(feats, self.cls_norms, self.reg_norms):
            cls_feat, reg_feat = x, x
            for conv, norm in zip(self.cls_convs, cls_norms):
                cls_feat = self.act(norm(conv(cls_feat)))
            for conv, norm in zip(self.reg_convs, reg_norms):
                reg_feat = self.act(norm(conv(reg_feat)))
            cls_scores.append(self.retina_cls(cls_feat))
            bbox_preds.append(self.retina_reg(reg_feat))
        return cls_scores, bbox_preds
