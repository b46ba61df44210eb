"""ResNet with RefineDet's extra residual block ("res6"), for RefineDet ResNet-101.

RefineDet's ResNet-101 variant (reference/ANCHORS.md 3.1) takes its four sources from res3b3,
res4b22, res5c (the outputs of ``layer2``, ``layer3``, ``layer4``) and from one extra
bottleneck block of stride 2 after res5c (1x1 128, 3x3 128, 1x1 512, projection shortcut).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

from torch import Tensor, nn

from toolbox.engine.weights import load_weights
from toolbox.models.bases import BaseBackbone, kaiming_init_conv_norm
from toolbox.models.layers import build_norm_layer
from toolbox.registry import MODELS

from .resnet import Bottleneck, ResNet


@MODELS.register_module()
class RefineDetResNet(BaseBackbone):
    """``ResNet`` followed by one extra stride-2 ``Bottleneck`` on C5 (the C6 map).

    Input (B, 3, H, W). Five feature points: 0..3 are the ResNet's C2..C5 (strides 4..32),
    4 is C6 (stride 64, ``4 * extra_planes`` channels). The default ``out_indices=(1, 2, 3, 4)``
    gives RefineDet's sources (512, 1024, 2048, 512) channels at strides (8, 16, 32, 64) for
    depth >= 50.

    Args:
        depth: ResNet depth (101 in the paper; 18/34/50 work too).
        extra_planes: bottleneck width of the extra block (128, so it outputs 512 channels).
        frozen_stages, norm_eval, style, norm_cfg: passed to :class:`ResNet` (its
            ``frozen_modules`` are this backbone's). ``norm_eval`` applies to the ResNet only:
            the extra block is new and its norms always train (a 'FrozenBN' ``norm_cfg``
            becomes 'BN' there).
        pretrained: a torchvision-format checkpoint (or ``'torchvision://resnet101'``) loaded
            into ``self.resnet`` by ``init_weights()`` (see :class:`BaseBackbone`); building
            the model never reads or downloads it. The extra block keeps its initialisation.
        init_cfg: mmengine ``init_cfg``, e.g. ``dict(type='Pretrained', checkpoint=path)``.
        out_indices: feature points to return, ascending; must include 4 (C6), otherwise the
            extra block is unused (use :class:`ResNet`).
    """

    def __init__(self,
                 depth: int = 101,
                 extra_planes: int = 128,
                 frozen_stages: int = 1,
                 norm_eval: bool = True,
                 style: str = 'pytorch',
                 norm_cfg: dict | None = None,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None,
                 out_indices: Sequence[int] = (1, 2, 3, 4)):
        # norm_eval is the ResNet's (self.resnet.norm_eval): this module's train() must leave
        # the extra block's norms training, so the base gets norm_eval=False.
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=False, pretrained=pretrained, init_cfg=init_cfg)
        self.check_out_indices(5)
        if 4 not in self.out_indices:
            raise ValueError(f'RefineDetResNet out_indices must include 4 (C6, the extra '
                             f'block), got {self.out_indices}; without it use ResNet')
        if norm_eval and self.pretrained is None:
            warnings.warn('RefineDetResNet: norm_eval=True without pretrained weights keeps every '
                          'BatchNorm at its initial statistics (mean 0, var 1), so activations '
                          'grow block after block; train from scratch with norm_eval=False',
                          RuntimeWarning, stacklevel=2)
        # the ResNet always returns C5, which the extra block reads
        self._resnet_points = tuple(sorted({i for i in self.out_indices if i < 4} | {3}))
        self.resnet = ResNet(depth=depth, out_indices=self._resnet_points,
                             frozen_stages=frozen_stages, norm_eval=norm_eval, style=style,
                             norm_cfg=norm_cfg)
        in_ch = self.resnet.out_channels[-1]
        extra_out = extra_planes * Bottleneck.expansion
        # the new block's norms always train, even when the ResNet's are frozen
        extra_norm_cfg = dict(self.resnet.norm_cfg, requires_grad=True)
        if extra_norm_cfg.get('type') == 'FrozenBN':
            extra_norm_cfg['type'] = 'BN'
        # torchvision's layout (downsample.0 / downsample.1), as the ResNet's own blocks
        downsample = nn.Sequential(nn.Conv2d(in_ch, extra_out, 1, stride=2, bias=False),
                                   build_norm_layer(extra_norm_cfg, extra_out)[1])
        self.res6 = Bottleneck(in_ch, extra_planes, stride=2, downsample=downsample,
                               style=style, norm_cfg=extra_norm_cfg)

        channels = dict(zip(self._resnet_points, self.resnet.out_channels))
        strides = dict(zip(self._resnet_points, self.resnet.strides))
        channels[4], strides[4] = extra_out, strides[3] * 2
        self.out_channels = tuple(channels[i] for i in self.out_indices)
        self.strides = tuple(strides[i] for i in self.out_indices)

        self.reset_parameters()
        self.freeze_stages()

    def reset_parameters(self) -> None:
        """Kaiming-normal fan-out convs in the extra block (the ResNet initialised itself)."""
        kaiming_init_conv_norm(self.res6.modules())

    def frozen_modules(self) -> list[nn.Module]:
        """The ResNet's frozen stages (the extra block is never frozen)."""
        return self.resnet.frozen_modules()

    def load_pretrained(self, checkpoint: str, prefix_map=None) -> dict[str, list[str]]:
        """Load a torchvision-format ResNet checkpoint into ``self.resnet``; returns the
        :func:`load_weights` report (``fc.*`` unexpected)."""
        return load_weights(self.resnet, checkpoint, prefix_map=prefix_map)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, 3, H, W) -> the feature points in ``out_indices`` (default C3, C4, C5, C6)."""
        feats = dict(zip(self._resnet_points, self.resnet(x)))
        feats[4] = self.res6(feats[3])
        return tuple(feats[i] for i in self.out_indices)
