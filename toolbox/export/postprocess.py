"""Detection post-processing that traces into one ONNX graph for a whole batch.

The dense heads' ``predict_by_feat`` select a data-dependent number of candidates per image in
a Python loop over images; an exported graph needs the same selection written with tensors of
a fixed size (per level: ``topk`` of a size known at export time, then the score threshold as a
mask) and one class-aware NMS over the batch, whose survivors are scattered into padded
``(B, max_det, ...)`` outputs. Each supported head has a post-processor here that reproduces
its ``predict_by_feat`` exactly (same candidates, same decoding, same NMS); the export tests
compare the two through onnxruntime.

Post-processors are looked up by the qualified name of the ``predict_by_feat`` that the head's
class resolves to, so a subclass that keeps its parent's test-time logic (``RetinaSepBNHead``)
is supported and one that overrides it is not. The core names these plugin functions as
strings and never imports the plugins; a third-party head registers its own post-processor
with :func:`register_export_postprocess`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import nms

#: qualified name of a ``predict_by_feat`` -> post-processor class
EXPORT_POSTPROCESSORS: dict[str, type] = {}


def predict_by_feat_name(head) -> str:
    """``module.Class.predict_by_feat`` of the implementation ``head``'s class uses."""
    fn = type(head).predict_by_feat
    return f'{fn.__module__}.{fn.__qualname__}'


def register_export_postprocess(predict_by_feat_qualname: str) -> Callable[[type], type]:
    """Class decorator: the post-processor exported for heads whose ``predict_by_feat`` is
    ``predict_by_feat_qualname`` (``'package.module.Head.predict_by_feat'``).

    The class is an ``nn.Module`` built as ``cls(head, head_outs, img_hw)`` (``head_outs``:
    the head's outputs at the export size, for the map sizes) whose ``forward(*head_outs)``
    returns the candidates of :func:`padded_nms`: ``boxes (B, K, 4)``, ``scores (B, K)``,
    ``labels (B, K)`` and ``valid (B, K)``; it has ``num_classes``, ``iou_threshold`` and
    ``max_det`` attributes."""
    def decorator(cls: type) -> type:
        EXPORT_POSTPROCESSORS[predict_by_feat_qualname] = cls
        return cls
    return decorator


def padded_nms(boxes: Tensor, scores: Tensor, labels: Tensor, valid: Tensor,
               iou_threshold: float, max_det: int, num_classes: int
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Class-aware NMS per image for a batch of candidates, the ``max_det`` best per image,
    padded to a fixed size.

    Args:
        boxes: (B, K, 4) ``xyxy`` candidate boxes.
        scores: (B, K) their scores; labels: (B, K) int64 classes in ``[0, num_classes)``.
        valid: (B, K) bool, the candidates that take part (above the score threshold).
        iou_threshold: NMS IoU threshold (a box is suppressed above it).
        max_det: detections kept per image (the padded size).
        num_classes: number of classes C.

    Returns:
        ``boxes (B, max_det, 4)``, ``scores (B, max_det)``, ``labels (B, max_det)`` (int64,
        ``-1`` in the padding), ``num_dets (B,)`` int64; each image's detections come first,
        sorted by decreasing score. Empty boxes (zero width or height) are dropped first, as
        :func:`toolbox.models.task_utils.nms_instances` does.
    """
    num_images, num_candidates = scores.shape
    valid = valid & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
    index = valid.reshape(-1).nonzero().squeeze(1)  # (M,) into the flattened (B * K)
    image_ids = index // num_candidates
    cand_boxes = boxes.reshape(-1, 4)[index]
    cand_scores = scores.reshape(-1)[index]
    cand_labels = labels.reshape(-1)[index]
    # one NMS for every (image, class) group: torchvision's coordinate trick, groups shifted
    # apart by more than the coordinates' range (a zero joins the range so that an empty
    # candidate set has one)
    coords = torch.cat([cand_boxes.reshape(-1), cand_boxes.new_zeros(1)])
    span = coords.max() - coords.min() + 1
    groups = image_ids * num_classes + cand_labels
    keep = nms(cand_boxes + (groups.to(cand_boxes.dtype) * span)[:, None], cand_scores,
               iou_threshold)  # by decreasing score
    image_ids = image_ids[keep]
    # rank of each survivor within its image: survivors come by decreasing score, so it is
    # the running count of its image's survivors (a (M, B) one-hot cumsum, no sort)
    one_hot = (image_ids[:, None] == torch.arange(num_images, device=boxes.device)[None]).long()
    rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1
    kept = (rank < max_det).nonzero().squeeze(1)
    slot = image_ids[kept] * max_det + rank[kept]
    source = keep[kept]
    out_boxes = boxes.new_zeros((num_images * max_det, 4)).index_put((slot,), cand_boxes[source])
    out_scores = scores.new_zeros(num_images * max_det).index_put((slot,), cand_scores[source])
    out_labels = torch.full_like(out_scores, -1, dtype=torch.long).index_put(
        (slot,), cand_labels[source])
    num_dets = one_hot.sum(0).clamp(max=max_det)
    return (out_boxes.reshape(num_images, max_det, 4), out_scores.reshape(num_images, max_det),
            out_labels.reshape(num_images, max_det), num_dets)


def _level_sizes(maps: Sequence[Tensor]) -> list[tuple[int, int]]:
    return [tuple(int(s) for s in m.shape[-2:]) for m in maps]


def _inside(anchors: Tensor, img_hw: tuple[int, int]) -> Tensor:
    """(N,) bool: anchors centred inside the image (``centers_inside``, not in the padding)."""
    cx = (anchors[:, 0] + anchors[:, 2]) / 2
    cy = (anchors[:, 1] + anchors[:, 3]) / 2
    return (cx < img_hw[1]) & (cy < img_hw[0])


def _test_cfg_value(head, key: str):
    if key not in head.test_cfg:
        raise KeyError(f'{type(head).__name__}.test_cfg has no {key!r}, needed for export')
    return head.test_cfg[key]


class _DensePostprocess(nn.Module):
    """What the supported heads share: their ``test_cfg`` and the image size."""

    def __init__(self, head, img_hw: tuple[int, int]):
        super().__init__()
        self.coder = head.bbox_coder
        self.num_classes = head.num_classes
        self.img_hw = tuple(int(s) for s in img_hw)
        self.score_thr = float(_test_cfg_value(head, 'score_thr'))
        self.nms_pre = int(_test_cfg_value(head, 'nms_pre'))
        self.iou_threshold = float(_test_cfg_value(head, 'iou_threshold'))
        self.max_per_img = int(_test_cfg_value(head, 'max_per_img'))

    def topk_size(self, available: int) -> int:
        """``nms_pre`` candidates out of ``available`` (all when ``nms_pre <= 0``)."""
        return available if self.nms_pre <= 0 else min(self.nms_pre, available)


@register_export_postprocess('toolbox_plugins.dense_heads.retina_head.RetinaHead.predict_by_feat')
class RetinaPostprocess(_DensePostprocess):
    """RetinaNet's ``predict_by_feat`` for a batch: per level, sigmoid scores of the anchors
    centred inside the image, the ``nms_pre`` best (anchor, class) pairs, decoded and clipped;
    candidates above ``score_thr``.

    ``predict_by_feat`` thresholds first and then takes the ``nms_pre`` best; taking the
    ``nms_pre`` best first and thresholding them selects the same set (every entry above the
    threshold that is among the best survives both ways), with a size known at export time.
    """

    def __init__(self, head, head_outs, img_hw: tuple[int, int]):
        super().__init__(head, img_hw)
        cls_scores = head_outs[0]
        per_level = head.prior_generator.grid_anchors(_level_sizes(cls_scores))
        self.num_levels = len(per_level)
        self.level_sizes = [len(a) for a in per_level]
        for level, anchors in enumerate(per_level):
            self.register_buffer(f'anchors_{level}', anchors, persistent=False)
            # (N * C,) in the order of the flattened (anchor, class) scores
            self.register_buffer(f'inside_{level}',
                                 _inside(anchors, self.img_hw).repeat_interleave(
                                     self.num_classes).float(), persistent=False)
        self.max_det = self.max_per_img if self.max_per_img > 0 else sum(
            self.topk_size(n * self.num_classes) for n in self.level_sizes)

    def forward(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor]):
        boxes, scores, labels = [], [], []
        for level, (cls_map, reg_map) in enumerate(zip(cls_scores, bbox_preds)):
            anchors = getattr(self, f'anchors_{level}')
            num_anchors = self.level_sizes[level]
            # (B, N * C), entry (y * W + x) * A * C + a * C + c, as predict_by_feat's (N, C)
            flat = cls_map.permute(0, 2, 3, 1).flatten(1).sigmoid() * getattr(
                self, f'inside_{level}')
            deltas = reg_map.permute(0, 2, 3, 1).flatten(1).unflatten(1, (num_anchors, 4))
            top, index = flat.topk(self.topk_size(num_anchors * self.num_classes), dim=1)
            anchor_index = index // self.num_classes
            level_deltas = deltas.gather(1, anchor_index[..., None].expand(-1, -1, 4))
            boxes.append(self.coder.decode(anchors[anchor_index], level_deltas,
                                           max_shape=self.img_hw))
            scores.append(top)
            labels.append(index % self.num_classes)
        scores = torch.cat(scores, 1)
        return torch.cat(boxes, 1), scores, torch.cat(labels, 1), scores > self.score_thr


@register_export_postprocess(
    'toolbox_plugins.dense_heads.refinedet_head.RefineDetHead.predict_by_feat')
class RefineDetPostprocess(_DensePostprocess):
    """RefineDet's ``predict_by_feat`` for a batch: the two-step cascade decoding (anchors
    refined by the ARM deltas, then the ODM deltas, clipped), the ODM softmax scores of the C
    classes; anchors the ARM filters out (object probability <= ``objectness_thr``) or centred
    in the padding get the score -1; per class the ``nms_pre`` best anchors, candidates above
    ``score_thr``.

    ``predict_by_feat`` removes the filtered anchors and takes the ``min(nms_pre, kept)``
    best; here the filtered ones rank last with score -1 and fail the threshold, which selects
    the same set with a size known at export time.
    """

    def __init__(self, head, head_outs, img_hw: tuple[int, int]):
        super().__init__(head, img_hw)
        arm_cls = head_outs[0]
        anchors = torch.cat(head.prior_generator.grid_anchors(_level_sizes(arm_cls)))
        self.register_buffer('anchors', anchors, persistent=False)
        self.register_buffer('inside', _inside(anchors, self.img_hw), persistent=False)
        self.objectness_thr = float(head.objectness_thr)
        self.flat_outputs = head.flat_outputs
        self.k = self.topk_size(len(anchors))
        self.max_det = self.max_per_img if self.max_per_img > 0 else self.k * self.num_classes

    def forward(self, arm_cls, arm_reg, odm_cls, odm_reg):
        arm_cls, arm_reg, odm_cls, odm_reg = self.flat_outputs(arm_cls, arm_reg, odm_cls,
                                                               odm_reg)
        keep = (arm_cls.softmax(-1)[..., 0] > self.objectness_thr) & self.inside
        class_scores = odm_cls.softmax(-1)[..., :self.num_classes].masked_fill(
            ~keep[..., None], -1.0)
        refined = self.coder.decode(self.anchors.expand_as(arm_reg), arm_reg)
        boxes = self.coder.decode(refined, odm_reg, max_shape=self.img_hw)  # (B, N, 4)
        top, index = class_scores.topk(self.k, dim=1)  # (B, k, C): best anchors per class
        labels = torch.arange(self.num_classes, device=top.device).expand_as(index)
        index, top, labels = index.flatten(1), top.flatten(1), labels.flatten(1)
        boxes = boxes.gather(1, index[..., None].expand(-1, -1, 4))
        return boxes, top, labels, top > self.score_thr
