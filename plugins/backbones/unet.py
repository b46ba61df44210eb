"""U-Net encoder (Ronneberger, Fischer and Brox 2015), the contracting path, in 2D or 3D.

Stage i (0 .. ``num_stages - 1``) has ``base_channels * 2 ** i`` channels: a 2x max-pool (not
in stage 0), then two [3x3 conv -> norm -> ReLU]. Paper: base 64, 5 stages (64 ... 1024), no
norm. The decoder (the expanding path) is ``decode_heads/unet_head.py``'s ``UNetHead``, as
UNETR splits into a ViT backbone and ``UNETRHead``.

Unlike the paper's unpadded ("valid") convs, which shrink each map by 4 pixels per stage and
need a 572x572 input for a 388x388 output, every conv here is padded by 1 ("same"), so stage i
is exactly ``floor(S / 2 ** i)`` (max-pools floor odd sizes) and the decoder restores any size:
``size_divisor`` stays 1.

Layers: ``stages.{i}``, an ``nn.Sequential`` of [``MaxPool``,] two mmcv ``ConvModule``
(``.conv``, and ``.bn`` / ``.in`` ... with a norm, whose convs then have no bias).
"""
from __future__ import annotations

from collections.abc import Sequence

from mmcv.cnn import ConvModule
from torch import Tensor, nn

from toolbox.models.bases import BaseBackbone, kaiming_init_conv_norm
from toolbox.models.layers import resolve_norm_cfg
from toolbox.registry import MODELS


def double_conv(in_channels: int, out_channels: int, spatial_dims: int,
                norm_cfg: dict | None) -> list[nn.Module]:
    """Two size-preserving 3x3 (3x3x3) conv -> norm -> ReLU blocks: (B, in, *s) ->
    (B, out, *s). Convs have a bias only without a norm."""
    conv_cfg = dict(type='Conv3d') if spatial_dims == 3 else None
    norm_cfg = None if norm_cfg is None else resolve_norm_cfg(norm_cfg, spatial_dims)
    return [ConvModule(c_in, out_channels, 3, padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg)
            for c_in in (in_channels, out_channels)]


@MODELS.register_module()
class UNetEncoder(BaseBackbone):
    """U-Net contracting path (see the module docstring).

    Input (B, in_channels, *S) with S = (H, W) or (D, H, W); output ``k`` is stage
    ``out_indices[k]``: (B, base_channels * 2 ** i, *floor(S / 2 ** i)), strides 1, 2, 4, 8, 16
    for the default 5 stages.

    Args:
        in_channels: channels of the input (1 for the paper's microscopy, 3 for RGB).
        base_channels: width of stage 0 (64 in the paper).
        num_stages: stages, the first without pooling (5 in the paper).
        spatial_dims: 2 (Conv2d, MaxPool2d) or 3 (Conv3d, MaxPool3d).
        norm_cfg: norm after each conv, by generic type (``dict(type='BN')``,
            ``dict(type='IN')`` for 3D medical volumes, ...: see
            ``toolbox.models.layers.build_norm_layer``); ``None``: biased convs without norm
            (the paper).
        out_indices: stages returned, ascending; default all (what ``UNetHead`` reads).
        frozen_stages: stages ``0 .. frozen_stages`` are frozen (-1: none).
        norm_eval: keep every BatchNorm in eval mode in training.
        pretrained, init_cfg: see ``BaseBackbone``.
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_stages: int = 5,
                 spatial_dims: int = 2, norm_cfg: dict | None = dict(type='BN'),
                 out_indices: Sequence[int] | None = None, frozen_stages: int = -1,
                 norm_eval: bool = False, pretrained: str | None = None,
                 init_cfg: dict | list | None = None):
        if spatial_dims not in (2, 3):
            raise ValueError(f'UNetEncoder: spatial_dims must be 2 or 3, got {spatial_dims}')
        if num_stages < 2:
            raise ValueError(f'UNetEncoder: num_stages must be >= 2, got {num_stages}')
        if not -1 <= frozen_stages < num_stages:
            raise ValueError(f'UNetEncoder: frozen_stages must be in -1..{num_stages - 1}, got '
                             f'{frozen_stages}')
        out_indices = tuple(range(num_stages)) if out_indices is None else tuple(out_indices)
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, pretrained=pretrained, init_cfg=init_cfg)
        self.check_out_indices(num_stages)
        self.spatial_dims = spatial_dims
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        widths = [base_channels * 2 ** i for i in range(num_stages)]
        self.stages = nn.ModuleList(
            nn.Sequential(*([pool(2)] if i > 0 else []),
                          *double_conv(widths[i - 1] if i > 0 else in_channels, width,
                                       spatial_dims, norm_cfg))
            for i, width in enumerate(widths))
        self.out_channels = tuple(widths[i] for i in self.out_indices)
        self.strides = tuple(2 ** i for i in self.out_indices)
        kaiming_init_conv_norm(self.modules(), any_dim=True)
        self.freeze_stages()

    def frozen_modules(self) -> list[nn.Module]:
        return list(self.stages[:self.frozen_stages + 1])

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, in_channels, *S) -> the stage outputs in ``out_indices``."""
        outs = []
        for i, stage in enumerate(self.stages[:self.out_indices[-1] + 1]):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
