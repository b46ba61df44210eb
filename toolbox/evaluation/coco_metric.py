"""COCO detection metric (box AP/AR and class-agnostic proposal recall) and submission files.

Two interchangeable backends compute the same numbers: ``faster_coco_eval`` (default, C++
matching and accumulation) and ``pycocotools`` (the reference). Both only *evaluate*; the summary
numbers are read here from the accumulated ``precision`` / ``recall`` arrays with the rule of
``COCOeval.summarize`` (mean over entries > -1, -1 when there is none), so the keys do not depend
on a backend's summary layout.

Predictions reach the metric as ``xyxy`` boxes in the original image frame and 0-based labels;
they are written as COCO results: ``bbox = [x, y, w, h]`` (computed in float64 from the stored
float32 corners), ``category_id = dataset_meta['cat_ids'][label]`` (the real, possibly
non-contiguous COCO ids, as a test-dev submission needs), ``image_id`` from the sample's
``img_id``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections import namedtuple
from functools import partial
from numbers import Integral
from pathlib import Path
from typing import Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from toolbox.registry import METRICS
from toolbox.structures import box_areas, xyxy_to_xywh
from .voc_metric import as_numpy, format_table, instances_dict

BACKENDS = ('faster_coco_eval', 'pycocotools')
METRIC_TYPES = ('bbox', 'proposal')
# Keys of the 12 standard COCO box statistics, in COCOeval.stats order, as
# (name, is_ap, iou_thr, area, index into maxDets).
BBOX_STATS = (
    ('bbox_mAP', True, None, 'all', -1),
    ('bbox_mAP_50', True, 0.5, 'all', -1),
    ('bbox_mAP_75', True, 0.75, 'all', -1),
    ('bbox_mAP_s', True, None, 'small', -1),
    ('bbox_mAP_m', True, None, 'medium', -1),
    ('bbox_mAP_l', True, None, 'large', -1),
    ('bbox_AR_1', False, None, 'all', 0),
    ('bbox_AR_10', False, None, 'all', 1),
    ('bbox_AR_100', False, None, 'all', 2),
    ('bbox_AR_s', False, None, 'small', -1),
    ('bbox_AR_m', False, None, 'medium', -1),
    ('bbox_AR_l', False, None, 'large', -1),
)
BBOX_MAX_DETS = (1, 10, 100)

CocoBackend = namedtuple('CocoBackend', 'name coco evaluator')


def _silent(*args, **kwargs):
    return None


def coco_backend(name: str) -> CocoBackend:
    """The ``COCO`` class and a box ``COCOeval`` factory ``evaluator(gt, dt)`` of a backend."""
    if name == 'faster_coco_eval':
        from faster_coco_eval import COCO, COCOeval_faster
        return CocoBackend(name, COCO, partial(COCOeval_faster, iouType='bbox',
                                               print_function=_silent))
    if name == 'pycocotools':
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return CocoBackend(name, COCO, partial(COCOeval, iouType='bbox'))
    raise ValueError(f'backend must be one of {BACKENDS}, got {name!r}')


def build_coco(dataset: dict, backend: str):
    """A backend ``COCO`` object indexing ``dataset`` (a dict in COCO json layout)."""
    coco = coco_backend(backend).coco()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco.createIndex()
    return coco


def _require_fields(ann_file, section: str, items: list, fields: Sequence[str]):
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f'{ann_file}: {section}[{i}] must be an object, got '
                             f'{type(item).__name__}')
        missing = [f for f in fields if f not in item]
        if missing:
            raise ValueError(f"{ann_file}: {section}[{i}] has no field '{missing[0]}' "
                             f"(required: {', '.join(fields)})")


def load_coco_annotations(ann_file: str | os.PathLike) -> dict:
    """Read and check a COCO detection annotation file; return its dict.

    Required: top-level ``images`` (``id``), ``categories`` (``id``, ``name``) and
    ``annotations`` (``id``, ``image_id``, ``category_id``, ``bbox = [x, y, w, h]``); annotation
    ids unique and positive (COCOeval uses id 0 to mean "unmatched"); every ``image_id`` and
    ``category_id`` declared. A missing ``area`` is filled with ``w * h`` and a missing
    ``iscrowd`` with 0, with a count in the log. Any other defect raises ``ValueError`` naming
    the file, the entry and the field.
    """
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f'COCO annotation file {ann_file} does not exist')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f'{ann_file} is not valid JSON: {e}') from e
    if not isinstance(data, dict):
        raise ValueError(f'{ann_file}: the top level must be an object with images, '
                         f'annotations and categories, got {type(data).__name__}')
    for key in ('images', 'annotations', 'categories'):
        if key not in data:
            raise ValueError(f"{ann_file}: missing top-level field '{key}'")
        if not isinstance(data[key], list):
            raise ValueError(f"{ann_file}: field '{key}' must be a list, got "
                             f"{type(data[key]).__name__}")
    _require_fields(ann_file, 'images', data['images'], ('id',))
    _require_fields(ann_file, 'categories', data['categories'], ('id', 'name'))
    anns = data['annotations']
    _require_fields(ann_file, 'annotations', anns, ('id', 'image_id', 'category_id', 'bbox'))

    for i, ann in enumerate(anns):
        bbox = ann['bbox']
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4):
            raise ValueError(f"{ann_file}: annotations[{i}] (id {ann['id']}) field 'bbox' must "
                             f"be [x, y, w, h], got {bbox!r}")
    ann_ids = [ann['id'] for ann in anns]
    if len(set(ann_ids)) != len(ann_ids) or any(a <= 0 for a in ann_ids):
        raise ValueError(f"{ann_file}: annotation field 'id' must be unique and positive")
    unknown_img = {a['image_id'] for a in anns} - {img['id'] for img in data['images']}
    if unknown_img:
        raise ValueError(f"{ann_file}: annotations refer to image_id(s) not in 'images': "
                         f'{sorted(unknown_img)[:5]}')
    unknown_cat = {a['category_id'] for a in anns} - {c['id'] for c in data['categories']}
    if unknown_cat:
        raise ValueError(f"{ann_file}: annotations refer to category_id(s) not in "
                         f"'categories': {sorted(unknown_cat)[:5]}")

    no_area = [a for a in anns if 'area' not in a]
    for ann in no_area:
        ann['area'] = float(ann['bbox'][2]) * float(ann['bbox'][3])
    no_crowd = [a for a in anns if 'iscrowd' not in a]
    for ann in no_crowd:
        ann['iscrowd'] = 0
    if no_area or no_crowd:
        print_log(f"{ann_file}: filled 'area' (w * h) for {len(no_area)} and 'iscrowd' (0) for "
                  f'{len(no_crowd)} of {len(anns)} annotations', logger='current')
    return data


def coco_summary(coco_eval, ap: bool, iou_thr: float | None = None, area: str = 'all',
                 max_dets_index: int = -1) -> float:
    """One summary number of an accumulated ``COCOeval`` (the rule of ``summarize``).

    Args:
        coco_eval: evaluated and accumulated ``COCOeval`` of either backend.
        ap: average precision (``eval['precision']``, T x R x K x A x M) if True, else average
            recall (``eval['recall']``, T x K x A x M).
        iou_thr: a single IoU threshold, or None for the mean over 0.50:0.95.
        area: area range label (``all``, ``small``, ``medium``, ``large``).
        max_dets_index: index into ``params.maxDets``.
    """
    p = coco_eval.params
    values = coco_eval.eval['precision' if ap else 'recall']
    if iou_thr is not None:
        values = values[np.flatnonzero(iou_thr == np.asarray(p.iouThrs))]
    values = values[..., list(p.areaRngLbl).index(area), max_dets_index]
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def _as_int_id(value):
    """An image id as int when it is one (or a string of digits), else None."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def dump_json_atomic(obj, path: str | os.PathLike) -> Path:
    """Write ``obj`` as json to a temporary file next to ``path`` and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(obj, f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@METRICS.register_module()
class CocoMetric(BaseMetric):
    """COCO box AP/AR, class-agnostic proposal recall, and result files for submission.

    Args:
        ann_file: COCO json with the ground truth. When None the ground truth is built in memory
            from the samples' ``gt_instances`` and ``ignored_instances`` (the latter as
            ``iscrowd = 1``: a detection overlapping them is ignored, COCO's rule), so datasets
            in other formats (e.g. VOC) can be evaluated with COCO metrics; boxes get
            ``area = w * h`` and image ids are the samples' integer ``img_id`` (or 1..N in
            sample order when those are not unique integers).
        metric: ``'bbox'`` and/or ``'proposal'``.

            * ``'bbox'``: ``maxDets = [1, 10, 100]``; keys ``bbox_mAP``, ``bbox_mAP_50``,
              ``bbox_mAP_75``, ``bbox_mAP_s/m/l``, ``bbox_AR_1``, ``bbox_AR_10``,
              ``bbox_AR_100``, ``bbox_AR_s/m/l`` (the 12 ``COCOeval.stats`` in order; AR by
              area at 100 detections).
            * ``'proposal'``: class-agnostic (``useCats = 0``), ``maxDets = proposal_nums``;
              keys ``AR@<n>`` for each n and ``AR_s@<max>``, ``AR_m@<max>``, ``AR_l@<max>``.
        proposal_nums: detection budgets per image for ``'proposal'``.
        backend: ``'faster_coco_eval'`` (default) or ``'pycocotools'``; same numbers.
        format_only: only write ``<outfile_prefix>.bbox.json`` (e.g. for test-dev) and return
            ``{}``; no ground truth is needed.
        outfile_prefix: where result files go; needed with ``format_only``, otherwise optional
            (the json is then written as well as evaluated).
        classwise: also log a per-class table (AP, AP50, AP75).
        collect_device: ``'cpu'`` or ``'gpu'``, for gathering results across ranks.
        prefix: prefix of the metric names, ``'coco'`` by default.

    Values are fractions in [0, 1] at full precision; -1 (COCO's convention) where no ground
    truth exists for the quantity. ``dataset_meta`` needs ``classes`` and should give
    ``cat_ids`` (label i -> ``cat_ids[i]``); without it, ids are looked up by class name in
    ``ann_file``, or are 1..K for in-memory ground truth.
    """

    default_prefix = 'coco'

    def __init__(self, ann_file: str | None = None, metric: str | Sequence[str] = 'bbox',
                 proposal_nums: Sequence[int] = (100, 300, 1000),
                 backend: str = 'faster_coco_eval', format_only: bool = False,
                 outfile_prefix: str | None = None, classwise: bool = False,
                 collect_device: str = 'cpu', prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        bad = [m for m in self.metrics if m not in METRIC_TYPES]
        if bad or not self.metrics:
            raise ValueError(f'metric must be one or more of {METRIC_TYPES}, got {metric!r}')
        self.proposal_nums = sorted(int(n) for n in proposal_nums)
        if not self.proposal_nums or self.proposal_nums[0] <= 0:
            raise ValueError(f'proposal_nums must be positive integers, got {proposal_nums!r}')
        coco_backend(backend)  # fail now on an unknown or missing backend
        self.backend = backend
        if format_only and outfile_prefix is None:
            raise ValueError('format_only=True needs outfile_prefix (where to write the json)')
        self.format_only = format_only
        self.outfile_prefix = outfile_prefix
        self.classwise = classwise
        self.ann_file = ann_file
        self._coco_gt = None
        if ann_file is not None and not format_only:
            self._coco_gt = build_coco(load_coco_annotations(ann_file), backend)

    # -- collecting ---------------------------------------------------------------------------

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        keep_gt = self._coco_gt is None and not self.format_only
        for sample in data_samples:
            pred = instances_dict(sample, 'pred_instances')
            result = dict(img_id=sample.get('img_id'), ori_shape=sample.get('ori_shape'),
                          bboxes=as_numpy(pred.get('bboxes'), (4,)),
                          scores=as_numpy(pred.get('scores')),
                          labels=as_numpy(pred.get('labels'), dtype=np.int64))
            if keep_gt:
                gt = instances_dict(sample, 'gt_instances')
                ignored = instances_dict(sample, 'ignored_instances')
                result.update(gt_bboxes=as_numpy(gt.get('bboxes'), (4,)),
                              gt_labels=as_numpy(gt.get('labels'), dtype=np.int64),
                              ignored_bboxes=as_numpy(ignored.get('bboxes'), (4,)),
                              ignored_labels=as_numpy(ignored.get('labels'), dtype=np.int64))
            self.results.append(result)

    # -- helpers ------------------------------------------------------------------------------

    def _classes(self) -> list:
        classes = (self.dataset_meta or {}).get('classes')
        if classes is None:
            raise ValueError("CocoMetric needs dataset_meta['classes'] (the Runner sets it from "
                             "the dataset's metainfo)")
        return list(classes)

    def _cat_ids(self) -> list[int]:
        classes = self._classes()
        cat_ids = (self.dataset_meta or {}).get('cat_ids')
        if cat_ids is None and self._coco_gt is not None:
            by_name = {c['name']: c['id'] for c in self._coco_gt.dataset['categories']}
            missing = [c for c in classes if c not in by_name]
            if missing:
                raise ValueError(f'{self.ann_file} has no category named {missing[0]!r}; give '
                                 f"dataset_meta['cat_ids'] explicitly")
            cat_ids = [by_name[c] for c in classes]
        elif cat_ids is None:
            cat_ids = list(range(1, len(classes) + 1))
        cat_ids = [int(c) for c in cat_ids]
        if len(cat_ids) != len(classes) or len(set(cat_ids)) != len(cat_ids):
            raise ValueError(f"dataset_meta['cat_ids'] must hold {len(classes)} distinct ids, one "
                             f'per class, got {cat_ids}')
        return cat_ids

    def _image_ids(self, results: list) -> list[int]:
        """COCO image id of each result (see the class docstring for in-memory ground truth)."""
        ids = [_as_int_id(r['img_id']) for r in results]
        usable = None not in ids and len(set(ids)) == len(ids)
        if usable:
            return ids
        if self.ann_file is not None or self.format_only:
            if None in ids:
                reason = f"img_id {results[ids.index(None)]['img_id']!r} is not an integer"
            else:
                reason = 'some img_ids repeat'
            raise ValueError(f'COCO results need unique integer image ids: {reason}')
        return list(range(1, len(results) + 1))

    def _detections(self, results: list, img_ids: list[int], cat_ids: list[int]) -> list[dict]:
        """COCO result dicts (``image_id``, ``bbox`` xywh, ``score``, ``category_id``)."""
        cat_lut = np.asarray(cat_ids, dtype=np.int64)
        dets = []
        for result, img_id in zip(results, img_ids):
            labels = result['labels']
            if labels.size and (labels.min() < 0 or labels.max() >= len(cat_lut)):
                raise ValueError(f'image {img_id}: predicted labels must be in '
                                 f'[0, {len(cat_lut)}), got max {labels.max()}')
            xywh = xyxy_to_xywh(result['bboxes'].astype(np.float64))
            dets.extend({'image_id': img_id, 'bbox': box, 'score': score, 'category_id': cat}
                        for box, score, cat in zip(xywh.tolist(),
                                                   result['scores'].astype(np.float64).tolist(),
                                                   cat_lut[labels].tolist()))
        return dets

    def _gt_from_results(self, results: list, img_ids: list[int], cat_ids: list[int]) -> dict:
        """COCO ground-truth dict from the samples' ``gt_instances`` / ``ignored_instances``."""
        classes = self._classes()
        cat_lut = np.asarray(cat_ids, dtype=np.int64)
        images, annotations = [], []
        for result, img_id in zip(results, img_ids):
            image = {'id': img_id}
            if result.get('ori_shape') is not None:
                image['height'], image['width'] = (int(v) for v in result['ori_shape'][:2])
            images.append(image)
            for crowd, key in ((0, 'gt'), (1, 'ignored')):
                boxes = result[f'{key}_bboxes'].astype(np.float64)
                labels = result[f'{key}_labels']
                if labels.size and (labels.min() < 0 or labels.max() >= len(cat_lut)):
                    raise ValueError(f'image {img_id}: {key} labels must be in '
                                     f'[0, {len(cat_lut)}), got max {labels.max()}')
                for box, area, cat in zip(xyxy_to_xywh(boxes).tolist(), box_areas(boxes).tolist(),
                                          cat_lut[labels].tolist()):
                    annotations.append({'id': len(annotations) + 1, 'image_id': img_id,
                                        'category_id': cat, 'bbox': box, 'area': area,
                                        'iscrowd': crowd, 'ignore': crowd})
        categories = [{'id': c, 'name': str(n)} for c, n in zip(cat_ids, classes)]
        return {'images': images, 'annotations': annotations, 'categories': categories}

    def _load_results(self, coco_gt, dets: list[dict]):
        if dets:
            with contextlib.redirect_stdout(io.StringIO()):
                return coco_gt.loadRes(dets)
        # pycocotools' loadRes cannot take an empty list: build the empty result set directly.
        return build_coco({'images': list(coco_gt.dataset['images']),
                           'categories': list(coco_gt.dataset['categories']),
                           'annotations': []}, self.backend)

    def _evaluate(self, coco_gt, coco_dt, img_ids, cat_ids, use_cats: bool, max_dets):
        coco_eval = coco_backend(self.backend).evaluator(coco_gt, coco_dt)
        coco_eval.params.imgIds = sorted(img_ids)
        coco_eval.params.catIds = sorted(cat_ids)
        coco_eval.params.useCats = int(use_cats)
        coco_eval.params.maxDets = list(max_dets)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval.evaluate()
            coco_eval.accumulate()
        return coco_eval

    def _log_classwise(self, coco_eval, coco_gt):
        precision = coco_eval.eval['precision']  # T x R x K x A x M
        iou_thrs = np.asarray(coco_eval.params.iouThrs)
        rows = []
        for k, cat_id in enumerate(coco_eval.params.catIds):
            name = coco_gt.cats[cat_id]['name']
            row = [name]
            for t in (slice(None), np.flatnonzero(iou_thrs == 0.5),
                      np.flatnonzero(iou_thrs == 0.75)):
                values = precision[t, :, k, 0, -1]
                valid = values[values > -1]
                row.append(float(valid.mean()) if valid.size else 'nan')
            rows.append(row)
        print_log('\nCOCO per-class bbox AP:\n' + format_table(('class', 'AP', 'AP50', 'AP75'),
                                                               rows), logger='current')

    # -- metrics ------------------------------------------------------------------------------

    def compute_metrics(self, results: list) -> dict:
        if not results:
            raise ValueError('CocoMetric received no samples to evaluate')
        cat_ids = self._cat_ids()
        img_ids = self._image_ids(results)
        dets = self._detections(results, img_ids, cat_ids)

        if self.outfile_prefix is not None:
            path = dump_json_atomic(dets, f'{self.outfile_prefix}.bbox.json')
            print_log(f'COCO results ({len(dets)} boxes, {len(img_ids)} images) written to '
                      f'{path}', logger='current')
        if self.format_only:
            return {}

        if self._coco_gt is not None:
            coco_gt = self._coco_gt
            unknown = set(img_ids) - set(coco_gt.getImgIds())
            if unknown:
                raise ValueError(f'image ids {sorted(unknown)[:5]} are not in {self.ann_file}')
        else:
            coco_gt = build_coco(self._gt_from_results(results, img_ids, cat_ids), self.backend)
        coco_dt = self._load_results(coco_gt, dets)

        metrics = {}
        if 'bbox' in self.metrics:
            coco_eval = self._evaluate(coco_gt, coco_dt, img_ids, cat_ids, True, BBOX_MAX_DETS)
            for name, is_ap, iou_thr, area, m in BBOX_STATS:
                metrics[name] = coco_summary(coco_eval, is_ap, iou_thr, area, m)
            if self.classwise:
                self._log_classwise(coco_eval, coco_gt)
        if 'proposal' in self.metrics:
            coco_eval = self._evaluate(coco_gt, coco_dt, img_ids, cat_ids, False,
                                       self.proposal_nums)
            for m, num in enumerate(self.proposal_nums):
                metrics[f'AR@{num}'] = coco_summary(coco_eval, False, None, 'all', m)
            for area in ('small', 'medium', 'large'):
                metrics[f'AR_{area[0]}@{self.proposal_nums[-1]}'] = coco_summary(
                    coco_eval, False, None, area, -1)
        print_log('COCO ' + ', '.join(f'{k}: {v:.4f}' for k, v in metrics.items()),
                  logger='current')
        return metrics
