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
from toolbox.models.layers import build_norm_layer
from toolbox.registry import MODELS

from .resnet import Bottleneck, ResNet


@MODELS.register_module()
class RefineDetResNet(nn.Module):
    """``ResNet`` (C3, C4, C5) followed by one extra stride-2 ``Bottleneck`` (C6).

    Input (B, 3, H, W); output 4 maps with ``out_channels`` (512, 1024, 2048,
    4 * extra_planes) for depth >= 50 at strides (8, 16, 32, 64).

    Args:
        depth: ResNet depth (101 in the paper; 18/34/50 work too).
        extra_planes: bottleneck width of the extra block (128, so it outputs 512 channels).
        frozen_stages, norm_eval, style, norm_layer: passed to :class:`ResNet`.
            ``norm_eval`` applies to the ResNet only: the extra block is new and its norms
            always train.
        pretrained: a torchvision-format checkpoint (or ``'torchvision://resnet101'``) loaded
            into ``self.resnet`` by ``init_weights()`` (the Runner calls it when training
            starts, before ``load_from``) through :func:`load_weights`, which logs what was
            not loaded; building the model never reads or downloads it. The extra block
            keeps its initialisation.
        init_cfg: alternative to ``pretrained``: ``dict(type='Pretrained', checkpoint=path)``.
    """

    def __init__(self,
                 depth: int = 101,
                 extra_planes: int = 128,
                 frozen_stages: int = 1,
                 norm_eval: bool = True,
                 style: str = 'pytorch',
                 norm_layer: dict | None = None,
                 pretrained: str | None = None,
                 init_cfg: dict | None = None,
                 out_indices: Sequence[int] = (1, 2, 3)):
        super().__init__()
        if init_cfg is not None:
            if pretrained is not None:
                raise ValueError('give either pretrained or init_cfg, not both')
            if init_cfg.get('type') != 'Pretrained' or 'checkpoint' not in init_cfg:
                raise ValueError(f"RefineDetResNet init_cfg must be dict(type='Pretrained', "
                                 f"checkpoint=PATH), got {init_cfg}")
            pretrained = init_cfg['checkpoint']
        if norm_eval and pretrained is None:
            warnings.warn('RefineDetResNet: norm_eval=True without pretrained weights keeps every '
                          'BatchNorm at its initial statistics (mean 0, var 1), so activations '
                          'grow block after block; train from scratch with norm_eval=False',
                          RuntimeWarning, stacklevel=2)
        self.resnet = ResNet(depth=depth, out_indices=tuple(out_indices),
                             frozen_stages=frozen_stages, norm_eval=norm_eval, style=style,
                             norm_layer=norm_layer)
        self.pretrained = pretrained
        in_ch = self.resnet.out_channels[-1]
        block = Bottleneck
        extra_out = extra_planes * block.expansion
        # the new block's norms always train, even when the ResNet's are frozen
        norm_cfg = dict(self.resnet.norm_cfg, requires_grad=True)
        if norm_cfg.get('type') == 'FrozenBN':
            norm_cfg['type'] = 'BN'
        downsample = nn.Sequential(nn.Conv2d(in_ch, extra_out, 1, stride=2, bias=False),
                                   build_norm_layer(norm_cfg, extra_out)[1])
        self.res6 = block(in_ch, extra_planes, stride=2, downsample=downsample, style=style,
                          norm_cfg=norm_cfg)
        for m in self.res6.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
        self.out_channels = (*self.resnet.out_channels, extra_out)
        self.strides = (*self.resnet.strides, self.resnet.strides[-1] * 2)

    def init_weights(self) -> dict[str, list[str]] | None:
        """Load ``pretrained`` into ``self.resnet``; returns the load report (None without
        ``pretrained``)."""
        if self.pretrained is None:
            return None
        return load_weights(self.resnet, self.pretrained)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, 3, H, W) -> (C3, C4, C5, C6) (or the ResNet stages picked by ``out_indices``,
        then C6)."""
        feats = self.resnet(x)
        return (*feats, self.res6(feats[-1]))
