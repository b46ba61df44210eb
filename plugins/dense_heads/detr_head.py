"""DETR's set-prediction head and set criterion (Carion et al. 2020).

Per decoder layer and query: ``fc_cls`` logits over C classes + no-object (last column) and a
3-layer box MLP ``reg_ffn`` whose sigmoid is the box as normalised ``(cx, cy, w, h)`` of the
image before padding (``img_shape``). Training matches queries to ground truths one-to-one
(:class:`HungarianAssigner` with class 1, L1 5 on normalised cxcywh, GIoU 2) on every decoder
layer and sums cross-entropy (no-object weight 0.1), L1 (5) and GIoU (2) losses, box losses
normalised by the number of ground truths in the batch (averaged over DDP processes, at
least 1). Prediction: softmax, no-object dropped, top ``max_per_img`` (query, class) scores
of the last layer, no NMS; boxes ``xyxy`` absolute pixels of the input frame.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torch import Tensor, nn
from torchvision.ops import box_convert

from toolbox.models.task_utils import nonempty_boxes
from toolbox.models.utils import mean_over_processes, to_float32, unpack_gt_instances
from toolbox.registry import MODELS, TASK_UTILS
from toolbox.structures.boxes import clip_boxes

_DETR_ASSIGNER = dict(type='HungarianAssigner', match_costs=[
    dict(type='ClassificationCost', weight=1.0),
    dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
    dict(type='IoUCost', iou_mode='giou', weight=2.0)])


class _MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (DETR's ``MLP``: ``layers.{k}``)."""

    def __init__(self, in_dims: int, hidden_dims: int, out_dims: int, num_layers: int):
        super().__init__()
        dims = [in_dims] + [hidden_dims] * (num_layers - 1) + [out_dims]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


@MODELS.register_module()
class DETRHead(nn.Module):
    """Class and box predictions of DETR's decoder states, set losses, post-processing.

    Loss keys: ``loss_cls``, ``loss_bbox`` (L1), ``loss_iou`` (GIoU) for the last decoder
    layer and ``loss_cls_d{i}``, ``loss_bbox_d{i}``, ``loss_iou_d{i}`` for layer ``i`` of the
    others (deep supervision; every key starts with ``loss_`` and is summed).

    Args:
        num_classes: object classes C (the classifier has C + 1 outputs, no-object last).
        embed_dims: decoder width (256).
        num_reg_layers: depth of the box MLP (3).
        bg_cls_weight: cross-entropy weight of the no-object class (DETR's ``eos_coef``, 0.1).
        loss_cls: a softmax cross-entropy config; its ``class_weight`` is set to
            ``[1] * C + [bg_cls_weight]`` and it is averaged by the summed class weights of
            the targets (``F.cross_entropy``'s weighted mean).
        loss_bbox: L1 on normalised cxcywh (weight 5); loss_iou: GIoU on normalised xyxy
            (weight 2); both averaged by the number of ground truths.
        assigner: matcher config (default: Hungarian with class 1, L1 5, GIoU 2).
        test_cfg: ``dict(max_per_img=100)``.
    """

    def __init__(self, num_classes: int, embed_dims: int = 256, num_reg_layers: int = 3,
                 bg_cls_weight: float = 0.1,
                 loss_cls: dict | None = None, loss_bbox: dict | None = None,
                 loss_iou: dict | None = None, assigner: dict | None = None,
                 test_cfg: dict | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.bg_cls_weight = bg_cls_weight
        self.fc_cls = nn.Linear(embed_dims, num_classes + 1)
        self.reg_ffn = _MLP(embed_dims, embed_dims, 4, num_reg_layers)
        loss_cls = dict(loss_cls or dict(type='CrossEntropyLoss', loss_weight=1.0))
        loss_cls['class_weight'] = [1.0] * num_classes + [bg_cls_weight]
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox or dict(type='L1Loss', loss_weight=5.0))
        self.loss_iou = MODELS.build(loss_iou or dict(type='GIoULoss', loss_weight=2.0))
        self.assigner = TASK_UTILS.build(assigner or _DETR_ASSIGNER)
        self.test_cfg = {'max_per_img': 100, **(test_cfg or {})}

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder states (L, B, Q, C) -> logits (L, B, Q, num_classes + 1) and boxes
        (L, B, Q, 4) normalised cxcywh in [0, 1] (any leading shape works)."""
        return self.fc_cls(hidden), self.reg_ffn(hidden).sigmoid()

    # ----------------------------------------------------------------------- training
    def loss(self, hidden: Tensor, data_samples) -> dict:
        gts, _, metas = unpack_gt_instances(data_samples)
        return self.loss_by_feat(*to_float32(self(hidden)), gts, metas)

    def loss_by_feat(self, all_cls: Tensor, all_boxes: Tensor, batch_gt_instances,
                     batch_img_metas) -> dict:
        """Set losses of every decoder layer.

        Args:
            all_cls: (L, B, Q, C + 1) logits; all_boxes: (L, B, Q, 4) normalised cxcywh.
            batch_gt_instances: per image ``bboxes`` (G, 4) xyxy pixels of ``img_shape``,
                ``labels`` (G,).
            batch_img_metas: per image metainfo with ``img_shape`` (h, w).
        """
        num_gts = sum(len(gt) for gt in batch_gt_instances)
        avg_factor = max(mean_over_processes(num_gts, all_cls.device), 1.0)
        factors = all_boxes.new_tensor([[meta['img_shape'][1], meta['img_shape'][0]] * 2
                                        for meta in batch_img_metas])  # (B, 4) w h w h
        # gts in the prediction's convention: normalised cxcywh, concatenated over images
        gt_boxes = [gt.bboxes.to(all_boxes) / factors[b]
                    for b, gt in enumerate(batch_gt_instances)]
        gt_labels = [gt.labels.long() for gt in batch_gt_instances]
        num_layers = all_cls.shape[0]
        losses = {}
        for layer in range(num_layers):
            terms = self._loss_single(all_cls[layer], all_boxes[layer], gt_boxes, gt_labels,
                                      factors, batch_gt_instances, batch_img_metas, avg_factor)
            suffix = '' if layer == num_layers - 1 else f'_d{layer}'
            for name, value in terms.items():
                losses[name + suffix] = value
        return losses

    def _loss_single(self, cls: Tensor, boxes: Tensor, gt_boxes, gt_labels, factors,
                     batch_gt_instances, batch_img_metas, avg_factor: float) -> dict:
        """One decoder layer: ``cls`` (B, Q, C + 1), ``boxes`` (B, Q, 4) normalised cxcywh;
        ``gt_boxes[b]`` (G_b, 4) normalised xyxy."""
        batch, num_queries = cls.shape[:2]
        pixels = box_convert(boxes.detach(), 'cxcywh', 'xyxy') * factors[:, None]
        labels = cls.new_full((batch, num_queries), self.num_classes, dtype=torch.long)
        pred_idx, target_boxes = [], []
        for b in range(batch):
            result = self.assigner.assign(
                InstanceData(scores=cls[b].detach(), bboxes=pixels[b]),
                batch_gt_instances[b], img_meta=batch_img_metas[b])
            pos = result.pos_mask.nonzero().squeeze(1)
            labels[b, pos] = gt_labels[b][result.gt_inds[pos] - 1]
            pred_idx.append(pos + b * num_queries)
            target_boxes.append(gt_boxes[b][result.gt_inds[pos] - 1])
        pred_idx = torch.cat(pred_idx)
        target = torch.cat(target_boxes)  # (P, 4) normalised xyxy
        pred = boxes.reshape(-1, 4)[pred_idx]  # (P, 4) normalised cxcywh

        labels = labels.flatten()
        cls_avg = self.loss_cls.class_weight.to(cls)[labels].sum()
        return dict(
            loss_cls=self.loss_cls(cls.reshape(-1, cls.shape[-1]), labels, avg_factor=cls_avg),
            loss_bbox=self.loss_bbox(pred, box_convert(target, 'xyxy', 'cxcywh'),
                                     avg_factor=avg_factor),
            loss_iou=self.loss_iou(box_convert(pred, 'cxcywh', 'xyxy'), target,
                                   avg_factor=avg_factor))

    # ----------------------------------------------------------------------- inference
    def predict(self, hidden: Tensor, data_samples) -> list[InstanceData]:
        cls, boxes = to_float32(self(hidden[-1]))
        return self.predict_by_feat(cls, boxes, [s.metainfo for s in data_samples])

    def predict_by_feat(self, cls: Tensor, boxes: Tensor, batch_img_metas) -> list[InstanceData]:
        """Last layer's ``cls`` (B, Q, C + 1) and ``boxes`` (B, Q, 4) -> per image
        ``InstanceData(bboxes (K, 4) xyxy pixels of img_shape, scores (K,), labels (K,))``,
        the ``K = min(max_per_img, Q * C)`` best (query, class) pairs by softmax score, less
        the boxes that are empty once clipped to the image."""
        scores = cls.softmax(-1)[..., :-1].flatten(1)  # (B, Q * C)
        k = min(self.test_cfg['max_per_img'], scores.shape[1])
        top_scores, top_idx = scores.topk(k, dim=1)
        labels = top_idx % self.num_classes
        query = torch.div(top_idx, self.num_classes, rounding_mode='floor')
        results = []
        for b, meta in enumerate(batch_img_metas):
            h, w = meta['img_shape'][:2]
            xyxy = box_convert(boxes[b, query[b]], 'cxcywh', 'xyxy') * boxes.new_tensor([w, h] * 2)
            xyxy = clip_boxes(xyxy, (h, w))
            keep = nonempty_boxes(xyxy)
            results.append(InstanceData(bboxes=xyxy[keep], scores=top_scores[b][keep],
                                        labels=labels[b][keep]))
        return results
