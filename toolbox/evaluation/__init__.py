"""Metrics: COCO and Pascal VOC detection metrics, registered in ``toolbox.registry.METRICS``."""
from .coco_metric import CocoMetric, coco_summary, load_coco_annotations
from .voc_metric import VOCMetric, average_precision, bbox_iou, eval_voc_map

__all__ = ['CocoMetric', 'VOCMetric', 'eval_voc_map', 'average_precision', 'bbox_iou',
           'coco_summary', 'load_coco_annotations']
from .seg_metric import IoUMetric, confusion_matrix, metrics_from_confusion  # noqa: E402,F401
from .dice_metric import DiceMetric, dice_counts, dice_from_counts  # noqa: E402,F401
from .analysis import (PredictionAnalysisMetric, detection_confusion_matrix,  # noqa: E402,F401
                       precision_recall_curves, segmentation_confusion_matrix)
