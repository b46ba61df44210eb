"""Post-processing shared by dense heads: score filtering, top-k, class-aware NMS, and the
batched proposal post-processing of RPN-type heads."""
from __future__ import annotations

import torch
from mmengine.structures import InstanceData
from torch import Tensor
from torchvision.ops import batched_nms


def select_topk_candidates(scores: torch.Tensor, score_thr: float, topk: int):
    """Pick (anchor, class) candidates from a (N, C) score matrix.

    Keeps entries with score > ``score_thr``, then the ``topk`` highest.
    Returns ``(scores (K,), anchor_index (K,), labels (K,))``.
    """
    num_classes = scores.shape[1]
    flat = scores.reshape(-1)
    keep = (flat > score_thr).nonzero(as_tuple=True)[0]
    flat = flat[keep]
    if topk > 0 and flat.numel() > topk:
        flat, order = flat.topk(topk)
        keep = keep[order]
    return flat, keep // num_classes, keep % num_classes


def nms_instances(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                  iou_threshold: float, max_per_img: int) -> InstanceData:
    """Drop empty boxes, class-aware NMS (``torchvision.ops.batched_nms``), then the
    ``max_per_img`` best.

    ``boxes`` (K, 4) ``xyxy``, ``scores`` (K,), ``labels`` (K,) -> InstanceData sorted by score.
    """
    nonempty = nonempty_boxes(boxes).nonzero(as_tuple=True)[0]
    keep = nonempty[batched_nms(boxes[nonempty], scores[nonempty], labels[nonempty],
                                iou_threshold)]
    if max_per_img > 0:
        keep = keep[:max_per_img]
    results = InstanceData()
    results.bboxes = boxes[keep]
    results.scores = scores[keep]
    results.labels = labels[keep]
    return results


def centers_inside(priors: Tensor, img_shape) -> Tensor:
    """(..., 4) ``xyxy`` priors -> (...,) bool, True where the prior's centre lies inside the
    image of shape ``img_shape`` ``(h, w, ...)``.

    In a batch of images of different sizes the smaller ones are padded; a prediction made at
    a location in the padding is not a prediction about the image (and does not exist when the
    image is predicted alone), so dense heads drop those locations at test time."""
    h, w = img_shape[:2]
    cx = (priors[..., 0] + priors[..., 2]) / 2
    cy = (priors[..., 1] + priors[..., 3]) / 2
    return (cx < w) & (cy < h)


def nonempty_boxes(boxes: Tensor) -> Tensor:
    """(..., 4) ``xyxy`` -> (...,) bool, True where the box has positive width and height.

    Boxes clipped to an image they lie outside of (e.g. predicted in the padding of a smaller
    image of a batch) collapse onto its border and are dropped by this test."""
    return (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])


def clip_to_image_shapes(boxes: Tensor, shapes: Tensor) -> Tensor:
    """Clip ``xyxy`` boxes (..., 4) to per-row image shapes ``shapes`` (..., 2) ``(h, w)``
    broadcastable against ``boxes[..., :2]`` (one image size per image of a batch)."""
    wh = shapes.flip(-1).to(boxes.dtype)
    upper = torch.cat([wh, wh], dim=-1)
    return torch.minimum(boxes.clamp(min=0), upper)


def rank_within_groups(groups: Tensor, num_groups: int) -> Tensor:
    """(M,) group ids (e.g. images) of entries listed in priority order -> (M,) the 0-based
    rank of each entry among the entries of its own group, in that order."""
    order = torch.sort(groups, stable=True).indices
    counts = torch.bincount(groups, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(groups.numel(), device=groups.device) - starts[groups[order]]
    return rank


def topk_per_image(keep: Tensor, image_ids: Tensor, num_images: int, k: int
                   ) -> list[Tensor]:
    """Split indices ``keep`` (M,), sorted by decreasing score, into per-image lists of at
    most ``k`` (``k <= 0``: all), keeping the order within each image. ``image_ids`` (M,) is
    the image of each entry of ``keep``."""
    if k > 0:
        best = rank_within_groups(image_ids, num_images) < k
        keep, image_ids = keep[best], image_ids[best]
    order = torch.sort(image_ids, stable=True).indices
    return list(keep[order].split(torch.bincount(image_ids, minlength=num_images).tolist()))


def proposals_from_levels(logits: list[Tensor], deltas: list[Tensor], priors: list[Tensor],
                          bbox_coder, batch_img_metas: list[dict], cfg: dict
                          ) -> list[InstanceData]:
    """Batched RPN post-processing (locations centred in an image's padding skipped, one
    ``topk`` per level over the batch, decode, clip, size filter, one ``batched_nms`` over
    images x levels, ``max_per_img`` per image).

    Args:
        logits: per level (B, N_l) objectness logits; ``-inf`` marks a skipped location
            (Guided Anchoring's masked inference), never proposed.
        deltas: per level (B, N_l, 4) box deltas.
        priors: per level (N_l, 4) or (B, N_l, 4) anchors, ``xyxy`` input frame.
        bbox_coder: decodes ``(priors, deltas)``.
        batch_img_metas: per image metainfo with ``img_shape``.
        cfg: see the RPN head's ``test_cfg`` (``nms_pre``, ``iou_threshold``, ``max_per_img``,
            ``score_thr``, ``min_bbox_size``, ``nms_across_levels``).
    """
    num_images = logits[0].shape[0]
    device = logits[0].device
    shapes = torch.tensor([m['img_shape'][:2] for m in batch_img_metas], device=device)
    boxes, scores, groups, finite = [], [], [], []
    for level, (lvl_logits, lvl_deltas, lvl_priors) in enumerate(zip(logits, deltas, priors)):
        # a location in the padding of a smaller image of the batch proposes nothing
        centres = (lvl_priors[..., :2] + lvl_priors[..., 2:]) / 2  # (N_l, 2) or (B, N_l, 2)
        inside = (centres < shapes.flip(-1)[:, None].to(centres.dtype)).all(-1)  # (B, N_l)
        lvl_logits = lvl_logits.masked_fill(~inside, float('-inf'))
        k = lvl_logits.shape[1] if cfg['nms_pre'] <= 0 else min(cfg['nms_pre'],
                                                                lvl_logits.shape[1])
        top, idx = lvl_logits.topk(k, dim=1)  # (B, k)
        if lvl_priors.dim() == 2:
            sel_priors = lvl_priors[idx]
        else:
            sel_priors = lvl_priors.gather(1, idx[..., None].expand(-1, -1, 4))
        sel_deltas = lvl_deltas.gather(1, idx[..., None].expand(-1, -1, 4))
        boxes.append(bbox_coder.decode(sel_priors, sel_deltas))
        scores.append(top.sigmoid())
        finite.append(torch.isfinite(top))
        groups.append(torch.full_like(idx, level))
    boxes = clip_to_image_shapes(torch.cat(boxes, 1), shapes[:, None])  # (B, M, 4)
    scores = torch.cat(scores, 1)
    image_ids = torch.arange(num_images, device=device)[:, None].expand_as(scores)
    groups = torch.cat(groups, 1) if not cfg.get('nms_across_levels', False) \
        else torch.zeros_like(image_ids)
    groups = groups + image_ids * len(logits)
    boxes, scores = boxes.reshape(-1, 4), scores.reshape(-1)
    image_ids, groups = image_ids.reshape(-1), groups.reshape(-1)
    wh = boxes[:, 2:] - boxes[:, :2]
    valid = (wh > cfg.get('min_bbox_size', 0.0)).all(1) & (scores >= cfg.get('score_thr', 0.0)) \
        & torch.cat(finite, 1).reshape(-1)
    valid = valid.nonzero(as_tuple=True)[0]
    keep = valid[batched_nms(boxes[valid], scores[valid], groups[valid], cfg['iou_threshold'])]
    results = []
    for image_keep in topk_per_image(keep, image_ids[keep], num_images, cfg['max_per_img']):
        results.append(InstanceData(bboxes=boxes[image_keep], scores=scores[image_keep],
                                    labels=torch.zeros_like(image_keep)))
    return results


def detections_from_levels(scores: list[Tensor], deltas: list[Tensor], priors: list[Tensor],
                           bbox_coder, batch_img_metas: list[dict], cfg: dict,
                           score_factors: list[Tensor] | None = None) -> list[InstanceData]:
    """Batched multi-class dense-head post-processing (RetinaNet's test path): per level the
    (anchor, class) pairs above ``score_thr`` of each image, anchors centred in an image's
    padding skipped, the ``nms_pre`` best of them per image, decoded and clipped to
    ``img_shape``; empty boxes dropped; one class-aware ``batched_nms`` over the batch
    (groups = image x class); ``max_per_img`` best per image.

    The threshold comes first and the per-image ranking runs only on the entries above it
    (a sort of the candidates, grouped by image), as torchvision's RetinaNet does image by
    image: a ``topk`` over every (anchor, class) pair of the batch read the full score maps
    two more times (800 x 1216, 80 classes: 13.6M scores per image).

    Args:
        scores: per level (B, N_l, C) class probabilities.
        deltas: per level (B, N_l, 4) box deltas.
        priors: per level (N_l, 4) anchors, ``xyxy`` input frame.
        bbox_coder: decodes ``(priors, deltas)``.
        batch_img_metas: per image metainfo with ``img_shape``.
        cfg: ``score_thr``, ``nms_pre`` (<= 0: all), ``iou_threshold``, ``max_per_img``.
        score_factors: per level (B, N_l) quality scores in [0, 1] (ATSS / FCOS centre-ness)
            or ``None``. The threshold and ``nms_pre`` read the class probabilities alone;
            the kept candidates' scores are then multiplied by their prior's factor, and NMS
            and the output use the product (MMDetection's ``score_factors``).

    Returns:
        one ``InstanceData`` per image: ``bboxes`` (K, 4) input frame, ``scores`` (K,),
        ``labels`` (K,), sorted by decreasing score.
    """
    num_images, num_classes = scores[0].shape[0], scores[0].shape[2]
    device = scores[0].device
    shapes = torch.tensor([m['img_shape'][:2] for m in batch_img_metas], device=device)
    all_boxes, all_scores, all_labels, all_images = [], [], [], []
    score_factors = score_factors or [None] * len(scores)
    for lvl_scores, lvl_deltas, lvl_priors, lvl_factors in zip(scores, deltas, priors,
                                                                score_factors):
        centres = (lvl_priors[:, :2] + lvl_priors[:, 2:]) / 2  # (N_l, 2)
        inside = (centres < shapes.flip(-1)[:, None].to(centres.dtype)).all(-1)  # (B, N_l)
        image, anchor, label = ((lvl_scores > cfg['score_thr']) & inside[..., None]).nonzero(
            as_tuple=True)
        top = lvl_scores[image, anchor, label]
        if 0 < cfg['nms_pre'] < top.numel():
            order = top.argsort(descending=True)
            best = order[rank_within_groups(image[order], num_images) < cfg['nms_pre']]
            image, anchor, label, top = image[best], anchor[best], label[best], top[best]
        if lvl_factors is not None:
            top = top * lvl_factors[image, anchor]
        boxes = bbox_coder.decode(lvl_priors[anchor], lvl_deltas[image, anchor])
        all_boxes.append(clip_to_image_shapes(boxes, shapes[image]))
        all_scores.append(top)
        all_labels.append(label)
        all_images.append(image)
    boxes, scores_flat = torch.cat(all_boxes), torch.cat(all_scores)
    labels, image_ids = torch.cat(all_labels), torch.cat(all_images)
    valid = nonempty_boxes(boxes).nonzero(as_tuple=True)[0]
    groups = labels[valid] + image_ids[valid] * num_classes  # class-aware, per image
    keep = valid[batched_nms(boxes[valid], scores_flat[valid], groups, cfg['iou_threshold'])]
    return [InstanceData(bboxes=boxes[k], scores=scores_flat[k], labels=labels[k])
            for k in topk_per_image(keep, image_ids[keep], num_images, cfg['max_per_img'])]
