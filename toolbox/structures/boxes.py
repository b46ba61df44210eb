"""Box geometry in one place: format converters, resize / flip / clip / translate, areas, and
the mapping of predictions back to the original image.

Inside the toolbox boxes are ``xyxy``, absolute pixels, 0-based, float32, in the frame of the
current image (see DESIGN.md). COCO ``xywh`` and VOC 1-based boxes are converted here, at the
dataset boundary only.

Every function takes (..., 4) boxes as a numpy array or a torch tensor (lists are read as float32
numpy arrays) and returns a new array / tensor of the same kind; the input is never modified in
place. Floating inputs keep their dtype (a float64 array stays float64, so exact arithmetic
stays exact); integer inputs become float32. Image shapes are ``(h, w)`` (``img_shape``,
``ori_shape``), scale factors and offsets are ``(x, y)`` (``scale_factor = (w_scale, h_scale)``),
as in the pipeline's metainfo.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

__all__ = ['FLIP_DIRECTIONS', 'xywh_to_xyxy', 'xyxy_to_xywh', 'voc_to_xyxy', 'scale_boxes',
           'rescale_boxes', 'flip_boxes', 'clip_boxes', 'translate_boxes', 'box_areas', 'box_iou',
           'boxes_to_original']

FLIP_DIRECTIONS = ('horizontal', 'vertical', 'diagonal')


def _as_boxes(boxes):
    """``boxes`` as a floating numpy array or tensor (a view when already floating), with a last
    dimension of 4. Lists and tuples become float32 arrays; an empty list becomes (0, 4)."""
    if isinstance(boxes, torch.Tensor):
        out = boxes if boxes.is_floating_point() else boxes.float()
    else:
        out = np.asarray(boxes)
        if not np.issubdtype(out.dtype, np.floating) or not isinstance(boxes, np.ndarray):
            out = out.astype(np.float32)
        if out.size == 0 and out.ndim == 1:
            out = out.reshape(0, 4)
    if out.ndim == 0 or out.shape[-1] != 4:
        raise ValueError(f'boxes must have shape (..., 4), got {tuple(out.shape)}')
    return out


def _copy(boxes):
    """A floating copy of ``boxes`` that can be written without touching the input."""
    out = _as_boxes(boxes)
    return out.clone() if isinstance(out, torch.Tensor) else out.copy()


def _xyxy_vector(boxes, x, y):
    """``[x, y, x, y]`` as an array / tensor broadcastable against (..., 4) ``boxes``."""
    if isinstance(boxes, torch.Tensor):
        return boxes.new_tensor([x, y, x, y])
    return np.array([x, y, x, y], dtype=boxes.dtype)


def _pair(value, name: str) -> tuple[float, float]:
    """``(x, y)`` from a pair, or ``(v, v)`` from a single number."""
    if isinstance(value, (int, float, np.number)):
        return float(value), float(value)
    if len(value) != 2:
        raise ValueError(f'{name} must be a number or an (x, y) pair, got {value!r}')
    return float(value[0]), float(value[1])


def xywh_to_xyxy(boxes):
    """(..., 4) COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2] = [x, y, x + w, y + h]``."""
    src = _as_boxes(boxes)
    out = _copy(src)
    out[..., 2:] = src[..., :2] + src[..., 2:]
    return out


def xyxy_to_xywh(boxes):
    """(..., 4) ``[x1, y1, x2, y2]`` -> COCO ``[x, y, w, h] = [x1, y1, x2 - x1, y2 - y1]``."""
    src = _as_boxes(boxes)
    out = _copy(src)
    out[..., 2:] = src[..., 2:] - src[..., :2]
    return out


def voc_to_xyxy(boxes):
    """(..., 4) VOC 1-based inclusive pixel boxes -> 0-based ``xyxy`` (subtract 1 from x1, y1).

    VOC's ``xmin=1, xmax=W`` spans the whole image, which is ``[0, W]`` in our convention.
    """
    src = _as_boxes(boxes)
    out = _copy(src)
    out[..., :2] = src[..., :2] - 1
    return out


def scale_boxes(boxes, scale_factor):
    """Multiply (..., 4) ``xyxy`` boxes by ``scale_factor = (w_scale, h_scale)`` (or one
    number for both): the boxes of an image resized by that factor."""
    w_scale, h_scale = _pair(scale_factor, 'scale_factor')
    boxes = _as_boxes(boxes)
    return boxes * _xyxy_vector(boxes, w_scale, h_scale)


def rescale_boxes(boxes, scale_factor):
    """Divide (..., 4) ``xyxy`` boxes by ``scale_factor = (w_scale, h_scale)``: the inverse of
    :func:`scale_boxes`, back to the frame before the resize."""
    w_scale, h_scale = _pair(scale_factor, 'scale_factor')
    if w_scale <= 0 or h_scale <= 0:
        raise ValueError(f'scale_factor must be positive, got {scale_factor!r}')
    boxes = _as_boxes(boxes)
    return boxes / _xyxy_vector(boxes, w_scale, h_scale)


def flip_boxes(boxes, img_shape, direction: str = 'horizontal'):
    """Flip (..., 4) ``xyxy`` boxes inside an image of ``img_shape = (h, w)``.

    ``'horizontal'``: ``x -> w - x`` (x1 and x2 swap roles); ``'vertical'``: ``y -> h - y``;
    ``'diagonal'``: both. Flipping twice in the same direction gives the boxes back.
    """
    if direction not in FLIP_DIRECTIONS:
        raise ValueError(f'flip direction must be one of {FLIP_DIRECTIONS}, got {direction!r}')
    h, w = img_shape[:2]
    src = _as_boxes(boxes)
    out = _copy(src)
    if direction in ('horizontal', 'diagonal'):
        out[..., 0] = w - src[..., 2]
        out[..., 2] = w - src[..., 0]
    if direction in ('vertical', 'diagonal'):
        out[..., 1] = h - src[..., 3]
        out[..., 3] = h - src[..., 1]
    return out


def clip_boxes(boxes, img_shape):
    """Clip (..., 4) ``xyxy`` boxes to the image ``[0, w] x [0, h]``, ``img_shape = (h, w)``.

    A box entirely outside the image becomes degenerate (zero width or height), it is not
    removed.
    """
    h, w = img_shape[:2]
    boxes = _as_boxes(boxes)
    upper = _xyxy_vector(boxes, w, h)
    if isinstance(boxes, torch.Tensor):
        return torch.minimum(boxes.clamp(min=0), upper)
    return np.minimum(np.maximum(boxes, 0), upper)


def translate_boxes(boxes, offset):
    """Shift (..., 4) ``xyxy`` boxes by ``offset = (dx, dy)``: ``x + dx``, ``y + dy``."""
    dx, dy = _pair(offset, 'offset')
    boxes = _as_boxes(boxes)
    return boxes + _xyxy_vector(boxes, dx, dy)


def box_areas(boxes):
    """(...,) areas ``(x2 - x1) * (y2 - y1)`` of (..., 4) ``xyxy`` boxes (no ``+ 1``; an
    inverted box gives a negative number, a degenerate one 0)."""
    boxes = _as_boxes(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1, boxes2):
    """(N, M) IoU matrix of (N, 4) and (M, 4) ``xyxy`` boxes, areas as :func:`box_areas`.

    A pair whose union is empty (two degenerate boxes) has IoU 0 (``torchvision.ops.box_iou``
    gives NaN there). Both inputs must be of the same kind (numpy or torch).
    """
    boxes1, boxes2 = _as_boxes(boxes1).reshape(-1, 4), _as_boxes(boxes2).reshape(-1, 4)
    area1, area2 = box_areas(boxes1), box_areas(boxes2)
    if isinstance(boxes1, torch.Tensor):
        top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
        bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
        wh = (bottom_right - top_left).clamp(min=0)
    else:
        top_left = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
        bottom_right = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
        wh = np.clip(bottom_right - top_left, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    safe_union = union.clamp(min=1e-12) if isinstance(union, torch.Tensor) else \
        np.where(union > 0, union, 1.0)
    return (inter / safe_union) * (union > 0)


def paired_box_iou(boxes1, boxes2):
    """(N,) IoU of the pairs ``(boxes1[i], boxes2[i])`` of two (N, 4) ``xyxy`` arrays: the
    diagonal of :func:`box_iou` without its N x N matrix. An empty union gives 0."""
    boxes1, boxes2 = _as_boxes(boxes1), _as_boxes(boxes2)
    if isinstance(boxes1, torch.Tensor):
        wh = (torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
              - torch.maximum(boxes1[..., :2], boxes2[..., :2])).clamp(min=0)
    else:
        wh = np.clip(np.minimum(boxes1[..., 2:], boxes2[..., 2:])
                     - np.maximum(boxes1[..., :2], boxes2[..., :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_areas(boxes1) + box_areas(boxes2) - inter
    safe_union = union.clamp(min=1e-12) if isinstance(union, torch.Tensor) else \
        np.where(union > 0, union, 1.0)
    return (inter / safe_union) * (union > 0)


def boxes_to_original(boxes, meta: Mapping):
    """Map (..., 4) ``xyxy`` boxes from the pipeline's output frame back to the original image.

    Undoes what the pipeline did, in reverse order: the flip (inside ``img_shape``), then the
    resize (divide by ``scale_factor``), then clips to ``ori_shape``.

    Args:
        boxes: (..., 4) boxes in the frame of the network input (before batch padding, which
            is at the bottom/right and moves nothing).
        meta: a sample's metainfo (or the data sample itself): ``ori_shape`` (h, w) required;
            ``flip`` (default False), ``flip_direction``, ``img_shape`` (h, w) (required when
            flipped), ``scale_factor`` (w_scale, h_scale) (default (1, 1)).
    """
    meta = meta.metainfo if hasattr(meta, 'metainfo') else meta
    if 'ori_shape' not in meta:
        raise KeyError('boxes_to_original needs ori_shape (h, w) in the metainfo')
    boxes = _as_boxes(boxes)
    if meta.get('flip', False):
        if 'img_shape' not in meta:
            raise KeyError('boxes_to_original: a flipped sample needs img_shape (h, w) in the '
                           'metainfo')
        boxes = flip_boxes(boxes, meta['img_shape'], meta.get('flip_direction') or 'horizontal')
    scale_factor = meta.get('scale_factor')
    if scale_factor is not None:
        boxes = rescale_boxes(boxes, scale_factor)
    return clip_boxes(boxes, meta['ori_shape'])
