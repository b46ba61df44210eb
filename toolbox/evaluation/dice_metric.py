"""Per-case Dice metric for (3D medical, or 2D) semantic segmentation.

For case ``n`` and class ``c``, with ``G`` the ground-truth voxels of class ``c`` and ``P`` the
predicted ones (voxels whose ground truth is ``ignore_index`` excluded from both)::

    Dice[n, c] = 2 |G & P| / (|G| + |P|)

Empty-class rules (the default, ``empty_gt='penalize_fp'``):

* class absent from both the ground truth and the prediction of a case: ``NaN``, the case is
  skipped for that class (nothing to find, nothing wrongly found);
* class absent from the ground truth but predicted: ``0`` (a false positive is penalised);
* otherwise the formula above (present in the ground truth but not predicted: 0).

``empty_gt='ignore'`` gives ``NaN`` for every case whose ground truth lacks the class,
predicted or not: MONAI's ``DiceMetric(ignore_empty=True)`` (its default), which does not see
false positives on cases without the structure. The two agree whenever every empty ground truth
is also empty in the prediction (e.g. MSD Hippocampus, where each case has both classes).

Reductions: ``Dice.<class>`` is the mean over the cases that are not NaN for that class
(MONAI's ``reduction='mean_batch'``), ``NaN`` if there is none (MONAI reports 0 there);
``mDice`` is the mean of the ``Dice.<class>`` values that are not NaN. Values are fractions in
[0, 1] (not percent).
Background (class 0) is excluded unless ``include_background=True``.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from mmengine.logging import print_log

from toolbox.registry import METRICS
from toolbox.structures import IGNORE_INDEX

from .seg_metric import ClassMapMetric, field_data, sample_meta

EMPTY_GT_RULES = ('penalize_fp', 'ignore')



def dice_counts(pred: torch.Tensor, gt: torch.Tensor, num_classes: int,
                ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(3, C) int64 ``[|G & P|, |G|, |P|]`` per class of one case.

    Args:
        pred: int (*spatial) predicted labels in ``0..C-1``.
        gt: int (*spatial), same shape, labels in ``0..C-1`` or ``ignore_index``.

    Raises ``ValueError`` on a shape mismatch or a label outside those ranges.
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
    return torch.stack([torch.bincount(gt[gt == pred], minlength=num_classes),
                        torch.bincount(gt, minlength=num_classes),
                        torch.bincount(pred, minlength=num_classes)])


def dice_from_counts(counts: np.ndarray, empty_gt: str = 'penalize_fp') -> np.ndarray:
    """Dice per case and class from (N, 3, C) counts (:func:`dice_counts`), with the
    module's empty-class rules. Returns (N, C) float64 with NaN for skipped entries."""
    if empty_gt not in EMPTY_GT_RULES:
        raise ValueError(f'empty_gt must be one of {EMPTY_GT_RULES}, got {empty_gt!r}')
    counts = np.asarray(counts, dtype=np.float64)
    inter, gt, pred = counts[:, 0], counts[:, 1], counts[:, 2]
    denominator = gt + pred
    with np.errstate(divide='ignore', invalid='ignore'):
        dice = 2 * inter / denominator
    skipped = (gt == 0) if empty_gt == 'ignore' else (denominator == 0)
    return np.where(skipped, np.nan, dice)


def _nanmean(x: np.ndarray, axis=None):
    """Mean over the non-NaN entries; NaN where there are none (no warning)."""
    finite = ~np.isnan(x)
    count = finite.sum(axis)
    total = np.where(finite, x, 0).sum(axis)
    with np.errstate(divide='ignore', invalid='ignore'):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@METRICS.register_module()
class DiceMetric(ClassMapMetric):
    """Mean per-case Dice per class and over classes (module docstring for the rules).

    ``process`` stores, per sample, the (3, C) counts of :func:`dice_counts` (computed on the
    prediction's device); ``compute_metrics`` turns them into per-case Dice, so results gathered
    from several processes give the single-process numbers. The prediction ``pred_sem_seg``
    (int (1, *spatial), in the original frame; 2D or 3D) is compared with ``gt_sem_seg``
    ((1, *spatial)); a ground truth larger than the prediction is cropped to it first (batch
    padding is at the end of each axis).

    Resampled test pipelines. ``gt_sem_seg`` follows the image through the test pipeline, so
    after :class:`~toolbox.datasets.transforms.Spacing` it is no longer in the original frame
    of the prediction; such a sample (metainfo ``spacing`` != ``ori_spacing``) raises a
    ``ValueError`` unless ``gt_from_file=True``, which reads the ground truth of every case
    from its ``seg_map_path`` (NIfTI, the original frame) instead of ``gt_sem_seg``.

    Args:
        num_classes: number of classes including background; by default
            ``len(dataset_meta['classes'])``.
        include_background: also report class 0 (and average it into ``mDice``).
        empty_gt: ``'penalize_fp'`` (default) or ``'ignore'`` (MONAI ``ignore_empty=True``).
        ignore_index: ground-truth label that is not evaluated.
        gt_from_file: read the ground truth from the sample's ``seg_map_path`` (see above).
        collect_device, prefix: as mmengine ``BaseMetric``.

    Returns ``{'Dice.<class>': fraction, ..., 'mDice': fraction}``. After ``evaluate``,
    ``self.per_case`` holds the (N, C) Dice matrix of all classes (NaN = skipped) in
    processing order.
    """

    default_prefix = ''

    def __init__(self, num_classes: int | None = None, include_background: bool = False,
                 empty_gt: str = 'penalize_fp', ignore_index: int = IGNORE_INDEX,
                 gt_from_file: bool = False, collect_device: str = 'cpu',
                 prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if empty_gt not in EMPTY_GT_RULES:
            raise ValueError(f'DiceMetric: empty_gt must be one of {EMPTY_GT_RULES}, got '
                             f'{empty_gt!r}')
        self._num_classes = num_classes
        self.include_background = include_background
        self.empty_gt = empty_gt
        self.ignore_index = ignore_index
        self.gt_from_file = gt_from_file
        self.per_case = None

    def process(self, data_batch, data_samples: Sequence) -> None:
        num_classes = self.num_classes
        for sample in data_samples:
            pred = field_data(sample, 'pred_sem_seg').squeeze(0)
            gt = self._ground_truth(sample).to(pred.device)
            if gt.dim() != pred.dim():
                raise ValueError(f"{sample_meta(sample, 'img_path', 'a sample')}: ground truth "
                                 f"{tuple(gt.shape)} and prediction {tuple(pred.shape)} have "
                                 f"different numbers of axes")
            gt = gt[tuple(slice(0, s) for s in pred.shape)]
            if gt.shape != pred.shape:
                where = sample_meta(sample, 'img_path', 'a sample')
                raise ValueError(
                    f"{where}: ground truth {tuple(gt.shape)} "
                    f"is smaller than the prediction {tuple(pred.shape)} (ori_shape "
                    f"{sample_meta(sample, 'ori_shape')}); the ground truth must keep the "
                    f"original size")
            counts = dice_counts(pred, gt, num_classes, self.ignore_index)
            self.results.append(counts.cpu().numpy())

    def _ground_truth(self, sample) -> torch.Tensor:
        """(*spatial) ground truth of a sample, from ``gt_sem_seg`` or from its file."""
        if self.gt_from_file:
            from toolbox.datasets.transforms.volume import LoadVolumeAnnotation
            path = sample_meta(sample, 'seg_map_path')
            if not path:
                raise ValueError(f"DiceMetric(gt_from_file=True): "
                                 f"{sample_meta(sample, 'img_path', 'a sample')} has no "
                                 f"seg_map_path in its metainfo")
            return torch.from_numpy(LoadVolumeAnnotation()._read(path))
        spacing, ori_spacing = sample_meta(sample, 'spacing'), sample_meta(sample, 'ori_spacing')
        if spacing is not None and ori_spacing is not None and not np.allclose(
                np.asarray(spacing, np.float64), np.asarray(ori_spacing, np.float64),
                rtol=1e-6, atol=0):
            raise ValueError(f"DiceMetric: {sample_meta(sample, 'img_path', 'a sample')}: the test "
                             f"pipeline resampled gt_sem_seg (spacing {list(spacing)} != "
                             f"ori_spacing {list(ori_spacing)}), so it is not in the "
                             f"prediction's original frame; use DiceMetric(gt_from_file=True)")
        return field_data(sample, 'gt_sem_seg').squeeze(0)

    def compute_metrics(self, results: list) -> dict[str, float]:
        names = self.class_names()
        counts = np.stack(results) if results else np.zeros((0, 3, self.num_classes))
        self.per_case = dice_from_counts(counts, self.empty_gt)
        first = 0 if self.include_background else 1
        per_class = _nanmean(self.per_case[:, first:], axis=0)
        mdice = float(_nanmean(per_class))
        evaluated = (~np.isnan(self.per_case[:, first:])).sum(0)
        lines = ['per-class Dice (mean over cases):', f"{'class':<12} {'Dice':>7} {'cases':>6}"]
        lines += [f'{name:<12} {value:7.4f} {int(n):6d}'
                  for name, value, n in zip(names[first:], per_class, evaluated)]
        lines.append(f'mDice {mdice:.4f} over {len(counts)} cases')
        print_log('\n'.join(lines), logger='current')
        out = {f'Dice.{name}': float(value) for name, value in zip(names[first:], per_class)}
        out['mDice'] = mdice
        return out
