"""Box conversions and the dataset-boundary converters.

Inside the toolbox boxes are ``xyxy``, absolute pixels, 0-based, float32 (see DESIGN.md).
COCO ``xywh`` and VOC 1-based boxes are converted here, at the dataset boundary only.
"""
import numpy as np
import torch


def xywh_to_xyxy(boxes):
    """(N, 4) COCO ``[x, y, w, h]`` -> ``[x1, y1, x2, y2]`` (numpy or torch)."""
    out = boxes.clone() if isinstance(boxes, torch.Tensor) else np.array(boxes, dtype=np.float32)
    out[..., 2] = boxes[..., 0] + boxes[..., 2]
    out[..., 3] = boxes[..., 1] + boxes[..., 3]
    return out


def xyxy_to_xywh(boxes):
    """(N, 4) ``[x1, y1, x2, y2]`` -> COCO ``[x, y, w, h]`` (numpy or torch)."""
    out = boxes.clone() if isinstance(boxes, torch.Tensor) else np.array(boxes, dtype=np.float32)
    out[..., 2] = boxes[..., 2] - boxes[..., 0]
    out[..., 3] = boxes[..., 3] - boxes[..., 1]
    return out


def voc_to_xyxy(boxes):
    """(N, 4) VOC 1-based inclusive pixel boxes -> 0-based ``xyxy`` (subtract 1 from x1, y1).

    VOC's ``xmin=1, xmax=W`` spans the whole image, which is ``[0, W]`` in our convention.
    """
    out = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    out[:, :2] -= 1
    return out


def scale_boxes(boxes: torch.Tensor, scale_factor) -> torch.Tensor:
    """Multiply ``xyxy`` boxes by ``(w_scale, h_scale)``."""
    w_scale, h_scale = scale_factor
    return boxes * boxes.new_tensor([w_scale, h_scale, w_scale, h_scale])


def flip_boxes(boxes: torch.Tensor, img_shape, direction: str = 'horizontal') -> torch.Tensor:
    """Flip ``xyxy`` boxes inside an image of ``img_shape = (h, w)``."""
    flipped = boxes.clone()
    h, w = img_shape[:2]
    if direction == 'horizontal':
        flipped[..., 0] = w - boxes[..., 2]
        flipped[..., 2] = w - boxes[..., 0]
    elif direction == 'vertical':
        flipped[..., 1] = h - boxes[..., 3]
        flipped[..., 3] = h - boxes[..., 1]
    else:
        raise ValueError(f"flip direction must be 'horizontal' or 'vertical', got {direction!r}")
    return flipped
