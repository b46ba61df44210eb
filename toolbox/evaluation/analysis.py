"""Error analysis of predictions: confusion matrices (detection and segmentation) and per-class
precision-recall curves, with their plots, and :class:`PredictionAnalysisMetric`, which writes
them from a test run (``tools/test.py --confusion-matrix --pr-curves``).

Detection confusion matrix (the rule of mmdet's ``tools/analysis_tools/confusion_matrix.py``):
a (C + 1, C + 1) count matrix, rows = ground-truth class, columns = predicted class, index C =
background. Per image, detections scoring below ``score_thr`` are dropped; then for every pair
(detection, ground-truth box) with IoU >= ``iou_thr``, ``M[gt class, det class] += 1``; a
detection with no such pair is a false positive, ``M[C, det class] += 1``; a ground-truth box
with no such pair *of its own class* is missed, ``M[gt class, C] += 1`` (so a box found only
under a wrong class counts in its wrong-class cell and as missed). Detections overlapping an
ignored (``difficult``) box by ``iou_thr`` and no normal box are left out, as the VOC metric
leaves them out.

Precision-recall curves follow the VOC matching of :mod:`toolbox.evaluation.voc_metric`
(each detection, in decreasing score order, claims its best same-class box; first claim wins):
for class c, the k-th point is (recall, precision) over the k highest-scoring detections of c.
Their area under the precision envelope is the VOC AP of that class.
"""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from toolbox.evaluation.seg_metric import confusion_matrix, field_data
from toolbox.evaluation.voc_metric import (_match_image, as_numpy, average_precision, bbox_iou,
                                           instances_dict)
from toolbox.registry import METRICS
from toolbox.structures import IGNORE_INDEX


def _arrays(result: dict, boxes_key='bboxes', labels_key='labels'):
    boxes = np.asarray(result.get(boxes_key, np.zeros((0, 4))), np.float64).reshape(-1, 4)
    labels = np.asarray(result.get(labels_key, np.zeros(0)), np.int64).reshape(-1)
    return boxes, labels


def detection_confusion_matrix(det_results: Sequence[dict], annotations: Sequence[dict],
                               num_classes: int, score_thr: float = 0.3,
                               iou_thr: float = 0.5) -> np.ndarray:
    """(C + 1, C + 1) int64 confusion matrix of detections (module docstring).

    Args:
        det_results: per image ``bboxes`` (N, 4) ``xyxy``, ``scores`` (N,), ``labels`` (N,).
        annotations: per image ``bboxes`` (M, 4), ``labels`` (M,), optionally
            ``bboxes_ignore`` (K, 4) (``labels_ignore`` is not needed: any overlap counts).
        num_classes: C; labels must be in ``[0, C)``.
    """
    if len(det_results) != len(annotations):
        raise ValueError(f'{len(det_results)} detection results for {len(annotations)} '
                         f'annotated images: they must correspond one to one')
    background = num_classes
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for det, ann in zip(det_results, annotations):
        det_boxes, det_labels = _arrays(det)
        scores = np.asarray(det.get('scores', np.zeros(0)), np.float64).reshape(-1)
        keep = scores >= score_thr
        det_boxes, det_labels = det_boxes[keep], det_labels[keep]
        gt_boxes, gt_labels = _arrays(ann)
        for what, labels in (('detection', det_labels), ('ground-truth', gt_labels)):
            if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
                raise ValueError(f'{what} labels must be in [0, {num_classes}), got '
                                 f'{sorted(set(labels[(labels < 0) | (labels >= num_classes)]))}')
        hits = bbox_iou(det_boxes, gt_boxes) >= iou_thr  # (N, M)
        det_index, gt_index = np.nonzero(hits)
        np.add.at(matrix, (gt_labels[gt_index], det_labels[det_index]), 1)
        ignored_boxes = np.asarray(ann.get('bboxes_ignore', np.zeros((0, 4))),
                                   np.float64).reshape(-1, 4)
        on_ignored = (bbox_iou(det_boxes, ignored_boxes) >= iou_thr).any(axis=1)
        false_positive = ~hits.any(axis=1) & ~on_ignored
        np.add.at(matrix, (background, det_labels[false_positive]), 1)
        found = (hits & (det_labels[:, None] == gt_labels[None, :])).any(axis=0)
        np.add.at(matrix, (gt_labels[~found], background), 1)
    return matrix


def precision_recall_curves(det_results: Sequence[dict], annotations: Sequence[dict],
                            num_classes: int, iou_thr: float = 0.5) -> list[dict]:
    """Per-class precision-recall curves of the VOC matching (module docstring).

    Same inputs as :func:`toolbox.evaluation.eval_voc_map` (``bboxes_ignore`` /
    ``labels_ignore`` optional). Returns one dict per class: ``scores`` (D,) in decreasing
    order, ``recall`` (D,) and ``precision`` (D,) after each of those detections (detections
    on ignored boxes left out), ``num_gts`` and ``ap`` (the VOC ``'area'`` AP, 0 for a class
    without ground truth; recall is 0 there too).
    """
    if len(det_results) != len(annotations):
        raise ValueError(f'{len(det_results)} detection results for {len(annotations)} '
                         f'annotated images: they must correspond one to one')
    labels, scores, is_tp, kept = [], [], [], []
    for det, ann in zip(det_results, annotations):
        order, tp, ignored = _match_image(det, ann, iou_thr)
        labels.append(np.asarray(det['labels'], np.int64).reshape(-1)[order])
        scores.append(np.asarray(det['scores'], np.float64).reshape(-1)[order])
        is_tp.append(tp)
        kept.append(~ignored)
    labels = np.concatenate(labels or [[]]).astype(np.int64)
    scores = np.concatenate(scores or [[]]).astype(np.float64)
    is_tp = np.concatenate(is_tp or [[]]).astype(bool)
    kept = np.concatenate(kept or [[]]).astype(bool)
    num_gts = np.bincount(np.concatenate([np.asarray(a['labels'], np.int64).reshape(-1)
                                          for a in annotations] or [np.zeros(0, np.int64)]),
                          minlength=num_classes)
    curves = []
    for c in range(num_classes):
        select = (labels == c) & kept
        order = np.argsort(-scores[select], kind='stable')
        tp = is_tp[select][order]
        tp_cum = np.cumsum(tp)
        precision = tp_cum / np.arange(1, len(tp) + 1)
        recall = tp_cum / num_gts[c] if num_gts[c] else np.zeros(len(tp))
        ap = average_precision(recall, precision) if num_gts[c] and len(tp) else 0.0
        curves.append(dict(scores=scores[select][order], recall=recall, precision=precision,
                           num_gts=int(num_gts[c]), ap=ap))
    return curves


def segmentation_confusion_matrix(preds: Sequence[torch.Tensor], gts: Sequence[torch.Tensor],
                                  num_classes: int,
                                  ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(C, C) int64 pixel confusion matrix summed over images, rows = ground truth, columns =
    prediction (:func:`toolbox.evaluation.seg_metric.confusion_matrix` per image); each
    ground truth is cropped to its prediction's size first (batch padding)."""
    total = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    for pred, gt in zip(preds, gts):
        gt = gt[..., :pred.shape[-2], :pred.shape[-1]]
        total += confusion_matrix(pred, gt.to(pred.device), num_classes, ignore_index).cpu()
    return total.numpy()


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], out_file: str,
                          title: str = 'confusion matrix') -> str:
    """Draw ``matrix`` (rows = ground truth) coloured by each row's percentage, with the
    counts written in the cells; ``class_names`` has one entry per row (include
    ``'background'`` for a detection matrix). Returns ``out_file``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    percent = np.divide(matrix * 100.0, rows, out=np.zeros(matrix.shape), where=rows > 0)
    n = len(class_names)
    size = max(4.0, 0.6 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(percent, cmap='Blues', vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label='% of the ground-truth row')
    ax.set_xticks(range(n), class_names, rotation=45, ha='right')
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel('prediction')
    ax.set_ylabel('ground truth')
    ax.set_title(title)
    font = max(6, 11 - n // 4)
    for (r, c), count in np.ndenumerate(matrix):
        if count:
            ax.text(c, r, f'{count}\n{percent[r, c]:.0f}%', ha='center', va='center',
                    fontsize=font, color='white' if percent[r, c] > 60 else 'black')
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
    return out_file


def plot_pr_curves(curves: Sequence[dict], class_names: Sequence[str], out_file: str,
                   title: str = 'precision-recall') -> str:
    """One line per class (recall on x, precision on y; the legend gives its AP and number of
    ground-truth boxes). Returns ``out_file``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for name, curve in zip(class_names, curves):
        if len(curve['recall']):
            ax.plot(curve['recall'], curve['precision'], linewidth=1.5,
                    label=f"{name} (AP {curve['ap']:.3f}, {curve['num_gts']} gts)")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel('recall')
    ax.set_ylabel('precision')
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='lower left')
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
    return out_file


@METRICS.register_module()
class PredictionAnalysisMetric(BaseMetric):
    """Writes a confusion matrix (and, for detection, per-class PR curves) of a test or
    validation run as PNG and JSON; reports no numbers (the run's own metric does).

    What is analysed follows the samples: ``pred_sem_seg`` + ``gt_sem_seg`` give the pixel
    confusion matrix, ``pred_instances`` + ``gt_instances`` the detection matrix with a
    background row/column and the PR curves. Files in ``out_dir``: ``confusion_matrix.png``,
    ``confusion_matrix.json`` (``classes``, ``matrix`` rows = ground truth and the thresholds),
    ``pr_curves.png``. ``tools/test.py --confusion-matrix --pr-curves`` adds it to the test
    evaluator with ``out_dir`` = the work dir. Works under DDP (results are collected).

    Args:
        out_dir: folder of the files (created when missing).
        confusion: write the confusion matrix.
        pr_curves: write the PR curves (detection only).
        score_thr: detections below this are left out of the confusion matrix (not of the
            PR curves, which go down every score).
        iou_thr: IoU of a match.
        ignore_index: ground-truth label not counted (segmentation).
    """

    default_prefix = 'analysis'

    def __init__(self, out_dir: str, confusion: bool = True, pr_curves: bool = False,
                 score_thr: float = 0.3, iou_thr: float = 0.5,
                 ignore_index: int = IGNORE_INDEX, collect_device: str = 'cpu',
                 prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.out_dir = str(out_dir)
        self.confusion, self.pr_curves = confusion, pr_curves
        self.score_thr, self.iou_thr, self.ignore_index = score_thr, iou_thr, ignore_index
        self.written: list[str] = []

    def process(self, data_batch, data_samples: Sequence) -> None:
        for sample in data_samples:
            get = sample.get if isinstance(sample, dict) else \
                (lambda key, s=sample: getattr(s, key, None))
            if get('pred_sem_seg') is not None:
                # kept sparse per image, as IoUMetric does: whole maps would not fit in memory
                matrix = segmentation_confusion_matrix(
                    [field_data(sample, 'pred_sem_seg').squeeze(0)],
                    [field_data(sample, 'gt_sem_seg').squeeze(0)], self._num_classes(),
                    self.ignore_index).reshape(-1)
                nonzero = np.flatnonzero(matrix)
                self.results.append(('seg', nonzero, matrix[nonzero]))
                continue
            pred = instances_dict(sample, 'pred_instances')
            gt = instances_dict(sample, 'gt_instances')
            ignored = instances_dict(sample, 'ignored_instances')
            self.results.append(('det', dict(
                bboxes=as_numpy(pred.get('bboxes'), (4,)), scores=as_numpy(pred.get('scores')),
                labels=as_numpy(pred.get('labels'), dtype=np.int64)), dict(
                bboxes=as_numpy(gt.get('bboxes'), (4,)),
                labels=as_numpy(gt.get('labels'), dtype=np.int64),
                bboxes_ignore=as_numpy(ignored.get('bboxes'), (4,)),
                labels_ignore=as_numpy(ignored.get('labels'), dtype=np.int64))))

    def _classes(self) -> list[str]:
        classes = [str(c) for c in (self.dataset_meta or {}).get('classes') or []]
        if not classes:
            raise ValueError("PredictionAnalysisMetric needs dataset_meta['classes'] (the "
                             "Runner sets it from the dataset's metainfo)")
        return classes

    def _num_classes(self) -> int:
        return len(self._classes())

    def compute_metrics(self, results: list) -> dict:
        import json
        classes = self._classes()
        os.makedirs(self.out_dir, exist_ok=True)
        self.written = []
        kinds = {r[0] for r in results}
        if kinds == {'seg'}:
            names = classes
            matrix = np.zeros(len(classes) ** 2, dtype=np.int64)
            for _, index, counts in results:
                np.add.at(matrix, index, counts)
            matrix = matrix.reshape(len(classes), len(classes))
            settings = dict(ignore_index=self.ignore_index)
        else:
            dets, anns = [r[1] for r in results], [r[2] for r in results]
            names = classes + ['background']
            matrix = detection_confusion_matrix(dets, anns, len(classes), self.score_thr,
                                                self.iou_thr)
            settings = dict(score_thr=self.score_thr, iou_thr=self.iou_thr)
            if self.pr_curves:
                curves = precision_recall_curves(dets, anns, len(classes), self.iou_thr)
                self.written.append(plot_pr_curves(
                    curves, classes, osp.join(self.out_dir, 'pr_curves.png'),
                    title=f'precision-recall at IoU {self.iou_thr} ({len(results)} images)'))
        if self.confusion:
            path = osp.join(self.out_dir, 'confusion_matrix.json')
            with open(path, 'w') as f:
                json.dump(dict(classes=names, matrix=matrix.tolist(), **settings), f)
            detail = ', '.join(f'{k} {v}' for k, v in settings.items())
            self.written += [path, plot_confusion_matrix(
                matrix, names, osp.join(self.out_dir, 'confusion_matrix.png'),
                title=f'confusion matrix ({len(results)} images, {detail})')]
        print_log(f'PredictionAnalysisMetric: wrote {", ".join(self.written)}',
                  logger='current')
        return {}
