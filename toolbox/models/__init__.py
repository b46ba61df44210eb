from . import bases, detectors, layers, task_utils  # noqa: F401  (registers compositions and utilities)
from . import segmentors  # noqa: F401  (registers the segmentors)
from .data_preprocessor import DataPreprocessor

__all__ = ['DataPreprocessor']
from .tta import DetTTAModel, SegTTAModel, merge_nms, weighted_box_fusion  # noqa: E402

__all__ += ['DetTTAModel', 'SegTTAModel', 'merge_nms', 'weighted_box_fusion']
