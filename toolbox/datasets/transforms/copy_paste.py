"""Copy-Paste augmentation for instance masks (Ghiasi et al. 2021, "Simple Copy-Paste is a
Strong Data Augmentation Method for Instance Segmentation"; the semantics of MMDetection 3.x's
``CopyPaste``).

:class:`CopyPaste` pastes a random subset of the objects of another image (the *source*) onto
the current one (the *destination*), pixel by pixel through the objects' masks. It runs inside
:class:`toolbox.datasets.MultiImageMixDataset`, which calls its ``get_indexes(dataset)`` and
passes the source sample as ``results['mix_results'][0]``. Both samples need instance masks
(``LoadAnnotations(with_mask=True)``).

Conventions: images (H, W, C) (or (H, W)); boxes ``gt_bboxes`` float32 (N, 4) ``xyxy``
absolute pixels (pixel ``i`` covers ``[i, i + 1)``), with ``gt_bboxes_labels`` int64 (N,),
``gt_ignore_flags`` bool (N,) and ``gt_masks`` uint8 0 / 1 (N, H, W), all in the frame of the
current image and in the same order.
"""
from __future__ import annotations

import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness

from toolbox.registry import TRANSFORMS
from toolbox.structures import clip_boxes

from .mix import _box_fields


def mask_boxes(masks) -> np.ndarray:
    """(N, 4) float32 tight ``xyxy`` boxes of (N, H, W) masks.

    ``x1`` is the first column holding a mask pixel and ``x2`` the last one plus 1 (the
    continuous convention: the box of pixel ``i`` is ``[i, i + 1)``); the same for rows. An
    empty mask gives ``[0, 0, 0, 0]``.
    """
    masks = np.asarray(masks).astype(bool, copy=False)
    num, height, width = masks.shape
    boxes = np.zeros((num, 4), np.float32)
    if num == 0 or height == 0 or width == 0:
        return boxes
    cols = masks.any(1)  # (N, W): columns holding a pixel of each mask
    rows = masks.any(2)  # (N, H)
    boxes[:, 0] = cols.argmax(1)
    boxes[:, 1] = rows.argmax(1)
    boxes[:, 2] = width - cols[:, ::-1].argmax(1)
    boxes[:, 3] = height - rows[:, ::-1].argmax(1)
    boxes[~rows.any(1)] = 0
    return boxes


def _check_sample(sample: dict, role: str) -> None:
    """``sample`` has masks that fit its image and boxes; otherwise ``ValueError``."""
    path = sample.get('img_path')
    if 'gt_masks' not in sample:
        raise ValueError(f'CopyPaste: the {role} has no gt_masks ({path}): load instance masks '
                         f'with LoadAnnotations(with_mask=True) in the inner dataset pipeline')
    if 'gt_seg_map' in sample:
        raise ValueError(f'CopyPaste: the {role} has a gt_seg_map ({path}); CopyPaste does not '
                         f'update segmentation maps')
    masks, img = sample['gt_masks'], sample['img']
    if masks.ndim != 3 or tuple(masks.shape[1:]) != tuple(img.shape[:2]):
        raise ValueError(f'CopyPaste: the {role}\'s gt_masks have shape {masks.shape}, not '
                         f'(N, {img.shape[0]}, {img.shape[1]}) of its image ({path}); load them '
                         f'before the geometric transforms')
    num_boxes = len(_box_fields(sample)[0])
    if len(masks) != num_boxes:
        raise ValueError(f'CopyPaste: the {role} has {len(masks)} masks for {num_boxes} boxes '
                         f'({path})')


@TRANSFORMS.register_module()
class CopyPaste(BaseTransform):
    """Paste a random subset of another image's objects onto this one (Simple Copy-Paste).

    The source is ``results['mix_results'][0]`` (loaded through the inner dataset's pipeline,
    see :class:`toolbox.datasets.MultiImageMixDataset`), the destination is ``results``. Both
    must carry ``gt_masks``. Put the geometric steps (large-scale jittering: random resize,
    crop, flip, pad to one fixed size) in the inner dataset's pipeline so that the two images
    are prepared alike; a source of another size is cropped or zero-padded at the bottom/right
    to the destination's size (image, masks; its boxes are clipped to the destination frame).

    1. **Select**: ``n`` is drawn uniformly from ``[0, min(N_src, max_num_pasted)]`` (both
       ends included; MMDetection draws from ``[0, min(N_src + 1, max_num_pasted) - 1]``, the
       same range except at the cap), then ``n`` of the source's objects without replacement.
       A selected object whose mask is empty after the crop/pad, or whose clipped box has no
       area, is not pasted. Nothing to paste: the results are returned unchanged.
    2. **Paste**: the composite is the union of the pasted masks; every destination pixel
       under it (all channels) takes the source's value, ``dst * (1 - c) + src * c``, and the
       destination's masks lose it (``mask &= ~c``).
    3. **Filter the destination's objects** (MMDetection's rule): with ``updated`` the tight
       boxes of the updated masks and ``old`` the destination's boxes, object ``i`` is kept
       when ``all(|updated_i - old_i| <= bboxes_occluded_thr)`` (its box barely changed) or its
       updated mask area is ``> mask_occluded_thr`` pixels (enough of it stays visible). An
       object whose updated mask is empty is always dropped. A kept object takes its
       *updated* box (the tight box of its visible part).
    4. **Append** the pasted objects after the kept destination ones: their boxes (the
       source's ``gt_bboxes`` clipped to the destination frame, as MMDetection keeps the
       source boxes), labels, ignore flags and masks.

    The defaults (100 objects, 10 px, 300 px) are MMDetection's, from the paper's
    implementation. Draws use NumPy's global generator (seeded per sample by
    :class:`toolbox.datasets.SeededDataset`); :meth:`get_indexes` and the selection are marked
    with mmcv's ``cache_randomness``. Training only: ``img_shape`` is unchanged and no
    ``scale_factor`` is involved.

    Args:
        max_num_pasted: the most source objects pasted.
        bboxes_occluded_thr: a destination object whose updated box moved by at most this
            many pixels on every side is kept.
        mask_occluded_thr: a destination object keeping more than this many mask pixels is
            kept.
    """

    def __init__(self, max_num_pasted: int = 100, bboxes_occluded_thr: float = 10,
                 mask_occluded_thr: float = 300):
        if int(max_num_pasted) != max_num_pasted or max_num_pasted < 0:
            raise ValueError(f'CopyPaste: max_num_pasted must be an integer >= 0, got '
                             f'{max_num_pasted!r}')
        if bboxes_occluded_thr < 0 or mask_occluded_thr < 0:
            raise ValueError(f'CopyPaste: the thresholds must be >= 0, got '
                             f'bboxes_occluded_thr={bboxes_occluded_thr}, '
                             f'mask_occluded_thr={mask_occluded_thr}')
        self.max_num_pasted = int(max_num_pasted)
        self.bboxes_occluded_thr = bboxes_occluded_thr
        self.mask_occluded_thr = mask_occluded_thr

    @cache_randomness
    def get_indexes(self, dataset) -> list[int]:
        """One random index of ``dataset`` (the source; it may be the current sample's own
        index, as in MMDetection)."""
        return [int(np.random.randint(0, len(dataset)))]

    @cache_randomness
    def _draw_selection(self, num_objects: int) -> np.ndarray:
        """Sorted indexes of the source objects to paste (class docstring, step 1)."""
        count = np.random.randint(0, min(num_objects, self.max_num_pasted) + 1)
        return np.sort(np.random.choice(num_objects, size=count, replace=False))

    @staticmethod
    def _fit_source(img: np.ndarray, masks: np.ndarray, height: int, width: int):
        """Crop, then zero-pad, ``img`` (H, W[, C]) and ``masks`` (N, H, W) at the bottom/right
        to (height, width)."""
        img, masks = img[:height, :width], masks[:, :height, :width]
        pad_h, pad_w = height - img.shape[0], width - img.shape[1]
        if pad_h or pad_w:
            img = np.pad(img, ((0, pad_h), (0, pad_w)) + ((0, 0),) * (img.ndim - 2))
            masks = np.pad(masks, ((0, 0), (0, pad_h), (0, pad_w)))
        return img, masks

    def transform(self, results: dict) -> dict:
        others = results.get('mix_results') or []
        if len(others) != 1:
            raise ValueError(f'CopyPaste needs 1 other image in results["mix_results"], got '
                             f'{len(others)}: run it inside MultiImageMixDataset')
        source = others[0]
        _check_sample(results, 'destination (the sample itself)')
        _check_sample(source, 'source (mix_results[0])')
        dst_img = results['img']
        height, width = dst_img.shape[:2]
        if dst_img.shape[2:] != source['img'].shape[2:]:
            raise ValueError(f'CopyPaste: the source image {source["img"].shape} and the '
                             f'destination image {dst_img.shape} have different channels')

        src_boxes, src_labels, src_flags = _box_fields(source)
        selected = self._draw_selection(len(src_boxes))
        src_img, src_masks = self._fit_source(source['img'], source['gt_masks'][selected],
                                              height, width)
        src_masks = src_masks.astype(bool, copy=False)
        src_boxes = clip_boxes(src_boxes[selected], (height, width))
        pasted = src_masks.any((1, 2)) & (src_boxes[:, 2] > src_boxes[:, 0]) & \
            (src_boxes[:, 3] > src_boxes[:, 1])
        if not pasted.any():
            return results
        src_masks, src_boxes = src_masks[pasted], src_boxes[pasted]
        src_labels, src_flags = src_labels[selected][pasted], src_flags[selected][pasted]

        composite = src_masks.any(0)  # (H, W)
        under = composite.reshape(composite.shape + (1,) * (dst_img.ndim - 2))
        results['img'] = np.where(under, src_img, dst_img).astype(dst_img.dtype, copy=False)

        mask_dtype = results['gt_masks'].dtype
        dst_boxes, dst_labels, dst_flags = _box_fields(results)
        dst_masks = results['gt_masks'].astype(bool) & ~composite
        updated = mask_boxes(dst_masks)
        areas = dst_masks.sum((1, 2))
        barely_changed = (np.abs(updated - dst_boxes) <= self.bboxes_occluded_thr).all(1)
        keep = (areas > 0) & (barely_changed | (areas > self.mask_occluded_thr))

        results['gt_bboxes'] = np.concatenate([updated[keep], src_boxes]).astype(np.float32)
        results['gt_bboxes_labels'] = np.concatenate([dst_labels[keep], src_labels])
        results['gt_ignore_flags'] = np.concatenate([dst_flags[keep], src_flags])
        results['gt_masks'] = np.concatenate([dst_masks[keep], src_masks]).astype(mask_dtype)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(max_num_pasted={self.max_num_pasted}, '
                f'bboxes_occluded_thr={self.bboxes_occluded_thr}, '
                f'mask_occluded_thr={self.mask_occluded_thr})')
