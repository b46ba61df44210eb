"""Pictures of predictions and ground truth: :class:`DetSegVisualizer` (mmengine
``Visualizer``) and :class:`PredictionVisualizationHook`."""
from .hook import PredictionVisualizationHook, read_rgb
from .visualizer import DetSegVisualizer, class_colors

__all__ = ['DetSegVisualizer', 'PredictionVisualizationHook', 'class_colors', 'read_rgb']
