"""Loading transforms: image file -> ``results['img']``, annotations -> arrays.

After :class:`LoadAnnotations` a results dict holds ``gt_bboxes`` float32 (N, 4) ``xyxy``
absolute pixels, ``gt_bboxes_labels`` int64 (N,), ``gt_ignore_flags`` bool (N,); with
``with_mask=True``, ``gt_masks`` uint8 (N, H, W) instance masks (0 / 1, one per box, same
order, in the frame of the image as loaded: H, W are the data info's ``height`` / ``width``);
with ``with_seg=True``, ``gt_seg_map`` (H, W) integer class map.

The geometric transforms move ``gt_masks`` with the image (nearest-neighbour resizing, flips,
crops, zero padding); :class:`~toolbox.datasets.transforms.PackInputs` packs them as
``gt_instances.masks``.
"""
import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from pycocotools import mask as mask_utils

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


def decode_mask(segmentation, height: int, width: int) -> np.ndarray:
    """One COCO ``segmentation`` as a uint8 (height, width) 0 / 1 mask.

    Polygons (``[[x1, y1, x2, y2, ...], ...]``, pixels) are rasterised by pycocotools and
    merged; a polygon with fewer than 3 points is left out (pycocotools would read 4 numbers
    as a box). Coordinates must be finite numbers within one image size of the image
    (``-width <= x <= 2 * width``, the same for y), else ``ValueError``: pycocotools would
    allocate memory in proportion to the edge lengths. Uncompressed RLE (``counts`` a list) is
    compressed first; compressed RLE (``counts`` a string) is decoded as it is. An RLE whose
    ``size`` is not ``[height, width]`` raises ``ValueError``.
    """
    if isinstance(segmentation, dict):
        size = [int(v) for v in segmentation['size']]
        if size != [height, width]:
            raise ValueError(f'RLE size {size} is not the image size [{height}, {width}]')
        rle = mask_utils.frPyObjects(segmentation, height, width) \
            if isinstance(segmentation['counts'], list) else segmentation
    else:
        polygons = [np.asarray(poly, np.float64) for poly in segmentation]
        polygons = [poly for poly in polygons if poly.ndim == 1 and len(poly) >= 6 and
                    len(poly) % 2 == 0]
        if not polygons:
            return np.zeros((height, width), np.uint8)
        points = np.concatenate(polygons).reshape(-1, 2)
        size = np.array([width, height], np.float64)
        if not (np.isfinite(points).all() and (points >= -size).all() and
                (points <= 2 * size).all()):
            raise ValueError(f'polygon coordinates must be finite and within one image size '
                             f'of the {width}x{height} image')
        rle = mask_utils.merge(mask_utils.frPyObjects([poly.tolist() for poly in polygons],
                                                      height, width))
    return mask_utils.decode(rle)


@TRANSFORMS.register_module()
class LoadAnnotations(BaseTransform):
    """Turn ``results['instances']`` (see ``toolbox.datasets.detection``) into arrays.

    Args:
        with_bbox: build ``gt_bboxes``, ``gt_bboxes_labels``, ``gt_ignore_flags``.
        with_seg: read ``results['seg_map_path']`` into ``gt_seg_map`` (H, W) unchanged.
        reduce_zero_label: for segmentation maps whose 0 means "ignore" (ADE20K): 0 ->
            ``IGNORE_INDEX`` (255), k -> k - 1, and ``IGNORE_INDEX`` stays ignored.
        with_mask: decode every instance's ``mask`` (the COCO ``segmentation`` kept by
            :class:`~toolbox.datasets.CocoDataset`) with :func:`decode_mask` into
            ``gt_masks`` uint8 (N, H, W), in the order of ``gt_bboxes``. H, W are the data
            info's ``height`` / ``width`` (else ``ori_shape`` of ``LoadImageFromFile``); an
            image read at another size raises ``ValueError``, as does an instance without a
            mask (VOC, or a COCO annotation without ``segmentation``).
    """

    def __init__(self, with_bbox: bool = True, with_seg: bool = False,
                 reduce_zero_label: bool = False, with_mask: bool = False):
        self.with_bbox = with_bbox
        self.with_mask = with_mask
        self.with_seg = with_seg
        self.reduce_zero_label = reduce_zero_label

    @staticmethod
    def _load_masks(results: dict) -> np.ndarray:
        path = results.get('img_path')
        if 'height' in results and 'width' in results:
            height, width = int(results['height']), int(results['width'])
            loaded = results.get('ori_shape')
            if loaded is not None and tuple(loaded[:2]) != (height, width):
                raise ValueError(f'LoadAnnotations(with_mask=True): {path}: the image was read '
                                 f'as {tuple(loaded[:2])} (h, w) but its annotation says '
                                 f'({height}, {width}); the masks would not fit it')
        elif 'ori_shape' in results or 'img_shape' in results:
            height, width = results.get('ori_shape', results.get('img_shape'))[:2]
        else:
            raise ValueError(f'LoadAnnotations(with_mask=True): {path}: no image size (height '
                             f'/ width in the data info, or LoadImageFromFile before it)')
        masks = np.zeros((len(results.get('instances', [])), height, width), np.uint8)
        for k, instance in enumerate(results.get('instances', [])):
            if instance.get('mask') is None:
                raise ValueError(f'LoadAnnotations(with_mask=True): {path}: instance {k} '
                                 f'({instance.get("where", "no source given")}) has no mask; '
                                 f'with_mask=True needs COCO segmentation (polygons or RLE) '
                                 f'for every instance')
            try:
                masks[k] = decode_mask(instance['mask'], height, width)
            except (ValueError, TypeError, KeyError) as exc:
                raise ValueError(f'LoadAnnotations(with_mask=True): {path}: instance {k} '
                                 f'({instance.get("where", "no source given")}): cannot '
                                 f'decode its mask ({exc})') from exc
        return masks

    def transform(self, results: dict) -> dict:
        if self.with_bbox:
            instances = results.get('instances', [])
            results['gt_bboxes'] = np.array([i['bbox'] for i in instances],
                                            dtype=np.float32).reshape(-1, 4)
            results['gt_bboxes_labels'] = np.array([i['bbox_label'] for i in instances],
                                                   dtype=np.int64)
            results['gt_ignore_flags'] = np.array([bool(i['ignore_flag']) for i in instances],
                                                  dtype=bool)
        if self.with_mask:
            results['gt_masks'] = self._load_masks(results)
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
