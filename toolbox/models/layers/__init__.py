"""Layer glue shared by every plugin (conv / norm / activation bricks themselves come from
``mmcv.cnn``)."""
from .norm import (NORM_TYPES, ChannelsFirstLayerNorm, FrozenBatchNormNd, build_norm_layer,
                   resolve_norm_cfg)

__all__ = ['NORM_TYPES', 'ChannelsFirstLayerNorm', 'FrozenBatchNormNd', 'build_norm_layer',
           'resolve_norm_cfg']
