from .formatting import PackInputs
from .geometric import Pad, RandomFlip, RandomResize, Resize
from .loading import LoadAnnotations, LoadImageFromFile
from .photometric import Albu, PhotoMetricDistortion

__all__ = ['LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomResize', 'RandomFlip', 'Pad',
           'PhotoMetricDistortion', 'Albu', 'PackInputs']
