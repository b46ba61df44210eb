"""Layer glue shared by every plugin (conv / norm / activation bricks themselves come from
``mmcv.cnn``): norms by config, deformable convs, and modules inserted into backbones by config
(stage plugins)."""
from .deform_conv import (DCN_TYPES, DeformConv2dPack, ModulatedDeformConv2dPack, build_conv,
                          check_stage_with_dcn, deform_conv_forward, init_deform_convs)
from .fuse import fuse_conv_bn
from .norm import (NORM_TYPES, ChannelsFirstLayerNorm, FrozenBatchNormNd, build_norm_layer,
                   resolve_norm_cfg)
from .stage_plugins import (PLUGIN_POSITIONS, build_plugin_sequence, parse_plugins,
                            select_stage_plugins)

__all__ = ['DCN_TYPES', 'DeformConv2dPack', 'ModulatedDeformConv2dPack', 'build_conv',
           'check_stage_with_dcn', 'deform_conv_forward', 'init_deform_convs', 'NORM_TYPES',
           'ChannelsFirstLayerNorm', 'FrozenBatchNormNd', 'fuse_conv_bn',
           'build_norm_layer', 'resolve_norm_cfg', 'PLUGIN_POSITIONS', 'build_plugin_sequence',
           'parse_plugins', 'select_stage_plugins']
