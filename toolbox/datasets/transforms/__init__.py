from .formatting import PackInputs
from .geometric import (Pad, RandomChoiceResize, RandomFlip, RandomResize, RandomSizeCrop,
                        Resize)
from .loading import LoadAnnotations, LoadImageFromFile
from .photometric import Albu, PhotoMetricDistortion
from .seg_transforms import RandomCrop, RemapLabels
from .ssd_augment import Expand, MinIoURandomCrop

__all__ = ['LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomResize', 'RandomFlip', 'Pad',
           'PhotoMetricDistortion', 'Albu', 'PackInputs', 'Expand', 'MinIoURandomCrop']
__all__ += ['RandomCrop', 'RemapLabels']
__all__ += ['RandomChoiceResize', 'RandomSizeCrop']
