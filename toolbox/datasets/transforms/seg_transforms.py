"""Segmentation-only transforms: label remapping and random crops that avoid one-class crops.

Sizes here are ``(h, w)`` (mmseg's ``crop_size`` convention), unlike ``Resize``'s ``(w, h)``.
"""
from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform

from toolbox.registry import TRANSFORMS
from toolbox.structures import IGNORE_INDEX


def apply_label_map(seg: np.ndarray, label_map: dict | None) -> np.ndarray:
    """Return ``seg`` as int64 with every ``old`` value replaced by ``label_map[old]``.

    All replacements read the original values (``{1: 2, 2: 1}`` swaps two classes).
    """
    seg = np.asarray(seg).astype(np.int64)
    if not label_map:
        return seg
    if seg.size and seg.min() < 0:
        raise ValueError('apply_label_map: negative values in the class map')
    size = max(int(seg.max(initial=0)) + 1, max(label_map) + 1)
    lut = np.arange(size, dtype=np.int64)
    for old, new in label_map.items():
        lut[old] = new
    return lut[seg]


@TRANSFORMS.register_module()
class RemapLabels(BaseTransform):
    """Remap ``gt_seg_map`` values with the dataset's ``results['label_map']`` (``{old: new}``),
    e.g. CamVid's void 11 -> ``IGNORE_INDEX`` (255); put it right after ``LoadAnnotations``.

    Args:
        label_map: used instead of the dataset's when given.
    """

    def __init__(self, label_map: dict | None = None):
        self.label_map = None if label_map is None else {int(k): int(v)
                                                         for k, v in label_map.items()}

    def transform(self, results: dict) -> dict:
        label_map = self.label_map if self.label_map is not None else results.get('label_map')
        if 'gt_seg_map' not in results:
            raise KeyError('RemapLabels needs gt_seg_map: put it after '
                           'LoadAnnotations(with_seg=True)')
        results['gt_seg_map'] = apply_label_map(results['gt_seg_map'], label_map)
        return results


@TRANSFORMS.register_module()
class RandomCrop(BaseTransform):
    """Crop a random ``crop_size = (h, w)`` window from the image and ``gt_seg_map``.

    Images smaller than the window along a side keep that side whole (pad afterwards with
    ``Pad(size=(w, h))``, which fills the map with ``IGNORE_INDEX``, if a fixed size is
    needed). With ``cat_max_ratio < 1`` up to 10 windows are drawn, and the first whose most
    frequent class covers less than ``cat_max_ratio`` of its non-ignored pixels (and which has
    at least two classes) is kept; if none qualifies, the 10th is used (mmseg's rule).
    ``img_shape`` is updated; the crop is for segmentation: results with boxes are refused;
    ``gt_masks`` (N, H, W) without boxes are cropped along.
    """

    def __init__(self, crop_size, cat_max_ratio: float = 1.0,
                 ignore_index: int = IGNORE_INDEX):
        crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f'crop_size must be (h, w) of positive ints, got {crop_size}')
        if not 0 < cat_max_ratio <= 1:
            raise ValueError(f'cat_max_ratio must be in (0, 1], got {cat_max_ratio}')
        self.crop_size = crop_size
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def _random_window(self, height: int, width: int) -> tuple[int, int, int, int]:
        crop_h, crop_w = min(self.crop_size[0], height), min(self.crop_size[1], width)
        y1 = np.random.randint(0, height - crop_h + 1)
        x1 = np.random.randint(0, width - crop_w + 1)
        return y1, y1 + crop_h, x1, x1 + crop_w

    def _acceptable(self, seg: np.ndarray) -> bool:
        labels = seg[seg != self.ignore_index]
        if labels.size == 0:
            return False
        counts = np.bincount(labels.ravel())
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def transform(self, results: dict) -> dict:
        if len(results.get('gt_bboxes', ())):
            raise ValueError('RandomCrop is a segmentation transform; it does not move boxes')
        height, width = results['img'].shape[:2]
        y1, y2, x1, x2 = self._random_window(height, width)
        if self.cat_max_ratio < 1.0 and 'gt_seg_map' in results:
            for _ in range(9):
                if self._acceptable(results['gt_seg_map'][y1:y2, x1:x2]):
                    break
                y1, y2, x1, x2 = self._random_window(height, width)
        results['img'] = np.ascontiguousarray(results['img'][y1:y2, x1:x2])
        if 'gt_seg_map' in results:
            results['gt_seg_map'] = np.ascontiguousarray(results['gt_seg_map'][y1:y2, x1:x2])
        if 'gt_masks' in results:  # (N, H, W) masks without boxes, or an empty stack
            results['gt_masks'] = np.ascontiguousarray(results['gt_masks'][:, y1:y2, x1:x2])
        results['img_shape'] = (y2 - y1, x2 - x1)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(crop_size={self.crop_size}, '
                f'cat_max_ratio={self.cat_max_ratio}, ignore_index={self.ignore_index})')
