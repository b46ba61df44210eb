"""Abstract bases every plugin builds on (see docs/architecture.md for each contract)."""
from .backbone import BaseBackbone
from .decode_head import BaseDecodeHead, fit_to, resize
from .dense_head import BaseDenseHead, DenseTargets
from .init import apply_init_cfg, kaiming_init_conv_norm, pretrained_to_init_cfg
from .roi_head import BaseRoIHead, MultiLevelRoIAlign, proposals_to_rois

__all__ = ['BaseBackbone', 'BaseDecodeHead', 'BaseDenseHead', 'BaseRoIHead', 'DenseTargets',
           'MultiLevelRoIAlign', 'fit_to', 'apply_init_cfg', 'kaiming_init_conv_norm',
           'pretrained_to_init_cfg', 'proposals_to_rois', 'resize']
