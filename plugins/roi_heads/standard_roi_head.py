"""Standard RoI head of Faster R-CNN with FPN (Ren et al. 2015; Lin et al. 2017).

Multi-level RoIAlign (7x7) -> flatten -> two shared fully-connected layers (1024, ReLU) ->
a classifier (C + 1 logits, softmax) and a class-specific box regressor (4 deltas per class,
``DeltaXYWHBoxCoder`` with stds (0.1, 0.1, 0.2, 0.2)). Parameter names follow mmdet's
``Shared2FCBBoxHead`` (``shared_fcs.{0,1}``, ``fc_cls``, ``fc_reg``).

Every step after sampling runs once for the whole batch: one RoIAlign call per level, one MLP
pass, one decode, and one ``torchvision.ops.batched_nms`` whose groups are
``image * C + class`` (per-class NMS within each image).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torch import Tensor, nn
from torchvision.ops import batched_nms

from toolbox.models.bases import BaseRoIHead
from toolbox.models.task_utils import clip_to_image_shapes, nonempty_boxes, topk_per_image
from toolbox.models.utils import to_float32
from toolbox.registry import MODELS, TASK_UTILS


@MODELS.register_module()
class StandardRoIHead(BaseRoIHead):
    """Shared2FC box head on multi-level RoIAlign features.

    Args:
        num_classes: object classes C.
        in_channels: channels of the feature maps (256).
        roi_extractor: ``MultiLevelRoIAlign`` config (mmdet: 7x7, sampling_ratio 0,
            aligned=True, strides 4..32; torchvision: sampling_ratio 2, aligned=False).
        fc_out_channels, num_shared_fcs: the shared MLP (1024, 2).
        bbox_coder: ``DeltaXYWHBoxCoder`` with stds (0.1, 0.1, 0.2, 0.2) (torchvision's
            weights (10, 10, 5, 5)).
        reg_class_agnostic: one box per RoI instead of one per class.
        background_first: the background logit is index 0 (torchvision) instead of C
            (mmdet). Predicted labels are always 0..C-1.
        reg_background: the regressor also has a (never used) slot for the background class,
            ``(C + 1) * 4`` outputs, ordered like the classifier (torchvision's layout).
        assigner: ``MaxIoUAssigner`` 0.5 / 0.5 (min_pos_iou 0.5, no low-quality matches).
        sampler: ``RandomSampler`` 512 RoIs per image, 25% positive, gt boxes added.
        loss_cls: softmax ``CrossEntropyLoss`` averaged over the sampled RoIs.
        loss_bbox: ``L1Loss`` on the deltas of the gt class for positives, divided by the
            number of sampled RoIs (mmdet and torchvision).
        test_cfg: ``score_thr`` (kept if score > it), ``iou_threshold`` (per-class NMS),
            ``max_per_img``, ``min_bbox_size`` (kept if w and h >= it; < 0 off).

    Shapes: ``forward(feats, proposals)`` -> ``(rois (K, 5), cls_scores (K, C + 1),
    bbox_preds (K, C' * 4))`` with K the proposals of all images and C' = C (1 if class
    agnostic; C + 1 with ``reg_background``). Boxes ``xyxy`` in the input frame.
    """

    default_test_cfg = dict(score_thr=0.05, iou_threshold=0.5, max_per_img=100,
                            min_bbox_size=-1.0)

    def __init__(self, num_classes: int, in_channels: int = 256,
                 roi_extractor: dict = dict(type='MultiLevelRoIAlign', output_size=7,
                                            featmap_strides=(4, 8, 16, 32), sampling_ratio=0,
                                            aligned=True),
                 fc_out_channels: int = 1024, num_shared_fcs: int = 2,
                 bbox_coder: dict = dict(type='DeltaXYWHBoxCoder', stds=(0.1, 0.1, 0.2, 0.2)),
                 reg_class_agnostic: bool = False, background_first: bool = False,
                 reg_background: bool = False,
                 assigner: dict = dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                                       min_pos_iou=0.5, match_low_quality=False),
                 sampler: dict = dict(type='RandomSampler', num=512, pos_fraction=0.25,
                                      add_gt_as_proposals=True),
                 loss_cls: dict = dict(type='CrossEntropyLoss', ignore_index=-100,
                                       loss_weight=1.0),
                 loss_bbox: dict = dict(type='L1Loss', loss_weight=1.0),
                 test_cfg: dict | None = None, init_cfg: dict | list | None = None):
        super().__init__(num_classes, roi_extractor, assigner, sampler, test_cfg, init_cfg)
        if num_shared_fcs < 1:
            raise ValueError(f'num_shared_fcs must be >= 1, got {num_shared_fcs}')
        self.bbox_coder = TASK_UTILS.build(bbox_coder)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.reg_class_agnostic = reg_class_agnostic
        self.background_first = background_first
        self.reg_background = reg_background
        in_features = in_channels * self.roi_extractor.output_size[0] * \
            self.roi_extractor.output_size[1]
        self.shared_fcs = nn.ModuleList(
            nn.Linear(in_features if i == 0 else fc_out_channels, fc_out_channels)
            for i in range(num_shared_fcs))
        self.fc_cls = nn.Linear(fc_out_channels, num_classes + 1)
        num_reg = 1 if reg_class_agnostic else num_classes + int(reg_background)
        self.fc_reg = nn.Linear(fc_out_channels, num_reg * 4)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mmdet: Xavier-uniform shared FCs, classifier normal(0.01), regressor normal(0.001),
        zero biases."""
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)

    # ---------------------------------------------------------------- layout
    def _background_index(self) -> int:
        return 0 if self.background_first else self.num_classes

    def _to_logit_index(self, labels: Tensor) -> Tensor:
        """Labels 0..C-1 (C background) -> classifier column."""
        if not self.background_first:
            return labels
        return torch.where(labels == self.num_classes, torch.zeros_like(labels), labels + 1)

    def _class_deltas(self, bbox_preds: Tensor) -> Tensor:
        """(K, C' * 4) -> (K, C, 4) (class agnostic: (K, 1, 4)), object classes only."""
        deltas = bbox_preds.reshape(bbox_preds.shape[0], self.fc_reg.out_features // 4, 4)
        if self.reg_class_agnostic or not self.reg_background:
            return deltas
        return deltas[:, 1:] if self.background_first else deltas[:, :self.num_classes]

    # ---------------------------------------------------------------- forward
    def forward_rois(self, feats, boxes: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        rois, roi_feats = self.extract_roi_feats(feats, boxes)
        x = roi_feats.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return rois, self.fc_cls(x), self.fc_reg(x)

    def forward(self, feats, proposals: list[InstanceData]):
        return self.forward_rois(feats, [p.bboxes for p in proposals])

    def loss(self, feats, proposals: list[InstanceData], data_samples) -> dict[str, Tensor]:
        sampled = self.sample_proposals(proposals, data_samples)
        boxes = [torch.cat([s.pos_priors, s.neg_priors]) for s in sampled]
        rois, cls_scores, bbox_preds = to_float32(self.forward_rois(feats, boxes))
        labels = torch.cat([torch.cat([s.pos_gt_labels, s.pos_gt_labels.new_full(
            (s.num_neg,), self.num_classes)]) for s in sampled])
        pos = labels < self.num_classes
        pos_targets = self.bbox_coder.encode(
            torch.cat([s.pos_priors for s in sampled]),
            torch.cat([s.pos_gt_bboxes for s in sampled]))
        loss_cls = self.loss_cls(cls_scores, self._to_logit_index(labels))
        deltas = self._class_deltas(bbox_preds)
        pos_index = pos.nonzero(as_tuple=True)[0]
        cls_index = torch.zeros_like(labels[pos]) if self.reg_class_agnostic else labels[pos]
        pos_deltas = deltas[pos_index, cls_index]
        num_rois = max(rois.shape[0], 1)
        if pos_deltas.numel() == 0:
            loss_bbox = bbox_preds.sum() * 0
        else:
            loss_bbox = self.loss_bbox(pos_deltas, pos_targets, avg_factor=num_rois)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    @torch.no_grad()
    def predict(self, feats, proposals: list[InstanceData], data_samples
                ) -> list[InstanceData]:
        metas = [s.metainfo for s in data_samples]
        return self.predict_by_feat(*to_float32(self.forward(feats, proposals)),
                                    batch_img_metas=metas)

    @torch.no_grad()
    def predict_by_feat(self, rois: Tensor, cls_scores: Tensor, bbox_preds: Tensor,
                        batch_img_metas: list[dict], cfg: dict | None = None
                        ) -> list[InstanceData]:
        """Softmax scores, decode every class's box, clip to ``img_shape``, drop background,
        ``score_thr``, empty boxes and the size filter, per-class NMS per image,
        ``max_per_img`` best."""
        cfg = dict(self.test_cfg, **(cfg or {}))
        num_images, num_classes = len(batch_img_metas), self.num_classes
        probs = F.softmax(cls_scores, dim=-1)
        scores = probs[:, 1:] if self.background_first else probs[:, :num_classes]  # (K, C)
        deltas = self._class_deltas(bbox_preds)
        image_index = rois[:, 0].long()
        shapes = torch.tensor([m['img_shape'][:2] for m in batch_img_metas],
                              device=rois.device)
        boxes = self.bbox_coder.decode(rois[:, None, 1:], deltas)
        boxes = clip_to_image_shapes(boxes, shapes[image_index][:, None])
        boxes = boxes.expand(-1, num_classes, -1).reshape(-1, 4)  # (K * C, 4), class fastest
        scores = scores.reshape(-1)
        labels = torch.arange(num_classes, device=rois.device).repeat(rois.shape[0])
        image_ids = image_index.repeat_interleave(num_classes)
        valid = (scores > cfg['score_thr']) & nonempty_boxes(boxes)
        if cfg.get('min_bbox_size', -1) >= 0:
            wh = boxes[:, 2:] - boxes[:, :2]
            valid &= (wh >= cfg['min_bbox_size']).all(1)
        valid = valid.nonzero(as_tuple=True)[0]
        keep = valid[batched_nms(boxes[valid], scores[valid],
                                 image_ids[valid] * num_classes + labels[valid],
                                 cfg['iou_threshold'])]
        return [InstanceData(bboxes=boxes[k], scores=scores[k], labels=labels[k])
                for k in topk_per_image(keep, image_ids[keep], num_images, cfg['max_per_img'])]
