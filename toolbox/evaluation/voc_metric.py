"""Pascal VOC detection metric: per-class average precision at one or more IoU thresholds.

Matching follows the VOC devkit: detections of a class are taken in decreasing score order;
each is compared with the ground-truth box of the same class and image that it overlaps most.

* IoU >= ``iou_thr`` with an *ignored* (``difficult``) box: the detection is dropped, it is
  neither a true nor a false positive; ignored boxes are not counted as positives either.
* IoU >= ``iou_thr`` with a box not matched yet: true positive, the box becomes matched.
* otherwise (best box already matched, or IoU below the threshold): false positive.

Boxes are ``xyxy``, absolute pixels, 0-based, continuous coordinates (the toolbox convention).
Areas are ``(x2 - x1) * (y2 - y1)``, *without* the ``+ 1`` of the original VOC devkit, whose
boxes were inclusive integer pixel indices; in continuous coordinates the ``+ 1`` would inflate
every area by a one-pixel rim.

Legacy pixel convention (``legacy_coordinates=True``): widths and heights ``x2 - x1 + 1``,
intersections ``min(x2) - max(x1) + 1``, as the VOC devkit and MMDetection's
``use_legacy_coordinate`` compute them on inclusive pixel indices. Use it for boxes given in
that convention (e.g. a model trained and evaluated on the raw 1-based xml values), to compare
with numbers published that way. Our VOC reader already maps an xml box ``[a, b]`` to the
continuous ``[a - 1, b]`` (:class:`~toolbox.datasets.VOCDataset`), and on such boxes the
default IoU equals the devkit's legacy IoU on the raw values: ``min(b) - max(a) + 1 =
min(b) - max(a - 1)``; the test suite checks that equality.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from toolbox.registry import METRICS
from toolbox.structures import box_iou

AP_MODES = ('area', '11points')


def bbox_iou(boxes1: np.ndarray, boxes2: np.ndarray, legacy_coordinates: bool = False
             ) -> np.ndarray:
    """IoU matrix of ``xyxy`` boxes, areas ``(x2 - x1) * (y2 - y1)`` (no ``+ 1``), or with
    ``legacy_coordinates`` ``(x2 - x1 + 1) * (y2 - y1 + 1)`` (inclusive pixel indices).

    Args:
        boxes1: (N, 4) float array.
        boxes2: (M, 4) float array.
        legacy_coordinates: the ``+ 1`` convention (module docstring).

    Returns:
        (N, M) float64 array; a pair whose union is empty (two degenerate boxes) has IoU 0.
    """
    boxes1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    boxes2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    if legacy_coordinates:  # inclusive [x1, x2] covers the continuous [x1, x2 + 1]
        one = np.array([0.0, 0.0, 1.0, 1.0])
        boxes1, boxes2 = boxes1 + one, boxes2 + one
    return box_iou(boxes1, boxes2)


def average_precision(recall: np.ndarray, precision: np.ndarray, mode: str = 'area') -> float:
    """Average precision of one precision/recall curve (detections in decreasing score order).

    * ``'area'`` (VOC2010 and later): area under the monotone precision envelope
      ``p_interp(r) = max_{r' >= r} p(r')``, summed where recall changes.
    * ``'11points'`` (VOC2007): mean of ``p_interp`` at recall ``0, 0.1, ..., 1``. The
      thresholds are ``k / 10`` so that a recall such as ``3 / 10`` meets the threshold 0.3
      exactly (``np.arange(0, 1.1, 0.1)`` would give 0.30000000000000004).

    Args:
        recall: (D,) cumulative recall.
        precision: (D,) cumulative precision.
        mode: ``'area'`` or ``'11points'``.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if mode == 'area':
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]
        changed = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[changed + 1] - mrec[changed]) * mpre[changed + 1]))
    if mode == '11points':
        thresholds = np.arange(11) / 10.0
        reached = recall[None, :] >= thresholds[:, None]  # (11, D)
        best = np.where(reached, precision[None, :], 0.0).max(axis=1, initial=0.0)
        return float(best.mean())
    raise ValueError(f'mode must be one of {AP_MODES}, got {mode!r}')


def _match_image(det: dict, ann: dict, iou_thr: float, legacy_coordinates: bool = False):
    """VOC matching in one image, all classes at once.

    Returns:
        order: (N,) indices sorting the image's detections by decreasing score (stable).
        is_tp, is_ignored: (N,) bool flags in that order; a detection that is neither is a
        false positive.
    """
    scores = np.asarray(det['scores'], dtype=np.float64).reshape(-1)
    order = np.argsort(-scores, kind='stable')
    det_boxes = np.asarray(det['bboxes'], dtype=np.float64).reshape(-1, 4)[order]
    det_labels = np.asarray(det['labels'], dtype=np.int64).reshape(-1)[order]

    gt_boxes = np.concatenate([np.asarray(ann['bboxes'], dtype=np.float64).reshape(-1, 4),
                               np.asarray(ann.get('bboxes_ignore', np.zeros((0, 4))),
                                          dtype=np.float64).reshape(-1, 4)])
    gt_labels = np.concatenate([np.asarray(ann['labels'], dtype=np.int64).reshape(-1),
                                np.asarray(ann.get('labels_ignore', np.zeros(0)),
                                           dtype=np.int64).reshape(-1)])
    num_normal = len(np.asarray(ann['labels']).reshape(-1))
    gt_ignored = np.arange(len(gt_labels)) >= num_normal

    num_dets = len(order)
    if num_dets == 0 or len(gt_labels) == 0:
        return order, np.zeros(num_dets, bool), np.zeros(num_dets, bool)

    ious = bbox_iou(det_boxes, gt_boxes, legacy_coordinates)
    ious[det_labels[:, None] != gt_labels[None, :]] = -1.0  # only same-class boxes compete
    best_gt = ious.argmax(axis=1)
    hit = ious[np.arange(num_dets), best_gt] >= iou_thr
    is_ignored = hit & gt_ignored[best_gt]
    # Each detection claims its best box whether or not it is taken already; the first claim
    # in score order wins (true positive), later claims are false positives.
    claims = np.flatnonzero(hit & ~gt_ignored[best_gt])
    _, first = np.unique(best_gt[claims], return_index=True)
    is_tp = np.zeros(num_dets, bool)
    is_tp[claims[first]] = True
    return order, is_tp, is_ignored


def eval_voc_map(det_results: Sequence[dict], annotations: Sequence[dict], *, num_classes: int,
                 iou_thr: float = 0.5, mode: str = 'area', legacy_coordinates: bool = False
                 ) -> tuple[float, list[dict]]:
    """Pascal VOC mean average precision.

    Args:
        det_results: one dict per image with ``bboxes`` (N, 4) ``xyxy`` (see module docstring),
            ``scores`` (N,) and ``labels`` (N,) int in ``[0, num_classes)``.
        annotations: one dict per image, same order, with ``bboxes`` (M, 4), ``labels`` (M,)
            and optionally ``bboxes_ignore`` (K, 4), ``labels_ignore`` (K,) for ``difficult``
            boxes.
        num_classes: number of classes.
        iou_thr: IoU needed for a match.
        mode: ``'area'`` (VOC2010+) or ``'11points'`` (VOC2007), see :func:`average_precision`.
        legacy_coordinates: IoU with the devkit's ``+ 1`` (module docstring).

    Returns:
        ``(mean_ap, per_class)``. ``per_class[c]`` is a dict with ``num_gts`` (non-ignored
        boxes), ``num_dets`` (all detections of the class), ``recall`` (final recall) and
        ``ap``. A class without ground truth has ``recall = ap = 0`` and is left out of
        ``mean_ap``, the mean over the classes that have ground truth (0 if none has).
    """
    if mode not in AP_MODES:
        raise ValueError(f'mode must be one of {AP_MODES}, got {mode!r}')
    if len(det_results) != len(annotations):
        raise ValueError(f'{len(det_results)} detection results for {len(annotations)} '
                         f'annotated images: they must correspond one to one')
    if not 0.0 < iou_thr <= 1.0:
        raise ValueError(f'iou_thr must be in (0, 1], got {iou_thr}')

    labels, scores, is_tp, is_ignored = [], [], [], []
    for det, ann in zip(det_results, annotations):
        order, tp, ignored = _match_image(det, ann, iou_thr, legacy_coordinates)
        labels.append(np.asarray(det['labels'], dtype=np.int64).reshape(-1)[order])
        scores.append(np.asarray(det['scores'], dtype=np.float64).reshape(-1)[order])
        is_tp.append(tp)
        is_ignored.append(ignored)
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    scores = np.concatenate(scores) if scores else np.zeros(0)
    is_tp = np.concatenate(is_tp) if is_tp else np.zeros(0, bool)
    is_ignored = np.concatenate(is_ignored) if is_ignored else np.zeros(0, bool)
    gt_labels = np.concatenate([np.asarray(a['labels'], dtype=np.int64).reshape(-1)
                                for a in annotations] or [np.zeros(0, np.int64)])
    for what, values in (('detection', labels), ('ground-truth', gt_labels)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f'{what} labels must be in [0, {num_classes}), '
                             f'got values in [{values.min()}, {values.max()}]')
    num_gts = np.bincount(gt_labels, minlength=num_classes)
    num_dets = np.bincount(labels, minlength=num_classes)

    per_class = []
    for c in range(num_classes):
        keep = (labels == c) & ~is_ignored
        # Stable sort keeps each image's own (stable) order among tied scores, the order in
        # which it was matched.
        tp = is_tp[keep][np.argsort(-scores[keep], kind='stable')]
        tp_cum = np.cumsum(tp)
        fp_cum = np.cumsum(~tp)
        if num_gts[c] > 0 and tp.size:
            recall = tp_cum / num_gts[c]
            precision = tp_cum / (tp_cum + fp_cum)
            ap = average_precision(recall, precision, mode)
            final_recall = float(recall[-1])
        else:
            ap, final_recall = 0.0, 0.0
        per_class.append(dict(num_gts=int(num_gts[c]), num_dets=int(num_dets[c]),
                              recall=final_recall, ap=ap))

    with_gt = [r['ap'] for r in per_class if r['num_gts'] > 0]
    mean_ap = float(np.mean(with_gt)) if with_gt else 0.0
    return mean_ap, per_class


def format_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Plain-text table with aligned columns (floats with 4 decimals)."""
    cells = [[f'{v:.4f}' if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    rule = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'

    def line(values):
        return '| ' + ' | '.join(v.ljust(w) for v, w in zip(values, widths)) + ' |'

    return '\n'.join([rule, line([str(h) for h in header]), rule, *map(line, cells), rule])


def as_numpy(value, shape_tail=(), dtype=np.float32) -> np.ndarray:
    """Tensor / array / missing field -> numpy array of ``dtype`` (empty when missing)."""
    if value is None:
        return np.zeros((0, *shape_tail), dtype=dtype)
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype).reshape(-1, *shape_tail)


def instances_dict(sample: dict, key: str) -> dict:
    """``sample[key]`` as a plain dict (mmengine passes dicts; DataSample objects work too)."""
    value = sample.get(key) if isinstance(sample, dict) else getattr(sample, key, None)
    if value is None:
        return {}
    if hasattr(value, 'to_dict'):
        value = value.to_dict()
    return dict(value)


@METRICS.register_module()
class VOCMetric(BaseMetric):
    """Pascal VOC mAP (see :func:`eval_voc_map`).

    Args:
        iou_thrs: one IoU threshold or a list; ``mAP`` is the mean over the thresholds and
            ``AP<100 * thr>`` (e.g. ``AP50``) is reported for each.
        eval_mode: ``'area'`` (VOC2010+) or ``'11points'`` (VOC2007).
        legacy_coordinates: ``False`` (default): continuous coordinates, areas
            ``(x2 - x1) * (y2 - y1)``; ``True``: the VOC devkit's inclusive pixel indices, areas
            ``(x2 - x1 + 1) * (y2 - y1 + 1)``, for boxes in that convention (module docstring).
        collect_device: ``'cpu'`` or ``'gpu'``, for gathering results across ranks.
        prefix: prefix of the metric names, ``'pascal_voc'`` by default.

    ``process`` takes per image ``pred_instances`` (``bboxes`` in the *original* image frame,
    ``scores``, ``labels``), ``gt_instances`` and optionally ``ignored_instances`` (difficult
    boxes). Values are fractions in [0, 1] rounded to 4 decimals; the per-class table (class
    name from ``dataset_meta['classes']``, gts, dets, recall, ap) is logged.
    """

    default_prefix = 'pascal_voc'

    def __init__(self, iou_thrs: float | Sequence[float] = 0.5, eval_mode: str = 'area',
                 legacy_coordinates: bool = False, collect_device: str = 'cpu',
                 prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.iou_thrs = [float(iou_thrs)] if isinstance(iou_thrs, (int, float)) else \
            [float(t) for t in iou_thrs]
        if not self.iou_thrs or not all(0.0 < t <= 1.0 for t in self.iou_thrs):
            raise ValueError(f'iou_thrs must be one or more values in (0, 1], got {iou_thrs}')
        if eval_mode not in AP_MODES:
            raise ValueError(f'eval_mode must be one of {AP_MODES}, got {eval_mode!r}')
        self.eval_mode = eval_mode
        self.legacy_coordinates = legacy_coordinates

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            pred = instances_dict(sample, 'pred_instances')
            gt = instances_dict(sample, 'gt_instances')
            ignored = instances_dict(sample, 'ignored_instances')
            self.results.append((
                dict(bboxes=as_numpy(pred.get('bboxes'), (4,)),
                     scores=as_numpy(pred.get('scores')),
                     labels=as_numpy(pred.get('labels'), dtype=np.int64)),
                dict(bboxes=as_numpy(gt.get('bboxes'), (4,)),
                     labels=as_numpy(gt.get('labels'), dtype=np.int64),
                     bboxes_ignore=as_numpy(ignored.get('bboxes'), (4,)),
                     labels_ignore=as_numpy(ignored.get('labels'), dtype=np.int64))))

    def compute_metrics(self, results: list) -> dict:
        classes = (self.dataset_meta or {}).get('classes')
        if classes is None:
            raise ValueError("VOCMetric needs dataset_meta['classes'] (the Runner sets it from "
                             "the dataset's metainfo)")
        dets = [r[0] for r in results]
        anns = [r[1] for r in results]
        metrics, maps = {}, []
        for thr in self.iou_thrs:
            mean_ap, per_class = eval_voc_map(dets, anns, num_classes=len(classes),
                                              iou_thr=thr, mode=self.eval_mode,
                                              legacy_coordinates=self.legacy_coordinates)
            rows = [(name, r['num_gts'], r['num_dets'], r['recall'], r['ap'])
                    for name, r in zip(classes, per_class)]
            rows.append(('mAP', '', '', '', mean_ap))
            convention = ', legacy +1 coordinates' if self.legacy_coordinates else ''
            print_log(f'\nVOC AP at IoU {thr} ({self.eval_mode}{convention}):\n'
                      + format_table(('class', 'gts', 'dets', 'recall', 'ap'), rows),
                      logger='current')
            metrics[f'AP{int(round(thr * 100))}'] = round(mean_ap, 4)
            maps.append(mean_ap)
        metrics['mAP'] = round(float(np.mean(maps)), 4)
        return metrics
