"""Semantic segmentation metric: IoU, accuracy and the per-class table from a confusion matrix.

Definitions, for the dataset-wide confusion matrix ``M`` (C, C), ``M[g, p]`` = number of pixels
of ground-truth class ``g`` predicted as ``p``, ignored pixels excluded:

* ``IoU_c = M[c, c] / (sum_p M[c, p] + sum_g M[g, c] - M[c, c])`` (TP / (TP + FP + FN));
* ``Acc_c = M[c, c] / sum_p M[c, p]`` (per-class recall);
* ``aAcc = trace(M) / sum(M)`` (pixel accuracy);
* ``mIoU`` / ``mAcc``: mean over classes whose value is defined.

NaN handling: a class that is absent from both the ground truth and the predictions has an
empty union, so its IoU is NaN; a class absent from the ground truth has NaN accuracy (its IoU
is 0 if it was predicted). NaN entries are left out of ``mIoU`` / ``mAcc`` (``nanmean``), as in
mmseg; the per-class table shows them as ``nan``. All values are percentages.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from toolbox.registry import METRICS
from toolbox.structures import IGNORE_INDEX


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(C, C) int64 confusion matrix, rows = ground truth, columns = prediction.

    Args:
        pred: int (...,) predicted labels in ``0..C-1``.
        gt: int (...,) same shape, labels in ``0..C-1`` or ``ignore_index``.

    Raises ``ValueError`` on a label outside those ranges.
    """
    if pred.shape != gt.shape:
        raise ValueError(f'prediction shape {tuple(pred.shape)} != ground truth shape '
                         f'{tuple(gt.shape)}')
    valid = gt != ignore_index
    gt, pred = gt[valid].long(), pred[valid].long()
    for name, labels in (('ground truth', gt), ('prediction', pred)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            bad = labels[(labels < 0) | (labels >= num_classes)].unique()[:5].tolist()
            raise ValueError(f'{name} labels {bad} are outside 0..{num_classes - 1} '
                             f'(ignore_index {ignore_index})')
    return torch.bincount(gt * num_classes + pred,
                          minlength=num_classes ** 2).reshape(num_classes, num_classes)


def metrics_from_confusion(matrix: np.ndarray) -> dict[str, np.ndarray | float]:
    """IoU, Acc per class (C,) and aAcc, mIoU, mAcc (floats) in percent (module docstring)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    gt_count, pred_count = matrix.sum(1), matrix.sum(0)
    union = gt_count + pred_count - tp
    with np.errstate(divide='ignore', invalid='ignore'):
        iou = np.where(union > 0, tp / union, np.nan) * 100
        acc = np.where(gt_count > 0, tp / gt_count, np.nan) * 100
    total = matrix.sum()

    def nanmean(x):
        return float(np.nanmean(x)) if np.isfinite(x).any() else float('nan')

    return dict(IoU=iou, Acc=acc, aAcc=float(tp.sum() / total * 100) if total else float('nan'),
                mIoU=nanmean(iou), mAcc=nanmean(acc))


def field_data(sample, name):
    value = sample[name] if isinstance(sample, dict) else getattr(sample, name)
    return value['data'] if isinstance(value, dict) else value.data


def sample_meta(sample, key, default=None):
    if isinstance(sample, dict):
        return sample.get(key, default)
    return sample.metainfo.get(key, default)


class ClassMapMetric(BaseMetric):
    """Base of the class-map metrics (IoU, Dice): the number of classes from the argument or
    the dataset's ``classes``, and the names to report them under."""

    _num_classes: int | None = None

    @property
    def num_classes(self) -> int:
        if self._num_classes is not None:
            return self._num_classes
        classes = (self.dataset_meta or {}).get('classes')
        if not classes:
            raise ValueError(f'{type(self).__name__} needs num_classes or dataset_meta with '
                             f'classes')
        return len(classes)

    def class_names(self) -> list[str]:
        classes = (self.dataset_meta or {}).get('classes')
        if classes and len(classes) == self.num_classes:
            return list(classes)
        return [str(c) for c in range(self.num_classes)]


@METRICS.register_module()
class IoUMetric(ClassMapMetric):
    """mIoU / mAcc / aAcc and per-class IoU / Acc over a dataset (module docstring).

    ``process`` computes each sample's confusion matrix on the prediction's device
    (``torch.bincount``) and stores it, sparsely, as one result *per sample*; mmengine's
    ``collect_results`` gathers the results of every process and drops the duplicates that a
    distributed sampler pads in, and ``compute_metrics`` sums them into the dataset's (C, C)
    int64 matrix, so the numbers under DDP equal the single-process ones.

    The prediction (``pred_sem_seg``, in the original image frame) is compared with
    ``gt_sem_seg``; a ground truth larger than the prediction is cropped to its size first
    (the data preprocessor pads ground truth at the bottom/right with the ignore index).

    Args:
        ignore_index: ground-truth label that is not evaluated.
        num_classes: number of classes; by default ``len(dataset_meta['classes'])``.
        per_class: also return ``IoU.<class>`` and ``Acc.<class>`` entries.
        collect_device, prefix: as mmengine ``BaseMetric``.

    After ``evaluate``, ``self.confusion`` holds the summed (C, C) matrix.
    """

    default_prefix = ''  # keys are 'mIoU', 'IoU.<class>', ... (no 'prefix/')

    def __init__(self, ignore_index: int = IGNORE_INDEX, num_classes: int | None = None,
                 per_class: bool = True, collect_device: str = 'cpu', prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ignore_index = ignore_index
        self._num_classes = num_classes
        self.per_class = per_class
        self.confusion = None

    def process(self, data_batch, data_samples: Sequence) -> None:
        num_classes = self.num_classes
        for sample in data_samples:
            pred = field_data(sample, 'pred_sem_seg').squeeze(0)
            gt = field_data(sample, 'gt_sem_seg').squeeze(0).to(pred.device)
            gt = gt[:pred.shape[-2], :pred.shape[-1]]
            if gt.shape != pred.shape:
                where = sample_meta(sample, 'img_path', 'a sample')
                raise ValueError(
                    f"{where}: ground truth {tuple(gt.shape)} "
                    f"is smaller than the prediction {tuple(pred.shape)} (ori_shape "
                    f"{sample_meta(sample, 'ori_shape')}). The ground truth must keep the "
                    f"original image size; the data preprocessor pads (or crops) gt_sem_seg to the "
                    f"batch input size, so a test pipeline must not resize the image")
            matrix = confusion_matrix(pred, gt, num_classes, self.ignore_index).flatten()
            nonzero = torch.nonzero(matrix).flatten()
            self.results.append((nonzero.cpu().numpy(), matrix[nonzero].cpu().numpy()))

    def compute_metrics(self, results: list) -> dict[str, float]:
        num_classes = self.num_classes
        total = np.zeros(num_classes ** 2, dtype=np.int64)
        for index, counts in results:
            np.add.at(total, index, counts)
        self.confusion = total.reshape(num_classes, num_classes)
        values = metrics_from_confusion(self.confusion)
        names = self.class_names()
        print_log(format_table(names, values), logger='current')
        out = dict(aAcc=values['aAcc'], mIoU=values['mIoU'], mAcc=values['mAcc'])
        if self.per_class:
            for name, iou, acc in zip(names, values['IoU'], values['Acc']):
                out[f'IoU.{name}'] = float(iou)
                out[f'Acc.{name}'] = float(acc)
        return out


def format_table(names: Sequence[str], values: dict) -> str:
    """The per-class IoU / Acc table followed by aAcc, mIoU, mAcc, as plain text."""
    width = max(max(len(n) for n in names), 5)
    lines = ['per-class results:', f"{'class':<{width}}  {'IoU':>7}  {'Acc':>7}"]
    for name, iou, acc in zip(names, values['IoU'], values['Acc']):
        lines.append(f'{name:<{width}}  {iou:7.2f}  {acc:7.2f}')
    lines.append(f"aAcc {values['aAcc']:.2f}  mIoU {values['mIoU']:.2f}  "
                 f"mAcc {values['mAcc']:.2f}")
    return '\n'.join(lines)
