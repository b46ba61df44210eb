"""SSD's geometric augmentation (Liu et al. 2016), used by SSD and RefineDet recipes.

* :class:`Expand` ("zoom out"): place the image at a random position on a canvas up to
  ``ratio_range[1]`` times larger, filled with the mean colour.
* :class:`MinIoURandomCrop` ("zoom in"): crop a random patch that overlaps some object with at
  least a randomly chosen IoU, keep the objects whose centre lies in the patch.

Both move ``img``, ``gt_bboxes`` (float32 (N, 4) ``xyxy`` absolute pixels),
``gt_bboxes_labels``, ``gt_ignore_flags``, ``gt_masks`` (N, H, W; zero-filled by
:class:`Expand`, dropped with their boxes by :class:`MinIoURandomCrop`) and ``gt_seg_map``
together and update ``img_shape``. They are meant for training pipelines (the mapping back
to the original image, ``scale_factor``, is not tracked through them).
"""
from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform

from toolbox.registry import TRANSFORMS
from toolbox.structures import IGNORE_INDEX, box_iou, clip_boxes, translate_boxes

_BOX_FIELDS = ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags', 'gt_masks')


@TRANSFORMS.register_module()
class Expand(BaseTransform):
    """With probability ``prob``, put the image on a canvas ``r`` times its size,
    ``r ~ U(ratio_range)``, at a uniformly random offset; boxes are shifted by the offset.

    Args:
        mean: fill colour in the image's channel order (BGR after ``LoadImageFromFile``),
            e.g. ImageNet's mean ``(103.53, 116.28, 123.675)`` so that the filled area
            normalises to zero.
        ratio_range: range of the canvas/image size ratio (1, 4) as in SSD.
        prob: probability of expanding (0.5).
        seg_pad_val: fill value of ``gt_seg_map`` (``IGNORE_INDEX``, 255).
    """

    def __init__(self, mean=(103.53, 116.28, 123.675), ratio_range=(1.0, 4.0), prob: float = 0.5,
                 seg_pad_val: int = IGNORE_INDEX):
        if not 1.0 <= ratio_range[0] <= ratio_range[1]:
            raise ValueError(f'ratio_range must satisfy 1 <= low <= high, got {ratio_range}')
        self.mean = tuple(float(m) for m in mean)
        self.ratio_range = tuple(ratio_range)
        self.prob = prob
        self.seg_pad_val = seg_pad_val

    def transform(self, results: dict) -> dict:
        if np.random.rand() > self.prob:
            return results
        img = results['img']
        h, w = img.shape[:2]
        ratio = np.random.uniform(*self.ratio_range)
        new_h, new_w = int(h * ratio), int(w * ratio)
        left = int(np.random.uniform(0, new_w - w))
        top = int(np.random.uniform(0, new_h - h))
        channels = img.shape[2] if img.ndim == 3 else 1
        if len(self.mean) != channels:
            raise ValueError(f'Expand mean has {len(self.mean)} values, the image has '
                             f'{channels} channels')
        canvas = np.empty((new_h, new_w) + img.shape[2:], dtype=img.dtype)
        canvas[...] = np.asarray(self.mean, dtype=img.dtype).reshape((1, 1) + img.shape[2:])
        canvas[top:top + h, left:left + w] = img
        results['img'] = canvas
        results['img_shape'] = (new_h, new_w)
        if 'gt_bboxes' in results:
            results['gt_bboxes'] = translate_boxes(results['gt_bboxes'],
                                                   (left, top)).astype(np.float32, copy=False)
        if 'gt_masks' in results:
            masks = results['gt_masks']
            canvas_masks = np.zeros((len(masks), new_h, new_w), dtype=masks.dtype)
            canvas_masks[:, top:top + h, left:left + w] = masks
            results['gt_masks'] = canvas_masks
        if 'gt_seg_map' in results:
            seg = np.full((new_h, new_w), self.seg_pad_val, dtype=results['gt_seg_map'].dtype)
            seg[top:top + h, left:left + w] = results['gt_seg_map']
            results['gt_seg_map'] = seg
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(mean={self.mean}, ratio_range={self.ratio_range}, '
                f'prob={self.prob})')


@TRANSFORMS.register_module()
class MinIoURandomCrop(BaseTransform):
    """SSD's random crop ("zoom in"), as in the original Caffe SSD and torchvision's
    ``RandomIoUCrop``.

    Each call draws a mode from ``(keep the image, *min_ious, any crop)``; for a min IoU
    ``t`` it draws ``max_trials`` patches at once (sides ``U(min_crop_size, 1)`` times the
    image's, aspect ratio ``h / w`` in ``aspect_ratio_range``) and takes the first one that has
    IoU >= ``t`` with at least one box and contains the centre of at least one box. If none
    qualifies it draws a new mode (at most ``max_modes`` times, then keeps the image).
    Boxes whose centre lies outside the patch are dropped with their labels and flags; the
    others are clipped to the patch and shifted into its frame.

    Args:
        min_ious: the IoU thresholds (0.1, 0.3, 0.5, 0.7, 0.9).
        min_crop_size: smallest patch side relative to the image side (0.3).
        aspect_ratio_range: allowed ``h / w`` of the patch (0.5, 2).
        max_trials: patches drawn per mode (50).
    """

    def __init__(self, min_ious=(0.1, 0.3, 0.5, 0.7, 0.9), min_crop_size: float = 0.3,
                 aspect_ratio_range=(0.5, 2.0), max_trials: int = 50, max_modes: int = 50):
        if not 0 < min_crop_size <= 1:
            raise ValueError(f'min_crop_size must be in (0, 1], got {min_crop_size}')
        self.min_ious = tuple(float(t) for t in min_ious)
        self.min_crop_size = min_crop_size
        self.aspect_ratio_range = tuple(aspect_ratio_range)
        self.max_trials = max_trials
        self.max_modes = max_modes

    def _draw_patch(self, h: int, w: int, boxes: np.ndarray, min_iou: float):
        """The first valid (x1, y1, x2, y2) integer patch of ``max_trials`` draws, or None."""
        n = self.max_trials
        scale = np.random.uniform(self.min_crop_size, 1.0, size=(n, 2))
        new_w, new_h = scale[:, 0] * w, scale[:, 1] * h
        aspect = new_h / new_w
        left = np.random.uniform(0, 1, n) * (w - new_w)
        top = np.random.uniform(0, 1, n) * (h - new_h)
        patches = np.stack([left, top, left + new_w, top + new_h], axis=1).astype(np.int64)
        ok = (aspect >= self.aspect_ratio_range[0]) & (aspect <= self.aspect_ratio_range[1])
        ok &= (patches[:, 2] > patches[:, 0]) & (patches[:, 3] > patches[:, 1])
        if len(boxes):
            ok &= (box_iou(patches.astype(np.float32), boxes) >= min_iou).any(1)
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (G, 2)
            inside = ((centres[None] > patches[:, None, :2]) &
                      (centres[None] < patches[:, None, 2:])).all(-1)  # (P, G)
            ok &= inside.any(1)
        else:
            inside = np.zeros((n, 0), dtype=bool)
        valid = np.flatnonzero(ok)
        if not len(valid):
            return None, None
        return patches[valid[0]], inside[valid[0]]

    def transform(self, results: dict) -> dict:
        img = results['img']
        h, w = img.shape[:2]
        boxes = results.get('gt_bboxes', np.zeros((0, 4), np.float32))
        modes = (None, *self.min_ious, 0.0)  # None keeps the image
        for _ in range(self.max_modes):
            min_iou = modes[np.random.randint(len(modes))]
            if min_iou is None:
                return results
            patch, keep = self._draw_patch(h, w, boxes, min_iou)
            if patch is None:
                continue
            x1, y1, x2, y2 = (int(v) for v in patch)
            results['img'] = np.ascontiguousarray(img[y1:y2, x1:x2])
            results['img_shape'] = (y2 - y1, x2 - x1)
            if 'gt_bboxes' in results:
                for field in _BOX_FIELDS:
                    if field in results:
                        results[field] = results[field][keep]
                shifted = translate_boxes(results['gt_bboxes'], (-x1, -y1))
                results['gt_bboxes'] = clip_boxes(shifted, (y2 - y1, x2 - x1)).astype(
                    np.float32, copy=False)
            if 'gt_masks' in results:
                results['gt_masks'] = np.ascontiguousarray(
                    results['gt_masks'][:, y1:y2, x1:x2])
            if 'gt_seg_map' in results:
                results['gt_seg_map'] = np.ascontiguousarray(results['gt_seg_map'][y1:y2, x1:x2])
            return results
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(min_ious={self.min_ious}, '
                f'min_crop_size={self.min_crop_size})')
