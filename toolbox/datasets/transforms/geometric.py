"""Geometric transforms that move image, boxes, instance masks and segmentation map together.

Boxes are ``xyxy`` absolute pixels in the frame of the current image; instance masks
``gt_masks`` are uint8 (N, H, W) in that same frame, one per box. ``scale_factor`` is the
cumulative ``(w_scale, h_scale)`` from the original image, used to map predictions back.
"""
import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from toolbox.registry import TRANSFORMS
from toolbox.structures import FLIP_DIRECTIONS, IGNORE_INDEX, clip_boxes, flip_boxes, scale_boxes


def rescale_size(old_wh, scale, keep_ratio: bool):
    """New ``(w, h)`` for an image of size ``old_wh`` and a target ``scale = (w, h)``.

    With ``keep_ratio`` the image is scaled by one factor so that the long edge fits
    ``max(scale)`` and the short edge fits ``min(scale)`` (the mmdet/Detectron convention).
    """
    w, h = old_wh
    if not keep_ratio:
        return int(scale[0]), int(scale[1])
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5)


#: Channels ``cv2.resize`` takes at once (``CV_CN_MAX``: 128 in OpenCV 5, 512 in OpenCV 4).
_CV2_MAX_CHANNELS = 128


def resize_masks(masks: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    """Nearest-neighbour resize of (N, H, W) masks to (N, new_h, new_w), same dtype.

    The masks go through ``cv2.resize`` as the channels of one (H, W, N) image, 128 at a time
    (OpenCV's channel limit), with ``INTER_NEAREST_EXACT`` (pixel centres map to pixel
    centres, as in the bilinear image resize). Zero masks give (0, new_h, new_w).
    """
    n = len(masks)
    if n == 0:
        return np.zeros((0, new_h, new_w), masks.dtype)
    source = masks.astype(np.uint8, copy=False)
    chunks = []
    for start in range(0, n, _CV2_MAX_CHANNELS):
        chunk = np.ascontiguousarray(source[start:start + _CV2_MAX_CHANNELS].transpose(1, 2, 0))
        resized = cv2.resize(chunk, (new_w, new_h), interpolation=cv2.INTER_NEAREST_EXACT)
        chunks.append(resized.reshape(new_h, new_w, -1).transpose(2, 0, 1))
    return np.ascontiguousarray(np.concatenate(chunks)).astype(masks.dtype, copy=False)


def _apply_resize(results, new_w, new_h, interpolation):
    img = results['img']
    h, w = img.shape[:2]
    resized = cv2.resize(img, (new_w, new_h), interpolation=interpolation)
    results['img'] = resized if resized.ndim == img.ndim else resized[..., None]
    w_scale, h_scale = new_w / w, new_h / h
    results['img_shape'] = (new_h, new_w)
    old = results.get('scale_factor', (1.0, 1.0))
    results['scale_factor'] = (old[0] * w_scale, old[1] * h_scale)
    if 'gt_bboxes' in results:
        results['gt_bboxes'] = clip_boxes(scale_boxes(results['gt_bboxes'], (w_scale, h_scale)),
                                          (new_h, new_w)).astype(np.float32, copy=False)
    if 'gt_masks' in results:
        results['gt_masks'] = resize_masks(results['gt_masks'], new_w, new_h)
    if 'gt_seg_map' in results:
        results['gt_seg_map'] = cv2.resize(results['gt_seg_map'].astype(np.int32), (new_w, new_h),
                                           interpolation=cv2.INTER_NEAREST).astype(np.int64)
    return results


_INTERP = {'nearest': cv2.INTER_NEAREST, 'bilinear': cv2.INTER_LINEAR,
           'bicubic': cv2.INTER_CUBIC, 'area': cv2.INTER_AREA}


@TRANSFORMS.register_module()
class Resize(BaseTransform):
    """Resize to ``scale = (w, h)``, keeping the aspect ratio by default (see
    :func:`rescale_size`)."""

    def __init__(self, scale, keep_ratio: bool = True, interpolation: str = 'bilinear'):
        self.scale = tuple(scale) if not isinstance(scale, int) else (scale, scale)
        self.keep_ratio = keep_ratio
        self.interpolation = _INTERP[interpolation]

    def transform(self, results: dict) -> dict:
        h, w = results['img'].shape[:2]
        new_w, new_h = rescale_size((w, h), self.scale, self.keep_ratio)
        return _apply_resize(results, new_w, new_h, self.interpolation)


@TRANSFORMS.register_module()
class RandomResize(BaseTransform):
    """Resize to ``scale`` times a ratio drawn uniformly from ``ratio_range``
    (multi-scale training; keeps the aspect ratio by default)."""

    def __init__(self, scale, ratio_range=(0.5, 2.0), keep_ratio: bool = True,
                 interpolation: str = 'bilinear'):
        self.scale = tuple(scale)
        self.ratio_range = ratio_range
        self.keep_ratio = keep_ratio
        self.interpolation = _INTERP[interpolation]

    def transform(self, results: dict) -> dict:
        ratio = np.random.uniform(*self.ratio_range)
        target = (self.scale[0] * ratio, self.scale[1] * ratio)
        h, w = results['img'].shape[:2]
        new_w, new_h = rescale_size((w, h), target, self.keep_ratio)
        return _apply_resize(results, max(new_w, 1), max(new_h, 1), self.interpolation)


@TRANSFORMS.register_module()
class RandomChoiceResize(BaseTransform):
    """Resize to one of ``scales`` (each ``(w, h)``) drawn uniformly, as :class:`Resize`.

    DETR's multi-scale training: ``scales=[(1333, s) for s in range(480, 801, 32)]`` with
    ``keep_ratio=True`` sets the short edge to ``s`` and caps the long edge at 1333.
    """

    def __init__(self, scales, keep_ratio: bool = True, interpolation: str = 'bilinear'):
        self.scales = [tuple(s) if not isinstance(s, int) else (s, s) for s in scales]
        if not self.scales:
            raise ValueError('RandomChoiceResize needs at least one scale')
        self.keep_ratio = keep_ratio
        self.interpolation = _INTERP[interpolation]

    def transform(self, results: dict) -> dict:
        scale = self.scales[np.random.randint(len(self.scales))]
        h, w = results['img'].shape[:2]
        new_w, new_h = rescale_size((w, h), scale, self.keep_ratio)
        return _apply_resize(results, max(new_w, 1), max(new_h, 1), self.interpolation)


@TRANSFORMS.register_module()
class RandomSizeCrop(BaseTransform):
    """DETR's ``RandomSizeCrop``: crop a window of random size at a random position.

    The window's width is drawn uniformly from ``[min_size, min(w, max_size)]`` and its height
    from ``[min_size, min(h, max_size)]`` (a side shorter than ``min_size`` is kept whole).
    Boxes (``gt_bboxes`` (N, 4) ``xyxy`` pixels) are shifted into the window and clipped to
    it; boxes left with no area are removed with their ``gt_bboxes_labels``,
    ``gt_ignore_flags`` and ``gt_masks`` (cropped to the window), so an image may end up
    without objects (DETR trains on those). A kept box's mask may be empty in the window
    (a non-convex object whose box alone reaches into it).
    ``img_shape`` is updated; ``scale_factor`` is unchanged (training pipelines only).
    """

    def __init__(self, min_size: int, max_size: int):
        if not 1 <= min_size <= max_size:
            raise ValueError(f'need 1 <= min_size <= max_size, got {min_size}, {max_size}')
        self.min_size = min_size
        self.max_size = max_size

    def _side(self, length: int) -> int:
        high = min(length, self.max_size)
        return high if high <= self.min_size else np.random.randint(self.min_size, high + 1)

    def transform(self, results: dict) -> dict:
        h, w = results['img'].shape[:2]
        crop_w, crop_h = self._side(w), self._side(h)
        x1 = np.random.randint(0, w - crop_w + 1)
        y1 = np.random.randint(0, h - crop_h + 1)
        results['img'] = np.ascontiguousarray(results['img'][y1:y1 + crop_h, x1:x1 + crop_w])
        results['img_shape'] = (crop_h, crop_w)
        if 'gt_seg_map' in results:
            results['gt_seg_map'] = np.ascontiguousarray(
                results['gt_seg_map'][y1:y1 + crop_h, x1:x1 + crop_w])
        if 'gt_masks' in results:
            results['gt_masks'] = results['gt_masks'][:, y1:y1 + crop_h, x1:x1 + crop_w]
        if 'gt_bboxes' in results:
            boxes = results['gt_bboxes'].astype(np.float32).reshape(-1, 4)
            boxes = clip_boxes(boxes - np.array([x1, y1, x1, y1], dtype=np.float32),
                               (crop_h, crop_w))
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            results['gt_bboxes'] = boxes[keep]
            for key in ('gt_bboxes_labels', 'gt_ignore_flags', 'gt_masks'):
                if key in results:
                    results[key] = results[key][keep]
        if 'gt_masks' in results:
            results['gt_masks'] = np.ascontiguousarray(results['gt_masks'])
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(min_size={self.min_size}, max_size={self.max_size})'


@TRANSFORMS.register_module()
class RandomFlip(BaseTransform):
    """Flip horizontally, vertically or both (``'diagonal'``) with probability ``prob``; sets
    ``flip`` and ``flip_direction``. Moves the image, boxes, ``gt_masks`` and ``gt_seg_map``."""

    def __init__(self, prob: float = 0.5, direction: str = 'horizontal'):
        if direction not in FLIP_DIRECTIONS:
            raise ValueError(f'direction must be one of {FLIP_DIRECTIONS}, got {direction!r}')
        self.prob = prob
        self.direction = direction

    def transform(self, results: dict) -> dict:
        flip = np.random.rand() < self.prob
        results['flip'] = bool(flip)
        results['flip_direction'] = self.direction if flip else None
        if not flip:
            return results
        axis = {'horizontal': 1, 'vertical': 0, 'diagonal': (0, 1)}[self.direction]
        results['img'] = np.ascontiguousarray(np.flip(results['img'], axis=axis))
        if 'gt_bboxes' in results:
            results['gt_bboxes'] = flip_boxes(results['gt_bboxes'], results['img'].shape[:2],
                                              self.direction).astype(np.float32, copy=False)
        if 'gt_masks' in results:  # (N, H, W): the image's axes shifted by one
            mask_axis = tuple(a + 1 for a in np.atleast_1d(axis))
            results['gt_masks'] = np.ascontiguousarray(np.flip(results['gt_masks'], mask_axis))
        if 'gt_seg_map' in results:
            results['gt_seg_map'] = np.ascontiguousarray(np.flip(results['gt_seg_map'], axis))
        return results


@TRANSFORMS.register_module()
class Pad(BaseTransform):
    """Pad the bottom/right to ``size = (w, h)`` or to a multiple of ``size_divisor``.

    Padding is also done per batch by the data preprocessor; this transform is for pipelines
    that need a fixed size per sample (e.g. random crops for segmentation). Image pixels are
    filled with ``pad_val``, ``gt_masks`` with 0, ``gt_seg_map`` with ``seg_pad_val``
    (``IGNORE_INDEX``, 255).
    """

    def __init__(self, size=None, size_divisor=None, pad_val=0, seg_pad_val=IGNORE_INDEX):
        if (size is None) == (size_divisor is None):
            raise ValueError('Pad needs exactly one of size or size_divisor')
        self.size = size
        self.size_divisor = size_divisor
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val

    def transform(self, results: dict) -> dict:
        h, w = results['img'].shape[:2]
        if self.size is not None:
            target_w, target_h = max(self.size[0], w), max(self.size[1], h)
        else:
            d = self.size_divisor
            target_w, target_h = int(np.ceil(w / d)) * d, int(np.ceil(h / d)) * d
        pad = ((0, target_h - h), (0, target_w - w))
        img = results['img']
        results['img'] = np.pad(img, pad + ((0, 0),) * (img.ndim - 2),
                                constant_values=self.pad_val)
        if 'gt_masks' in results:
            results['gt_masks'] = np.pad(results['gt_masks'], ((0, 0),) + pad)
        if 'gt_seg_map' in results:
            results['gt_seg_map'] = np.pad(results['gt_seg_map'], pad,
                                           constant_values=self.seg_pad_val)
        results['pad_shape'] = (target_h, target_w)
        return results
