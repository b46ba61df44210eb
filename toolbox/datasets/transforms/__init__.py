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
from .volume import LoadVolume, LoadVolumeAnnotation, NormalizeIntensity, PadToMultiple, RandCropByPosNegLabel, RandFlip3D, RandRotate90, ScaleIntensityRange, Spacing, SpatialPad, VolumeTransform  # noqa: E402,E501
__all__ += ['LoadVolume', 'LoadVolumeAnnotation', 'ScaleIntensityRange', 'NormalizeIntensity', 'Spacing', 'PadToMultiple', 'SpatialPad', 'RandCropByPosNegLabel', 'RandFlip3D', 'RandRotate90', 'VolumeTransform']  # noqa: E501
from .mix import MixUp, Mosaic, RandomAffine  # noqa: E402
__all__ += ['Mosaic', 'RandomAffine', 'MixUp']
from .copy_paste import CopyPaste  # noqa: E402
__all__ += ['CopyPaste']
