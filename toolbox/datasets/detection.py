"""Detection datasets: COCO json and Pascal VOC xml, converted to one internal format.

Every image becomes a ``data_info`` dict::

    dict(img_id, img_path, height, width, ann_path, ann_where,
         instances=[dict(bbox=[x1, y1, x2, y2], bbox_label=int, ignore_flag=0 | 1,
                         where='annotations[k]' | 'object[k]', [mask=...]), ...])

with ``bbox`` in ``xyxy`` absolute pixels, 0-based (COCO ``xywh`` and VOC 1-based boxes are
converted here, at the boundary), ``bbox_label`` a contiguous 0-based class index and
``ignore_flag`` set for COCO ``iscrowd`` and VOC ``difficult`` boxes (kept, evaluated as ignored).
COCO instances keep their ``segmentation`` as ``mask``, raw (a list of polygons
``[[x1, y1, x2, y2, ...], ...]`` in pixels of the original image, or an RLE dict
``dict(size=[h, w], counts=list | str)``); an annotation without one (or with an empty list)
has no ``mask`` key. ``LoadAnnotations(with_mask=True)`` decodes them. VOC has no masks.

Degenerate boxes (zero or negative width or height) are skipped with a counted warning that
names the file. Malformed annotation files raise :class:`AnnotationError` naming the file and
the field. ``ann_path`` / ``ann_where`` / ``where`` locate each image and box in its annotation
file for the data check (:mod:`toolbox.datasets.checks`), which then compares declared and
real image sizes, boxes and labels before training.
"""
from __future__ import annotations

import json
import logging
import os.path as osp
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from toolbox.registry import DATASETS
from toolbox.structures import voc_to_xyxy, xywh_to_xyxy

from .checks import apply_data_check, resolve_data_check
from .class_counts import check_repeats


class AnnotationError(ValueError):
    """An annotation file is malformed; the message names the file and the field."""


class DetectionDataset(BaseDataset):
    """Shared behaviour of detection datasets: filtering and class statistics.

    Args (besides mmengine ``BaseDataset``'s):
        filter_cfg: ``dict(filter_empty_gt=True, min_size=0)``. In training, images without a
            single non-ignored object are dropped (the count is logged); ``min_size`` drops
            images whose shorter side is smaller.
        data_check: the pre-flight check of images and annotations
            (:mod:`toolbox.datasets.checks`): ``True`` (default), ``False``, or options
            ``dict(decode=True, max_image_pixels=40e6, on_error='raise' | 'skip',
            box_tolerance=1.0, cache=True)``.
    """

    METAINFO: dict = dict(classes=())

    def __init__(self, *args, data_check: bool | dict = True, **kwargs):
        self.data_check = resolve_data_check(data_check)
        super().__init__(*args, **kwargs)

    def filter_data(self) -> list[dict]:
        data_list = apply_data_check(self, self.data_list, len(self.metainfo['classes']))
        if self.test_mode or not self.filter_cfg:
            return data_list
        filter_empty = self.filter_cfg.get('filter_empty_gt', False)
        min_size = self.filter_cfg.get('min_size', 0)
        kept = [info for info in data_list
                if min(info['width'], info['height']) >= min_size and not (
                    filter_empty and not any(not i['ignore_flag'] for i in info['instances']))]
        dropped = len(data_list) - len(kept)
        if dropped:
            print_log(f'{type(self).__name__}: {dropped} of {len(data_list)} images dropped '
                      f'by filter_cfg={dict(self.filter_cfg)} (no objects or too small)',
                      logger='current')
        return kept

    def get_cat_ids(self, idx: int) -> list[int]:
        """Contiguous labels present in image ``idx`` (used by class-aware samplers)."""
        return sorted({i['bbox_label'] for i in self.get_data_info(idx)['instances']})

    def class_counts(self, repeats=None) -> dict[str, np.ndarray]:
        """Per-class statistics over the (filtered) dataset, counting non-ignored boxes; used by
        class-frequency-aware losses (balanced softmax, EQL).

        Args:
            repeats: (N,) how many times each image is drawn (a ``ClassBalancedDataset``'s
                oversampling, see :func:`toolbox.datasets.dataset_class_counts`); ``None``:
                once each, and the result is cached after the first call.

        Returns:
            ``dict(instance_counts=(C,) int64, image_counts=(C,) int64, num_images=int)``:
            boxes of each class, images containing it, images; each image weighted by its
            repeat count.
        """
        if repeats is not None:
            return self._count_classes(check_repeats(repeats, len(self), type(self).__name__))
        if getattr(self, '_class_counts', None) is None:
            self._class_counts = self._count_classes(np.ones(len(self), np.int64))
        return self._class_counts

    def _count_classes(self, repeats: np.ndarray) -> dict[str, np.ndarray]:
        num_classes = len(self.metainfo['classes'])
        labels_of = [[i['bbox_label'] for i in self.get_data_info(idx)['instances']
                      if not i['ignore_flag']] for idx in range(len(self))]
        labels = np.array([lab for labs in labels_of for lab in labs], dtype=np.int64)
        image_idx = np.repeat(np.arange(len(self)), [len(labs) for labs in labels_of])
        instance_counts = np.bincount(labels, weights=repeats[image_idx], minlength=num_classes)
        present = np.unique(image_idx * num_classes + labels)  # distinct (image, class) pairs
        image_counts = np.bincount(present % num_classes, weights=repeats[present // num_classes],
                                   minlength=num_classes)
        return dict(instance_counts=instance_counts.astype(np.int64),
                    image_counts=image_counts.astype(np.int64), num_images=int(repeats.sum()))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        bool(np.isfinite(value))


def _require(mapping, field, where):
    if not isinstance(mapping, dict) or field not in mapping:
        raise AnnotationError(f'{where}: missing field {field!r}')
    return mapping[field]


def _segmentation(ann: dict, where: str):
    """The annotation's raw ``segmentation`` (polygon list or RLE dict), ``None`` when it has
    none (missing, ``None`` or an empty list); any other structure is an
    :class:`AnnotationError`. Only the structure is checked here (the coordinates are read
    when ``LoadAnnotations(with_mask=True)`` decodes the mask), so that loading a large COCO
    json for box training stays fast.
    """
    segmentation = ann.get('segmentation')
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return None
    if isinstance(segmentation, list):
        if not all(isinstance(poly, list) for poly in segmentation):
            raise AnnotationError(f'{where}: field segmentation must be a list of polygons '
                                  f'[[x1, y1, x2, y2, ...], ...]')
        return segmentation
    if isinstance(segmentation, dict) and 'counts' in segmentation and 'size' in segmentation \
            and isinstance(segmentation['counts'], (list, str)):
        return segmentation
    raise AnnotationError(f'{where}: field segmentation must be a list of polygons or an RLE '
                          f'dict with size and counts (a list or a string), got '
                          f'{type(segmentation).__name__}')


@DATASETS.register_module()
class CocoDataset(DetectionDataset):
    """COCO-format detection dataset (``instances_*.json`` or ``image_info_test-dev*.json``).

    Category ids are sorted ascending and mapped to contiguous labels; ``metainfo['cat_ids']``
    keeps the real ids so that results can be written back for the COCO server. Passing
    ``metainfo=dict(classes=(...))`` keeps only those categories, in that order.
    A json without ``annotations`` (test-dev image info) is accepted: every image has no
    instances. Each kept annotation's ``segmentation`` is kept raw as the instance's ``mask``
    (module docstring).
    """

    def load_data_list(self) -> list[dict]:
        ann_file = self.ann_file
        try:
            with open(ann_file, encoding='utf-8') as f:
                coco = json.load(f)
        except json.JSONDecodeError as exc:
            raise AnnotationError(f'{ann_file}: not valid json ({exc})') from exc
        categories = _require(coco, 'categories', ann_file)
        if not isinstance(categories, list):
            raise AnnotationError(f'{ann_file}: field categories must be a list')
        for k, cat in enumerate(categories):
            cat_id = _require(cat, 'id', f'{ann_file}: categories[{k}]')
            if not isinstance(cat_id, int) or isinstance(cat_id, bool):
                raise AnnotationError(f'{ann_file}: categories[{k}]: field id must be an '
                                      f'integer, got {cat_id!r}')
            if not isinstance(_require(cat, 'name', f'{ann_file}: categories[{k}]'), str):
                raise AnnotationError(f'{ann_file}: categories[{k}]: field name must be a '
                                      f'string')
        wanted = self._metainfo.get('classes') or ()
        if wanted:
            by_name = {c['name']: c['id'] for c in categories}
            missing = [n for n in wanted if n not in by_name]
            if missing:
                raise AnnotationError(f'{ann_file}: categories has no entry named {missing}')
            cat_ids = [by_name[n] for n in wanted]
        else:
            cats = sorted(categories, key=lambda c: c['id'])
            cat_ids = [c['id'] for c in cats]
            self._metainfo['classes'] = tuple(c['name'] for c in cats)
        self._metainfo['cat_ids'] = cat_ids
        cat_to_label = {cat_id: label for label, cat_id in enumerate(cat_ids)}

        images = _require(coco, 'images', ann_file)
        if not isinstance(images, list):
            raise AnnotationError(f'{ann_file}: field images must be a list')
        instances_of = {}
        for k, img in enumerate(images):
            where = f'{ann_file}: images[{k}]'
            image_id = _require(img, 'id', where)
            if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
                raise AnnotationError(f'{where}: field id must be an integer or a string, got '
                                      f'{image_id!r}')
            if image_id in instances_of:
                raise AnnotationError(f'{where}: id {image_id!r} is used by an earlier image')
            instances_of[image_id] = []
            if not isinstance(_require(img, 'file_name', where), str):
                raise AnnotationError(f'{where}: field file_name must be a string')
            for field in ('width', 'height'):
                value = _require(img, field, where)
                if not _is_number(value) or value <= 0 or value != int(value):
                    raise AnnotationError(f'{where}: field {field} must be a positive integer, '
                                          f'got {value!r}')

        skipped = Counter()
        kept = []  # (image_id, [x, y, w, h], label, ignore_flag) of the boxes kept
        annotations = coco.get('annotations', [])
        if not isinstance(annotations, list):
            raise AnnotationError(f'{ann_file}: field annotations must be a list')
        for k, ann in enumerate(annotations):
            where = f'{ann_file}: annotations[{k}]'
            image_id = _require(ann, 'image_id', where)
            bbox = _require(ann, 'bbox', where)
            if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and
                    all(_is_number(v) for v in bbox)):
                raise AnnotationError(f'{where}: field bbox must be 4 finite numbers '
                                      f'[x, y, width, height], got {bbox!r}')
            x, y, w, h = bbox
            cat_id = _require(ann, 'category_id', where)
            if not isinstance(cat_id, (int, str)) or isinstance(cat_id, bool):
                raise AnnotationError(f'{where}: field category_id must be an integer, got '
                                      f'{cat_id!r}')
            if not isinstance(image_id, (int, str)) or image_id not in instances_of:
                raise AnnotationError(f'{where}: image_id {image_id!r} is not in images')
            if cat_id not in cat_to_label:
                skipped['category not in classes'] += 1
                continue
            if w <= 0 or h <= 0:
                skipped['degenerate box (w or h <= 0)'] += 1
                continue
            kept.append((image_id, (x, y, w, h), cat_to_label[cat_id],
                         int(bool(ann.get('iscrowd', 0))), k, _segmentation(ann, where)))
        # float64: x + w exactly as Python computes it; LoadAnnotations makes float32 later
        boxes = xywh_to_xyxy(np.array([kept_box[1] for kept_box in kept],
                                      dtype=np.float64).reshape(-1, 4)).tolist()
        for (image_id, _, label, ignore_flag, k, segmentation), bbox in zip(kept, boxes):
            instance = dict(bbox=bbox, bbox_label=label, ignore_flag=ignore_flag,
                            where=f'annotations[{k}]')
            if segmentation is not None:
                instance['mask'] = segmentation
            instances_of[image_id].append(instance)
        self.skip_counts = dict(skipped)
        for reason, count in skipped.items():
            print_log(f'{ann_file}: skipped {count} annotations: {reason}', logger='current',
                      level=logging.WARNING)
        img_prefix = self.data_prefix.get('img', '')
        return [dict(img_id=img['id'], img_path=osp.join(img_prefix, img['file_name']),
                     height=int(img['height']), width=int(img['width']), ann_path=ann_file,
                     ann_where=f'images[{k}].', instances=instances_of[img['id']])
                for k, img in enumerate(images)]


VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor')


@DATASETS.register_module()
class VOCDataset(DetectionDataset):
    """Pascal VOC layout: ``ann_file`` lists image ids (``ImageSets/Main/<split>.txt``),
    ``data_prefix=dict(img='JPEGImages', ann='Annotations')``.

    Boxes are 1-based inclusive in the xml and become 0-based ``xyxy`` (``x1 - 1``, ``y1 - 1``,
    ``x2``, ``y2``), so that the box ``[1, W]`` covers ``[0, W]``. ``difficult`` objects are kept
    with ``ignore_flag=1``. Objects of classes not in ``metainfo['classes']`` are skipped and
    counted. Image ids are their own ``img_id``.
    """

    METAINFO = dict(classes=VOC_CLASSES)

    def load_data_list(self) -> list[dict]:
        classes = self._metainfo['classes']
        label_of = {name: k for k, name in enumerate(classes)}
        with open(self.ann_file, encoding='utf-8') as f:
            img_ids = [line.strip().split()[0] for line in f if line.strip()]
        img_prefix = self.data_prefix.get('img', 'JPEGImages')
        ann_prefix = self.data_prefix.get('ann', 'Annotations')
        skipped = Counter()
        data_list = []
        for img_id in img_ids:
            xml_path = osp.join(ann_prefix, f'{img_id}.xml')
            info, img_skipped = self._parse_xml(xml_path, label_of)
            skipped.update(img_skipped)
            data_list.append(dict(img_id=img_id, img_path=osp.join(img_prefix, f'{img_id}.jpg'),
                                  ann_path=xml_path, ann_where='size.', **info))
        self.skip_counts = dict(skipped)
        for reason, count in skipped.items():
            print_log(f'{self.ann_file}: skipped {count} objects: {reason}', logger='current',
                      level=logging.WARNING)
        return data_list

    @staticmethod
    def _parse_xml(xml_path: str, label_of: dict) -> tuple[dict, Counter]:
        try:
            root = ET.parse(xml_path).getroot()
        except (ET.ParseError, FileNotFoundError) as exc:
            raise AnnotationError(f'{xml_path}: cannot parse annotation ({exc})') from exc
        size = root.find('size')
        if size is None or size.find('width') is None or size.find('height') is None:
            raise AnnotationError(f'{xml_path}: missing field size/width or size/height')
        try:
            width, height = (int(float(size.findtext(t))) for t in ('width', 'height'))
        except (TypeError, ValueError) as exc:
            raise AnnotationError(f'{xml_path}: field size/width or size/height is not a '
                                  f'number') from exc
        skipped = Counter()
        kept = []  # (VOC [xmin, ymin, xmax, ymax], label, ignore_flag) of the objects kept
        for k, obj in enumerate(root.findall('object')):
            name = obj.findtext('name', default='').strip()
            if name not in label_of:
                skipped[f'class {name!r} not in classes'] += 1
                continue
            bndbox = obj.find('bndbox')
            try:
                coords = [float(bndbox.findtext(t)) for t in ('xmin', 'ymin', 'xmax', 'ymax')]
            except (AttributeError, TypeError, ValueError) as exc:
                raise AnnotationError(f'{xml_path}: object[{k}] field bndbox is missing or not '
                                      f'numeric') from exc
            if not np.isfinite(coords).all():
                raise AnnotationError(f'{xml_path}: object[{k}] field bndbox has a non-finite '
                                      f'value {coords}')
            # judged on the raw VOC values: xmin == xmax is a point, not a one-pixel box
            if coords[2] <= coords[0] or coords[3] <= coords[1]:
                skipped['degenerate box (xmax <= xmin or ymax <= ymin)'] += 1
                print_log(f'{xml_path}: object[{k}] ({name}) has a degenerate box {coords}, '
                          f'skipped', logger='current', level=logging.WARNING)
                continue
            difficult = obj.findtext('difficult', default='0').strip()
            kept.append((coords, label_of[name], int(difficult == '1'), k))
        boxes = voc_to_xyxy(np.array([c[0] for c in kept], np.float64).reshape(-1, 4))
        instances = [dict(bbox=bbox, bbox_label=label, ignore_flag=ignore_flag,
                          where=f'object[{k}]')
                     for bbox, (_, label, ignore_flag, k) in zip(boxes.tolist(), kept)]
        return dict(width=width, height=height, instances=instances), skipped
