from .class_counts import check_class_counts_support, dataset_class_counts
from .collate import flatten_collate
from .demo import make_demo_dataset
from .seeding import SeededDataset, SeededIndex, SeededSampler, seeded_train_dataloader
from .detection import AnnotationError, CocoDataset, DetectionDataset, VOCDataset
from .transforms import *  # noqa: F401,F403  (registers the transforms)
from .segmentation import BaseSegDataset, CamVidDataset, FolderSegDataset, VOCSegDataset
from .samplers import ClassBalancedSampler, RepeatFactorSampler
from .medical import DecathlonDataset

__all__ = ['DetectionDataset', 'CocoDataset', 'VOCDataset', 'AnnotationError',
           'make_demo_dataset', 'BaseSegDataset', 'VOCSegDataset', 'CamVidDataset',
           'FolderSegDataset', 'dataset_class_counts', 'check_class_counts_support',
           'RepeatFactorSampler', 'ClassBalancedSampler', 'DecathlonDataset',
           'SeededDataset', 'SeededSampler', 'SeededIndex', 'seeded_train_dataloader',
           'flatten_collate']
from .wrappers import MixSwitchHook, MultiImageMixDataset  # noqa: E402
__all__ += ['MultiImageMixDataset', 'MixSwitchHook']
