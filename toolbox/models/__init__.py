from . import bases, detectors, layers, task_utils  # noqa: F401  (registers compositions and utilities)
from . import segmentors  # noqa: F401  (registers the segmentors)
from .data_preprocessor import DataPreprocessor

__all__ = ['DataPreprocessor']
