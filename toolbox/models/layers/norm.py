"""Norm layers built from config, in 2D and 3D, shared by every plugin.

A config names a *generic* norm type; ``spatial_dims`` picks the concrete layer, so one
``norm_cfg`` serves a 2D and a 3D network (UNETR-style blocks pass their ``spatial_dims``):

==========  ========================  =================================  ==============  ====
type        spatial_dims=2            spatial_dims=3                     spatial_dims=0  name
==========  ========================  =================================  ==============  ====
'BN'        nn.BatchNorm2d            nn.BatchNorm3d ('BN3d')            -               bn
'SyncBN'    nn.SyncBatchNorm          nn.SyncBatchNorm                   -               bn
'FrozenBN'  FrozenBatchNorm2d         FrozenBatchNormNd ('FrozenBN3d')   -               bn
'GN'        nn.GroupNorm              nn.GroupNorm                       -               gn
'LN'        ChannelsFirstLayerNorm    ChannelsFirstLayerNorm ('LN3d')    nn.LayerNorm    ln
            ('LN2d')
'IN'        nn.InstanceNorm2d         nn.InstanceNorm3d ('IN3d')         -               in
==========  ========================  =================================  ==============  ====

Inputs are (B, C, H, W) for ``spatial_dims=2``, (B, C, D, H, W) for 3 and token sequences
(B, N, C) for 0 (only 'LN' normalises tokens). ``name`` is mmcv's abbreviation, the attribute
name mmcv's ``ConvModule`` gives its norm (``.bn``, ``.gn``, ``.ln``, ``.in``), so that
OpenMMLab checkpoints load.

mmcv registers 'BN', 'BN3d', 'SyncBN', 'GN', 'LN' (plain ``nn.LayerNorm``), 'IN' and 'IN3d' in
mmengine's root ``MODELS`` registry. This module registers the ones mmcv lacks there too, which
is where mmcv's ``build_norm_layer`` and therefore ``ConvModule(norm_cfg=...)`` look them up:

* 'FrozenBN' (also 'FrozenBN2d'): torchvision's ``FrozenBatchNorm2d``;
* 'FrozenBN3d': :class:`FrozenBatchNormNd`, its any-dimension equivalent;
* 'LN2d', 'LN3d': :class:`ChannelsFirstLayerNorm`, LayerNorm over the channels of a conv map.

So ``ConvModule(..., norm_cfg=dict(type='FrozenBN'))`` works, and a 3D block writes
``ConvModule(..., conv_cfg=dict(type='Conv3d'), norm_cfg=resolve_norm_cfg(norm_cfg, 3))``.
Give ``ConvModule`` a resolved config when the type may be 'LN': mmcv's own 'LN' is the plain
``nn.LayerNorm``, which normalises the last (width) dimension of a conv map.
"""
from __future__ import annotations

import torch.nn.functional as F
from mmcv.cnn import build_norm_layer as mmcv_build_norm_layer
from mmengine.registry import MODELS as ROOT_MODELS
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d


class FrozenBatchNormNd(FrozenBatchNorm2d):
    """BatchNorm with fixed statistics and affine for inputs of any rank, e.g. (B, C, D, H, W).

    ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`` per channel (dim 1),
    i.e. an eval-mode BatchNorm with the same buffers. Like torchvision's ``FrozenBatchNorm2d``
    (which only takes 4D input) it has no parameters, only the buffers ``weight``, ``bias``,
    ``running_mean`` and ``running_var``, so BatchNorm state dicts load into it (their
    ``num_batches_tracked`` is dropped).
    """

    _abbr_ = 'bn'

    def forward(self, x: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(shape) + shift.reshape(shape)


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a channels-first map (B, C, *spatial), at each position.

    As ConvNeXt's ``LayerNorm2d`` and MONAI do: equal to ``nn.LayerNorm(C)`` applied to the map
    moved to channels-last. Parameters ``weight`` and ``bias`` of shape (C,), as
    ``nn.LayerNorm``; constructor keywords are ``nn.LayerNorm``'s (``eps``,
    ``elementwise_affine``, ``bias``).
    """

    _abbr_ = 'ln'

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.movedim(1, -1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.movedim(-1, 1)


ROOT_MODELS.register_module(name=['FrozenBN', 'FrozenBN2d'], module=FrozenBatchNorm2d)
ROOT_MODELS.register_module(name='FrozenBN3d', module=FrozenBatchNormNd)
ROOT_MODELS.register_module(name=['LN2d', 'LN3d'], module=ChannelsFirstLayerNorm)

# generic type -> {spatial_dims: registered concrete type}
NORM_TYPES: dict[str, dict[int, str]] = {
    'BN': {2: 'BN', 3: 'BN3d'},
    'SyncBN': {2: 'SyncBN', 3: 'SyncBN'},
    'FrozenBN': {2: 'FrozenBN', 3: 'FrozenBN3d'},
    'GN': {2: 'GN', 3: 'GN'},
    'LN': {0: 'LN', 2: 'LN2d', 3: 'LN3d'},
    'IN': {2: 'IN', 3: 'IN3d'},
}
# concrete types that only fit one spatial_dims (accepted when they match it)
_DIMS_OF_CONCRETE = {'BN2d': 2, 'BN3d': 3, 'FrozenBN2d': 2, 'FrozenBN3d': 3, 'LN2d': 2,
                     'LN3d': 3, 'IN2d': 2, 'IN3d': 3}


def resolve_norm_cfg(cfg: dict, spatial_dims: int = 2) -> dict:
    """Copy of ``cfg`` whose ``type`` is the concrete registered type for ``spatial_dims``.

    ``resolve_norm_cfg(dict(type='BN', momentum=0.01), 3)`` is ``dict(type='BN3d',
    momentum=0.01)``; a type that already names one dimensionality ('BN3d', 'IN2d', 'LN2d', ...)
    is kept if it matches ``spatial_dims``. The result can go to mmcv's ``ConvModule``.

    Args:
        cfg: ``dict(type=..., requires_grad=True, **layer_kwargs)``, see the module docstring.
        spatial_dims: 2 (B, C, H, W), 3 (B, C, D, H, W) or 0 (token sequences (B, N, C)).

    Raises:
        TypeError: ``cfg`` is not a dict.
        ValueError: unknown type, or a type that has no layer for ``spatial_dims``.
    """
    if not isinstance(cfg, dict):
        raise TypeError(f'a norm config must be a dict such as dict(type="BN"), got {cfg!r}')
    if spatial_dims not in (0, 2, 3):
        raise ValueError(f'spatial_dims must be 2, 3 or 0 (token sequences), got {spatial_dims}')
    cfg = dict(cfg)
    norm_type = cfg.get('type')
    if norm_type in _DIMS_OF_CONCRETE:
        if _DIMS_OF_CONCRETE[norm_type] != spatial_dims:
            raise ValueError(f"norm type '{norm_type}' is for spatial_dims="
                             f"{_DIMS_OF_CONCRETE[norm_type]}, got spatial_dims={spatial_dims};"
                             f" give the generic type to pick the layer by spatial_dims")
        return cfg
    if norm_type not in NORM_TYPES:
        raise ValueError(f"norm type {norm_type!r} is not supported; use one of "
                         f"{sorted(NORM_TYPES)} (or a dimension-specific one of "
                         f"{sorted(_DIMS_OF_CONCRETE)})")
    by_dims = NORM_TYPES[norm_type]
    if spatial_dims not in by_dims:
        raise ValueError(f"norm type '{norm_type}' has no layer for spatial_dims={spatial_dims}"
                         f" (it supports {sorted(by_dims)}; token sequences take 'LN')")
    cfg['type'] = by_dims[spatial_dims]
    return cfg


def build_norm_layer(cfg: dict, num_features: int,
                     spatial_dims: int = 2) -> tuple[str, nn.Module]:
    """Build a norm layer from ``dict(type=..., requires_grad=True, **kwargs)``.

    Types and layers are in the module docstring. Other keys (``eps``, ``momentum``,
    ``num_groups``, ``affine``, ...) go to the layer; 'GN' needs ``num_groups``.
    ``requires_grad=False`` freezes the affine parameters (FrozenBN has none).

    Args:
        cfg: the norm config.
        num_features: channels C of the input.
        spatial_dims: 2 for (B, C, H, W), 3 for (B, C, D, H, W), 0 for (B, N, C).

    Returns:
        (name, layer): ``name`` is mmcv's abbreviation ('bn', 'gn', 'ln' or 'in'), the attribute
        name ConvModule-style blocks give the norm so that mmdet / mmseg checkpoints load.
    """
    resolved = resolve_norm_cfg(cfg, spatial_dims)
    if resolved['type'] == 'GN' and 'num_groups' not in resolved:
        raise ValueError(f"norm type 'GN' needs num_groups, e.g. dict(type='GN', "
                         f"num_groups=32); got {cfg}")
    try:
        return mmcv_build_norm_layer(resolved, num_features)
    except TypeError as exc:  # a keyword the layer does not take
        raise TypeError(f'norm config {cfg} (built as {resolved["type"]}): {exc}') from exc
