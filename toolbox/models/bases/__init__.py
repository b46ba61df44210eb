"""Abstract bases every plugin builds on (see docs/architecture.md for each contract)."""
from .backbone import BaseBackbone
from .init import apply_init_cfg, pretrained_to_init_cfg

__all__ = ['BaseBackbone', 'apply_init_cfg', 'pretrained_to_init_cfg']
