"""ATSS dense head (Zhang et al., CVPR 2020, "Bridging the Gap Between Anchor-based and
Anchor-free Detection via Adaptive Training Sample Selection"): a RetinaNet head with a
centre-ness branch and a learnable scale per level, trained with ``ATSSAssigner``.

The centre-ness of a positive prior is how close its centre lies to the middle of its
object: with ``(l, t, r, b)`` the distances from the prior's centre to the left, top, right
and bottom sides of the assigned gt box (FCOS, Tian et al. 2019, eq. 3),

    centerness = sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))   in (0, 1].

The branch predicts it (one logit per anchor, on the box subnet) with a binary cross-entropy
(a ``FocalLoss`` with ``gamma=0, alpha=-1`` is exactly that, with soft targets); the box loss
of every positive is weighted by its centre-ness target and averaged by their sum; at test
time a detection's score is ``sigmoid(class logit) * sigmoid(centre-ness logit)``, so that
off-centre, badly placed boxes rank below well-placed ones in NMS and in the AP ranking.
"""
from __future__ import annotations

import torch
from mmcv.cnn import Scale
from mmengine.structures import InstanceData
from torch import Tensor, nn

from toolbox.registry import MODELS

from .retina_head import RetinaHead


def centerness_targets(priors: Tensor, gt_bboxes: Tensor, eps: float = 1e-6) -> Tensor:
    """FCOS / ATSS centre-ness of each prior's centre inside its gt box.

    Args:
        priors: (N, 4) ``xyxy`` priors (anchors), input frame.
        gt_bboxes: (N, 4) ``xyxy`` gt box assigned to each prior.
        eps: floor of the distances, so that a centre on (or outside) a side gives 0, not NaN.

    Returns:
        (N,) values in [0, 1]: 1 at the box centre, 0 on a side.
    """
    centres = (priors[:, :2] + priors[:, 2:]) / 2
    left_top = (centres - gt_bboxes[:, :2]).clamp(min=0)
    right_bottom = (gt_bboxes[:, 2:] - centres).clamp(min=0)
    ratio = torch.minimum(left_top, right_bottom) / torch.maximum(
        left_top, right_bottom).clamp(min=eps)
    return (ratio[:, 0] * ratio[:, 1]).sqrt()


@MODELS.register_module()
class ATSSHead(RetinaHead):
    """RetinaNet subnets plus a centre-ness conv on the box subnet and a learnable ``Scale``
    (init 1) on the box deltas of each level (one per anchor stride).

    Args:
        loss_centerness: binary cross-entropy on the centre-ness logits (``FocalLoss`` with
            ``gamma=0.0, alpha=-1.0``; averaged over the positives).
        other arguments: :class:`RetinaHead` (the paper: ``ATSSAssigner`` with topk 9, one
            square anchor per location of octave base scale 8, ``GIoULoss`` with weight 2 on
            decoded boxes, GN in the subnets).

    Shapes: ``forward(feats)`` returns ``(cls_scores, bbox_preds, centernesses)``, lists of
    (B, A * C, H_l, W_l), (B, A * 4, H_l, W_l) and (B, A, H_l, W_l).
    """

    def __init__(self, num_classes: int, in_channels: int, anchor_generator: dict,
                 loss_centerness: dict = dict(type='FocalLoss', gamma=0.0, alpha=-1.0,
                                              loss_weight=1.0),
                 **kwargs):
        kwargs.setdefault('assigner', dict(type='ATSSAssigner', topk=9))
        super().__init__(num_classes, in_channels, anchor_generator, **kwargs)
        num_anchors = self.prior_generator.num_base_anchors[0]
        self.atss_centerness = nn.Conv2d(self.retina_reg.in_channels, num_anchors, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.prior_generator.strides)
        self.loss_centerness = MODELS.build(loss_centerness)
        self.reset_parameters()

    def forward(self, feats):
        if len(feats) != len(self.scales):
            raise ValueError(f'ATSSHead has scales for {len(self.scales)} levels, got '
                             f'{len(feats)} maps')
        cls_scores, bbox_preds, centernesses = [], [], []
        for x, scale in zip(feats, self.scales):
            cls_feat, reg_feat = self.subnet_features(x)
            cls_scores.append(self.retina_cls(cls_feat))
            bbox_preds.append(scale(self.retina_reg(reg_feat)))
            centernesses.append(self.atss_centerness(reg_feat))
        return cls_scores, bbox_preds, centernesses

    def loss_by_feat(self, cls_scores, bbox_preds, centernesses, batch_gt_instances,
                     batch_img_metas, batch_gt_instances_ignore=None) -> dict[str, Tensor]:
        anchors, targets, loss_cls = self.anchors_targets_and_cls_loss(
            cls_scores, batch_gt_instances, batch_img_metas, batch_gt_instances_ignore)
        reg_flat = self.flatten_levels(bbox_preds, 4)  # (B, N, 4)
        centerness_flat = self.flatten_levels(centernesses, 1)[..., 0]  # (B, N)
        pos = targets.pos_mask
        if not pos.any():  # zeros connected to the branches (DDP sees every parameter used)
            return dict(loss_cls=loss_cls, loss_bbox=reg_flat.sum() * 0,
                        loss_centerness=centerness_flat.sum() * 0)
        pos_anchors = anchors.expand(len(batch_gt_instances), -1, -1)[pos]
        pos_targets = targets.bbox_targets[pos]
        gt_bboxes = pos_targets if self.reg_decoded_bbox else \
            self.bbox_coder.decode(pos_anchors, pos_targets)
        centerness = centerness_targets(pos_anchors, gt_bboxes)
        pos_pred = reg_flat[pos]
        if self.reg_decoded_bbox:
            pos_pred = self.bbox_coder.decode(pos_anchors, pos_pred)
        loss_bbox = self.loss_bbox(pos_pred, pos_targets, weight=centerness,
                                   avg_factor=self.avg_factor(centerness.sum().item(),
                                                              reg_flat.device))
        loss_centerness = self.loss_centerness(centerness_flat[pos][:, None],
                                               centerness[:, None],
                                               avg_factor=targets.avg_factor)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox, loss_centerness=loss_centerness)

    @torch.no_grad()
    def predict_by_feat(self, cls_scores, bbox_preds, centernesses, batch_img_metas,
                        cfg: dict | None = None) -> list[InstanceData]:
        """:meth:`RetinaHead.predict_by_feat` with each candidate's class probability (after
        the ``score_thr`` / ``nms_pre`` selection) multiplied by its prior's centre-ness
        probability."""
        num_images = cls_scores[0].shape[0]
        factors = [m.permute(0, 2, 3, 1).reshape(num_images, -1).sigmoid()
                   for m in centernesses]
        return super().predict_by_feat(cls_scores, bbox_preds, batch_img_metas, cfg, factors)
