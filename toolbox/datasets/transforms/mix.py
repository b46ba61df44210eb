"""Multi-image and affine augmentation for detection: Mosaic, RandomAffine, MixUp (YOLOX, Ge et
al. 2021; the same semantics as MMDetection's transforms of these names).

:class:`Mosaic` and :class:`MixUp` need other images: they run inside
:class:`toolbox.datasets.MultiImageMixDataset`, which calls their ``get_indexes(dataset)``,
loads those samples through the inner dataset's pipeline and passes them as
``results['mix_results']`` (a list of results dicts).

All three move ``img`` (H, W, C) and ``gt_bboxes`` (float32 (N, 4) ``xyxy`` absolute pixels)
with ``gt_bboxes_labels`` and ``gt_ignore_flags``; boxes dropped by a transform are dropped with
their labels and flags, in order. They set ``img_shape``; they are training transforms (no
``scale_factor`` is tracked through them) and refuse ``gt_seg_map`` and ``gt_masks``, which
they do not move (:class:`~toolbox.datasets.transforms.CopyPaste` is the mixing transform for
instance masks).
Random draws use NumPy's global generator (seeded per sample by
:class:`toolbox.datasets.SeededDataset`); the methods that draw are marked with mmcv's
``cache_randomness``.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmcv.transforms.utils import cache_randomness

from toolbox.registry import TRANSFORMS
from toolbox.structures import clip_boxes, flip_boxes, scale_boxes, translate_boxes

_BOX_FIELDS = ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags')
_QUADRANTS = ('top_left', 'top_right', 'bottom_left', 'bottom_right')


_PIXEL_ANNOTATIONS = {'gt_seg_map': 'segmentation maps', 'gt_masks': 'instance masks'}


def _no_pixel_annotations(results: dict, name: str) -> None:
    """Refuse a sample with a segmentation map or instance masks, which ``name`` cannot move."""
    for key, what in _PIXEL_ANNOTATIONS.items():
        if key in results:
            raise ValueError(f'{name} moves images and boxes only; it cannot be used with '
                             f'{key} ({results.get("img_path")}): it does not move {what}')


def _other_samples(results: dict, name: str, count: int) -> list:
    """The ``count`` samples ``MultiImageMixDataset`` put in ``results['mix_results']``; a
    sample with a segmentation map or instance masks, or the wrong number of others, is an
    error."""
    _no_pixel_annotations(results, name)
    others = results.get('mix_results') or []
    if len(others) != count:
        raise ValueError(f'{name} needs {count} other image{"s" if count > 1 else ""} in '
                         f'results["mix_results"], got {len(others)}: run it inside '
                         f'MultiImageMixDataset')
    for other in others:
        _no_pixel_annotations(other, name)
    return others


def _resize_keep_channels(img: np.ndarray, new_w: int, new_h: int) -> np.ndarray:
    resized = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return resized.reshape((new_h, new_w) + img.shape[2:])


def _box_fields(results: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (N, 4) float32, labels (N,) int64, ignore flags (N,) bool)`` of a results dict;
    a sample without ``gt_ignore_flags`` has none ignored."""
    boxes = np.asarray(results.get('gt_bboxes', np.zeros((0, 4))), np.float32).reshape(-1, 4)
    labels = np.asarray(results.get('gt_bboxes_labels', np.zeros(0)), np.int64).reshape(-1)
    flags = np.asarray(results.get('gt_ignore_flags', np.zeros(len(boxes))), bool).reshape(-1)
    return boxes, labels, flags


def _set_box_fields(results: dict, boxes, labels, flags, keep: np.ndarray) -> None:
    """Write the kept rows back; ``gt_ignore_flags`` only if the sample had it."""
    results['gt_bboxes'] = boxes[keep].astype(np.float32, copy=False)
    results['gt_bboxes_labels'] = labels[keep]
    if 'gt_ignore_flags' in results:
        results['gt_ignore_flags'] = flags[keep]


def box_candidates(before: np.ndarray, after: np.ndarray, min_bbox_size: float = 2.0,
                   min_area_ratio: float = 0.2, max_aspect_ratio: float = 20.0) -> np.ndarray:
    """(N,) bool: which boxes survive a geometric transform (YOLOX's ``box_candidates``).

    Args:
        before: (N, 4) ``xyxy`` boxes transformed without clipping to the output, scaled as
            the image was (so that only what was cut off lowers the area ratio).
        after: (N, 4) the same boxes clipped to the output image.

    A box is kept when both sides of ``after`` exceed ``min_bbox_size``, its area is more than
    ``min_area_ratio`` of ``before``'s, and ``max(w / h, h / w) < max_aspect_ratio``.
    """
    eps = 1e-16
    before_wh = before[:, 2:] - before[:, :2]
    after_wh = after[:, 2:] - after[:, :2]
    area_ratio = after_wh.prod(1) / (before_wh.prod(1) + eps)
    aspect = np.maximum(after_wh[:, 0] / (after_wh[:, 1] + eps),
                        after_wh[:, 1] / (after_wh[:, 0] + eps))
    return ((after_wh > min_bbox_size).all(1) & (area_ratio > min_area_ratio) &
            (aspect < max_aspect_ratio))


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 4) ``xyxy`` boxes through a 3x3 projective ``matrix`` (continuous coordinates):
    the four corners of each box are mapped and enclosed by a new axis-aligned box."""
    x1, y1, x2, y2 = boxes.T
    corners = np.stack([np.stack([x1, y1], 1), np.stack([x2, y1], 1),
                        np.stack([x1, y2], 1), np.stack([x2, y2], 1)], 1)  # (N, 4, 2)
    homogeneous = np.concatenate([corners, np.ones(corners.shape[:2] + (1,))], -1)
    mapped = homogeneous @ matrix.T  # (N, 4, 3)
    xy = mapped[..., :2] / mapped[..., 2:]
    return np.concatenate([xy.min(1), xy.max(1)], 1).astype(np.float32)


@TRANSFORMS.register_module()
class Mosaic(BaseTransform):
    """Four images on one (2h, 2w) canvas around a random centre (YOLOX).

    The canvas, filled with ``pad_val``, is ``(2 * h, 2 * w)`` for ``img_scale = (w, h)``. The
    centre ``(cx, cy)`` is drawn as ``int(U(center_ratio_range) * w)``,
    ``int(U(center_ratio_range) * h)``. The current image and the three of
    ``results['mix_results']`` are resized, keeping their aspect ratio, to fit ``(w, h)``
    (factor ``min(h / h_i, w / w_i)``) and placed with a corner at the centre: top-left,
    top-right, bottom-left, bottom-right, in that order. Whatever falls outside the canvas is
    cut off; boxes are scaled and shifted with their image, clipped to the canvas, and those
    whose width or height is then not above ``min_bbox_size`` are dropped with their labels and
    flags. With probability ``1 - prob`` the results pass through unchanged. Follow it with
    :class:`RandomAffine` with ``border=(-w // 2, -h // 2)`` to come back to (h, w).

    Args:
        img_scale: ``(w, h)`` of one quadrant.
        center_ratio_range: range of the centre, relative to ``(w, h)``.
        min_bbox_size: boxes with a side not above this (pixels) after clipping are dropped.
        pad_val: canvas fill value (114, YOLOX's grey).
        prob: probability of applying the mosaic.
    """

    def __init__(self, img_scale=(640, 640), center_ratio_range=(0.5, 1.5),
                 min_bbox_size: float = 0.0, pad_val: float = 114.0, prob: float = 1.0):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'Mosaic: prob must be in [0, 1], got {prob}')
        if center_ratio_range[0] > center_ratio_range[1]:
            raise ValueError(f'Mosaic: center_ratio_range must be (low, high), got '
                             f'{center_ratio_range}')
        self.img_scale = (int(img_scale[0]), int(img_scale[1]))
        self.center_ratio_range = tuple(center_ratio_range)
        self.min_bbox_size = min_bbox_size
        self.pad_val = pad_val
        self.prob = prob

    @cache_randomness
    def get_indexes(self, dataset) -> list[int]:
        """Three random indexes of ``dataset`` (with replacement) for the other quadrants."""
        return np.random.randint(0, len(dataset), size=3).tolist()

    @cache_randomness
    def _draw_center(self) -> tuple[int, int]:
        w, h = self.img_scale
        return (int(np.random.uniform(*self.center_ratio_range) * w),
                int(np.random.uniform(*self.center_ratio_range) * h))

    @staticmethod
    def _place(quadrant: str, center: tuple[int, int], size: tuple[int, int],
               canvas_wh: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``(paste, crop)``: where an image of ``size = (w_i, h_i)`` lands on the canvas and
        which part of it lands there, both ``(x1, y1, x2, y2)`` integer pixel bounds."""
        cx, cy = center
        w_i, h_i = size
        canvas_w, canvas_h = canvas_wh
        left = quadrant.endswith('left')
        top = quadrant.startswith('top')
        x1, x2 = (max(cx - w_i, 0), cx) if left else (cx, min(cx + w_i, canvas_w))
        y1, y2 = (max(cy - h_i, 0), cy) if top else (cy, min(cy + h_i, canvas_h))
        crop_x1 = w_i - (x2 - x1) if left else 0
        crop_y1 = h_i - (y2 - y1) if top else 0
        return (x1, y1, x2, y2), (crop_x1, crop_y1, crop_x1 + x2 - x1, crop_y1 + y2 - y1)

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        others = _other_samples(results, 'Mosaic', 3)
        w, h = self.img_scale
        img = results['img']
        canvas = np.full((2 * h, 2 * w) + img.shape[2:], self.pad_val, dtype=img.dtype)
        center = self._draw_center()
        parts_boxes, parts_labels, parts_flags = [], [], []
        for quadrant, part in zip(_QUADRANTS, [results] + list(others)):
            part_img = part['img']
            h_i, w_i = part_img.shape[:2]
            factor = min(h / h_i, w / w_i)
            new_w, new_h = max(int(w_i * factor), 1), max(int(h_i * factor), 1)
            part_img = _resize_keep_channels(part_img, new_w, new_h)
            (x1, y1, x2, y2), (crop_x1, crop_y1, crop_x2, crop_y2) = self._place(
                quadrant, center, (new_w, new_h), (2 * w, 2 * h))
            canvas[y1:y2, x1:x2] = part_img[crop_y1:crop_y2, crop_x1:crop_x2]
            boxes, labels, flags = _box_fields(part)
            # the factors of the pixels actually resized (new_w / w_i), not the rounded-off one
            boxes = translate_boxes(scale_boxes(boxes, (new_w / w_i, new_h / h_i)),
                                    (x1 - crop_x1, y1 - crop_y1))
            parts_boxes.append(boxes)
            parts_labels.append(labels)
            parts_flags.append(flags)
        boxes = clip_boxes(np.concatenate(parts_boxes), (2 * h, 2 * w))
        keep = ((boxes[:, 2] - boxes[:, 0] > self.min_bbox_size) &
                (boxes[:, 3] - boxes[:, 1] > self.min_bbox_size))
        _set_box_fields(results, boxes, np.concatenate(parts_labels),
                        np.concatenate(parts_flags), keep)
        results['img'] = canvas
        results['img_shape'] = canvas.shape[:2]
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(img_scale={self.img_scale}, '
                f'center_ratio_range={self.center_ratio_range}, pad_val={self.pad_val}, '
                f'prob={self.prob})')


@TRANSFORMS.register_module()
class RandomAffine(BaseTransform):
    """Random rotation, scale, shear and translation as one 3x3 matrix (YOLOX's
    ``random_perspective``), applied with ``cv2.warpPerspective``.

    The output is ``(h + 2 * border[1], w + 2 * border[0])`` for an input (h, w); after
    :class:`Mosaic` a border of ``(-w // 2, -h // 2)`` of the quadrant size brings the
    (2h, 2w) canvas back to (h, w). The matrix, in continuous pixel coordinates (pixel ``i``
    covers ``[i, i + 1)``), is ``T @ Sh @ R @ S @ C``: ``C`` moves the input's centre to the
    origin; ``S`` scales by ``U(scaling_ratio_range)``; ``R`` rotates by
    ``U(-max_rotate_degree, max_rotate_degree)`` degrees; ``Sh`` shears by
    ``tan(U(-max_shear_degree, max_shear_degree))`` along x and y; ``T`` moves the origin to
    the output's centre plus ``U(-max_translate_ratio, max_translate_ratio)`` times the output
    size. With all ranges at zero (scale 1) and no border it is the identity.

    Boxes: the four corners of each box are transformed and enclosed (:func:`warp_boxes`),
    clipped to the output, and filtered by :func:`box_candidates` against the box scaled by the
    drawn scale (``min_bbox_size``, ``min_area_ratio``, ``max_aspect_ratio``).

    Args:
        border: ``(x, y)`` pixels added on each side of the output (negative: cropped).
        border_val: fill value of the pixels that come from outside the input.
    """

    def __init__(self, max_rotate_degree: float = 10.0, max_translate_ratio: float = 0.1,
                 scaling_ratio_range=(0.5, 1.5), max_shear_degree: float = 2.0,
                 border=(0, 0), border_val=(114, 114, 114), min_bbox_size: float = 2.0,
                 min_area_ratio: float = 0.2, max_aspect_ratio: float = 20.0):
        if not 0.0 <= max_translate_ratio <= 1.0:
            raise ValueError(f'RandomAffine: max_translate_ratio must be in [0, 1], got '
                             f'{max_translate_ratio}')
        if not 0.0 < scaling_ratio_range[0] <= scaling_ratio_range[1]:
            raise ValueError(f'RandomAffine: scaling_ratio_range must be (low, high) with '
                             f'0 < low <= high, got {scaling_ratio_range}')
        self.max_rotate_degree = max_rotate_degree
        self.max_translate_ratio = max_translate_ratio
        self.scaling_ratio_range = tuple(scaling_ratio_range)
        self.max_shear_degree = max_shear_degree
        self.border = (int(border[0]), int(border[1]))
        self.border_val = tuple(border_val)
        self.min_bbox_size = min_bbox_size
        self.min_area_ratio = min_area_ratio
        self.max_aspect_ratio = max_aspect_ratio

    @cache_randomness
    def _draw_params(self) -> dict:
        return dict(
            rotate=np.random.uniform(-self.max_rotate_degree, self.max_rotate_degree),
            scale=np.random.uniform(*self.scaling_ratio_range),
            shear=np.random.uniform(-self.max_shear_degree, self.max_shear_degree, size=2),
            translate=np.random.uniform(-self.max_translate_ratio, self.max_translate_ratio,
                                        size=2))

    @staticmethod
    def homography(in_wh, out_wh, rotate: float, scale: float, shear, translate) -> np.ndarray:
        """The 3x3 matrix ``T @ Sh @ R @ S @ C`` (class docstring) mapping continuous input
        coordinates to output ones; ``rotate`` and ``shear = (x, y)`` in degrees,
        ``translate = (x, y)`` as fractions of ``out_wh``."""
        centre = np.eye(3)
        centre[:2, 2] = -in_wh[0] / 2, -in_wh[1] / 2
        scaling = np.diag([scale, scale, 1.0])
        angle = math.radians(rotate)
        rotation = np.array([[math.cos(angle), -math.sin(angle), 0.0],
                             [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]])
        shearing = np.array([[1.0, math.tan(math.radians(shear[0])), 0.0],
                             [math.tan(math.radians(shear[1])), 1.0, 0.0], [0.0, 0.0, 1.0]])
        translation = np.eye(3)
        translation[:2, 2] = ((0.5 + translate[0]) * out_wh[0], (0.5 + translate[1]) * out_wh[1])
        return translation @ shearing @ rotation @ scaling @ centre

    def transform(self, results: dict) -> dict:
        _no_pixel_annotations(results, 'RandomAffine')
        img = results['img']
        h, w = img.shape[:2]
        out_w, out_h = w + 2 * self.border[0], h + 2 * self.border[1]
        if out_w <= 0 or out_h <= 0:
            raise ValueError(f'RandomAffine: border {self.border} leaves no output for a '
                             f'{w}x{h} image')
        params = self._draw_params()
        matrix = self.homography((w, h), (out_w, out_h), **params)
        # cv2 maps pixel indices (pixel i centred at i); boxes use continuous coordinates
        # (pixel i centred at i + 0.5): conjugating by the half-pixel shift makes the two agree
        half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
        index_matrix = np.linalg.inv(half) @ matrix @ half
        channels = img.shape[2] if img.ndim == 3 else 1
        border_val = tuple(self.border_val[:channels]) if len(self.border_val) >= channels \
            else (self.border_val[0],) * channels
        warped = cv2.warpPerspective(img, index_matrix, dsize=(out_w, out_h),
                                     borderValue=border_val)
        results['img'] = warped.reshape((out_h, out_w) + img.shape[2:])
        results['img_shape'] = (out_h, out_w)
        boxes, labels, flags = _box_fields(results)
        warped_boxes = clip_boxes(warp_boxes(boxes, matrix), (out_h, out_w))
        keep = box_candidates(scale_boxes(boxes, params['scale']), warped_boxes,
                              self.min_bbox_size, self.min_area_ratio, self.max_aspect_ratio)
        _set_box_fields(results, warped_boxes, labels, flags, keep)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(max_rotate_degree={self.max_rotate_degree}, '
                f'max_translate_ratio={self.max_translate_ratio}, '
                f'scaling_ratio_range={self.scaling_ratio_range}, '
                f'max_shear_degree={self.max_shear_degree}, border={self.border})')


@TRANSFORMS.register_module()
class MixUp(BaseTransform):
    """Blend the image with another one, 0.5 / 0.5, and keep the boxes of both (YOLOX).

    The other image is ``results['mix_results'][0]``, loaded through the inner dataset's
    pipeline only (not through the transforms before this one, as in YOLOX); the image it is
    blended into is whatever the pipeline made so far (the mosaic, after :class:`Mosaic` and
    :class:`RandomAffine`). With probability ``prob``:

    1. the other image is resized, keeping its aspect ratio, to fit ``img_scale = (w, h)``,
       placed at the top-left of a ``pad_val`` canvas of that size, and the canvas is resized
       by a jitter ``U(ratio_range)``;
    2. the canvas is flipped horizontally with probability ``flip_ratio``;
    3. it is padded with ``pad_val`` to at least the current image's size and cropped to it at
       a random offset;
    4. the images are blended ``0.5 * img + 0.5 * other`` (``cv2.addWeighted``, saturating and
       rounding for integer images) and the other image's boxes (scaled, flipped, shifted,
       clipped) are appended after the current ones; the appended boxes are filtered by
       :func:`box_candidates` against their uncropped version.

    An other image without boxes leaves the results unchanged (YOLOX).

    Args:
        img_scale: ``(w, h)`` the other image is fitted into before the jitter.
        ratio_range: range of the jitter scale.
        flip_ratio: probability of flipping the other image horizontally.
        pad_val: fill value of the canvas.
        max_iters: how many random indexes :meth:`get_indexes` tries to find an image with
            boxes.
        prob: probability of applying the mixup.
    """

    def __init__(self, img_scale=(640, 640), ratio_range=(0.5, 1.5), flip_ratio: float = 0.5,
                 pad_val: float = 114.0, max_iters: int = 15, min_bbox_size: float = 2.0,
                 min_area_ratio: float = 0.2, max_aspect_ratio: float = 20.0, prob: float = 1.0):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'MixUp: prob must be in [0, 1], got {prob}')
        if not 0.0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(f'MixUp: ratio_range must be (low, high) with 0 < low <= high, '
                             f'got {ratio_range}')
        if max_iters < 1:
            raise ValueError(f'MixUp: max_iters must be at least 1, got {max_iters}')
        self.img_scale = (int(img_scale[0]), int(img_scale[1]))
        self.ratio_range = tuple(ratio_range)
        self.flip_ratio = flip_ratio
        self.pad_val = pad_val
        self.max_iters = max_iters
        self.min_bbox_size = min_bbox_size
        self.min_area_ratio = min_area_ratio
        self.max_aspect_ratio = max_aspect_ratio
        self.prob = prob

    @cache_randomness
    def get_indexes(self, dataset) -> list[int]:
        """One random index of ``dataset``, the first of ``max_iters`` draws whose image has
        annotated instances (``get_data_info(i)['instances']``), else the last draw."""
        candidates = np.random.randint(0, len(dataset), size=self.max_iters).tolist()
        with_boxes = (i for i in candidates
                      if len(dataset.get_data_info(i).get('instances', ())) > 0)
        return [next(with_boxes, candidates[-1])]

    @cache_randomness
    def _draw_params(self) -> dict:
        return dict(jitter=np.random.uniform(*self.ratio_range),
                    flip=bool(np.random.rand() < self.flip_ratio),
                    offset=np.random.rand(2))

    def transform(self, results: dict) -> dict:
        if np.random.rand() >= self.prob:
            return results
        others = _other_samples(results, 'MixUp', 1)
        other = others[0]
        other_boxes, other_labels, other_flags = _box_fields(other)
        if not len(other_boxes):
            return results
        params = self._draw_params()
        img = results['img']
        target_h, target_w = img.shape[:2]
        w, h = self.img_scale
        other_img = other['img']
        h_o, w_o = other_img.shape[:2]
        factor = min(h / h_o, w / w_o)
        fit_w, fit_h = max(int(w_o * factor), 1), max(int(h_o * factor), 1)
        canvas = np.full((h, w) + other_img.shape[2:], self.pad_val, dtype=other_img.dtype)
        canvas[:fit_h, :fit_w] = _resize_keep_channels(other_img, fit_w, fit_h)
        jit_w, jit_h = max(int(w * params['jitter']), 1), max(int(h * params['jitter']), 1)
        canvas = _resize_keep_channels(canvas, jit_w, jit_h)
        boxes = clip_boxes(scale_boxes(other_boxes, (fit_w / w_o * jit_w / w,
                                                     fit_h / h_o * jit_h / h)), (jit_h, jit_w))
        if params['flip']:
            canvas = np.ascontiguousarray(canvas[:, ::-1])
            boxes = flip_boxes(boxes, (jit_h, jit_w), 'horizontal')
        padded_h, padded_w = max(jit_h, target_h), max(jit_w, target_w)
        padded = np.full((padded_h, padded_w) + canvas.shape[2:], self.pad_val,
                         dtype=canvas.dtype)
        padded[:jit_h, :jit_w] = canvas
        x_off = int(params['offset'][0] * (padded_w - target_w + 1))
        y_off = int(params['offset'][1] * (padded_h - target_h + 1))
        cropped = padded[y_off:y_off + target_h, x_off:x_off + target_w].astype(img.dtype)
        shifted = translate_boxes(boxes, (-x_off, -y_off))
        clipped = clip_boxes(shifted, (target_h, target_w))
        keep_other = box_candidates(shifted, clipped, self.min_bbox_size,
                                    self.min_area_ratio, self.max_aspect_ratio)
        blended = cv2.addWeighted(img, 0.5, cropped, 0.5, 0.0)
        results['img'] = blended.reshape(img.shape)
        own_boxes, own_labels, own_flags = _box_fields(results)
        keep = np.concatenate([np.ones(len(own_boxes), bool), keep_other])
        _set_box_fields(results, np.concatenate([own_boxes, clipped]),
                        np.concatenate([own_labels, other_labels]),
                        np.concatenate([own_flags, other_flags]), keep)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(img_scale={self.img_scale}, '
                f'ratio_range={self.ratio_range}, flip_ratio={self.flip_ratio}, '
                f'pad_val={self.pad_val}, prob={self.prob})')
