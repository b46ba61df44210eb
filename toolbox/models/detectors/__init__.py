from .set_prediction import SetPredictionDetector
from .single_stage import SingleStageDetector
from .two_stage import TwoStageDetector
from .utils import attach_predictions, prefix_losses

__all__ = ['SingleStageDetector', 'TwoStageDetector', 'SetPredictionDetector',
           'attach_predictions', 'prefix_losses']
