"""Norm layers built from config, shared by every plugin."""
from __future__ import annotations

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

# norm type -> (attribute abbreviation used by mmcv's ConvModule, factory(num_features, **kwargs))
_NORMS = {
    'BN': ('bn', nn.BatchNorm2d),
    'SyncBN': ('bn', nn.SyncBatchNorm),
    'FrozenBN': ('bn', FrozenBatchNorm2d),
    'GN': ('gn', lambda num_features, **kw: nn.GroupNorm(num_channels=num_features, **kw)),
}


def build_norm_layer(cfg: dict, num_features: int) -> tuple[str, nn.Module]:
    """Build a 2D norm layer from ``dict(type=..., requires_grad=True, **kwargs)``.

    Types: 'BN' (``nn.BatchNorm2d``), 'SyncBN' (``nn.SyncBatchNorm``), 'FrozenBN'
    (``torchvision.ops.FrozenBatchNorm2d``: fixed statistics and affine, no parameters) and
    'GN' (``nn.GroupNorm``, needs ``num_groups``). Other keys (``eps``, ``momentum``,
    ``num_groups``) go to the layer. ``requires_grad=False`` freezes the affine parameters.

    Returns:
        (name, layer): ``name`` is mmcv's abbreviation ('bn' or 'gn'), the attribute name
        ConvModule-style blocks give the norm so that mmdet checkpoints load.
    """
    kwargs = dict(cfg)
    norm_type = kwargs.pop('type', None)
    requires_grad = kwargs.pop('requires_grad', True)
    if norm_type not in _NORMS:
        raise ValueError(f"norm type '{norm_type}' is not supported; use one of {sorted(_NORMS)}")
    name, factory = _NORMS[norm_type]
    layer = factory(num_features, **kwargs)
    for param in layer.parameters():
        param.requires_grad = requires_grad
    return name, layer
