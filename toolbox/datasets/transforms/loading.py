"""Loading transforms: image file -> ``results['img']``, annotations -> arrays.

After :class:`LoadAnnotations` a results dict holds ``gt_bboxes`` float32 (N, 4) ``xyxy``
absolute pixels, ``gt_bboxes_labels`` int64 (N,), ``gt_ignore_flags`` bool (N,) and, with
``with_seg=True``, ``gt_seg_map`` (H, W) integer class map.
"""
import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from toolbox.registry import TRANSFORMS
from toolbox.structures import IGNORE_INDEX


@TRANSFORMS.register_module()
class LoadImageFromFile(BaseTransform):
    """Read ``results['img_path']`` as a BGR uint8 (H, W, 3) array (float32 if ``to_float32``).

    Sets ``img``, ``img_shape`` and ``ori_shape`` as ``(h, w)``. An unreadable file raises
    ``OSError`` naming the file.
    """

    def __init__(self, to_float32: bool = False, color_type: str = 'color'):
        self.to_float32 = to_float32
        flags = {'color': cv2.IMREAD_COLOR, 'grayscale': cv2.IMREAD_GRAYSCALE,
                 'unchanged': cv2.IMREAD_UNCHANGED}
        if color_type not in flags:
            raise ValueError(f'color_type must be one of {sorted(flags)}, got {color_type!r}')
        self.flag = flags[color_type]

    def transform(self, results: dict) -> dict:
        path = results['img_path']
        img = cv2.imread(path, self.flag)
        if img is None:
            raise OSError(f'cannot read image file {path!r} (missing, empty or not an image)')
        if img.ndim == 2:
            img = img[..., None]
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results


@TRANSFORMS.register_module()
class LoadAnnotations(BaseTransform):
    """Turn ``results['instances']`` (see ``toolbox.datasets.detection``) into arrays.

    Args:
        with_bbox: build ``gt_bboxes``, ``gt_bboxes_labels``, ``gt_ignore_flags``.
        with_seg: read ``results['seg_map_path']`` into ``gt_seg_map`` (H, W) unchanged.
        reduce_zero_label: for segmentation maps whose 0 means "ignore" (ADE20K): 0 ->
            ``IGNORE_INDEX`` (255), k -> k - 1, and ``IGNORE_INDEX`` stays ignored.
    """

    def __init__(self, with_bbox: bool = True, with_seg: bool = False,
                 reduce_zero_label: bool = False):
        self.with_bbox = with_bbox
        self.with_seg = with_seg
        self.reduce_zero_label = reduce_zero_label

    def transform(self, results: dict) -> dict:
        if self.with_bbox:
            instances = results.get('instances', [])
            results['gt_bboxes'] = np.array([i['bbox'] for i in instances],
                                            dtype=np.float32).reshape(-1, 4)
            results['gt_bboxes_labels'] = np.array([i['bbox_label'] for i in instances],
                                                   dtype=np.int64)
            results['gt_ignore_flags'] = np.array([bool(i['ignore_flag']) for i in instances],
                                                  dtype=bool)
        if self.with_seg:
            path = results['seg_map_path']
            seg = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if seg is None:
                raise OSError(f'cannot read segmentation map {path!r}')
            if seg.ndim == 3:
                raise ValueError(f'segmentation map {path!r} has {seg.shape[2]} channels; '
                                 f'expected a single-channel class-index image')
            seg = seg.astype(np.int64)
            if self.reduce_zero_label:
                seg = np.where((seg == 0) | (seg == IGNORE_INDEX), IGNORE_INDEX, seg - 1)
            results['gt_seg_map'] = seg
        return results
