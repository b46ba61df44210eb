from .single_stage import SingleStageDetector, rescale_to_original

__all__ = ['SingleStageDetector', 'rescale_to_original']
