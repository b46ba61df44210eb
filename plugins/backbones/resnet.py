"""ResNet backbones (He et al. 2016) in torchvision's layout, with dilation for DeepLab.

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4`` with
``{i}.conv1/bn1/conv2/bn2/conv3/bn3/downsample.0/downsample.1``; no ``fc``), so torchvision and
timm ResNet state dicts load without renaming (their ``fc.*`` is reported as unexpected). For
that reason the blocks hold plain ``conv``/``bn`` attributes rather than mmcv ``ConvModule``s
(whose keys would read ``conv1.conv`` / ``conv1.bn``).
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from toolbox.models.bases import BaseBackbone, kaiming_init_conv_norm
from toolbox.models.layers import build_norm_layer
from toolbox.registry import MODELS


def _norm(cfg: dict, num_features: int) -> nn.Module:
    return build_norm_layer(cfg, num_features)[1]


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation,
                     bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual: (B, inplanes, H, W) -> (B, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, style: str = 'pytorch',
                 norm_cfg: dict | None = None):
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN')
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = _norm(norm_cfg, planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = _norm(norm_cfg, planes)
        self.downsample = downsample

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a residual.

    ``style='pytorch'`` puts the stride on the 3x3 conv (torchvision, "ResNet v1.5");
    ``style='caffe'`` puts it on the first 1x1 conv (original paper, caffe-style checkpoints).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, style: str = 'pytorch',
                 norm_cfg: dict | None = None):
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN')
        stride_1x1, stride_3x3 = (stride, 1) if style == 'caffe' else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride_1x1, bias=False)
        self.bn1 = _norm(norm_cfg, planes)
        self.conv2 = _conv3x3(planes, planes, stride_3x3, dilation)
        self.bn2 = _norm(norm_cfg, planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = _norm(norm_cfg, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


@MODELS.register_module()
class ResNet(BaseBackbone):
    """ResNet-18/34/50/101/152 feature extractor returning C2..C5 (selected by ``out_indices``).

    Input (B, in_channels, H, W); output a tuple with one (B, out_channels[k], H/s_k, W/s_k) map
    per entry of ``out_indices``, where s_k = ``self.strides[k]`` (4, 8, 16, 32 by default).

    Args:
        depth: 18, 34 (BasicBlock) or 50, 101, 152 (Bottleneck).
        in_channels: channels of the input image.
        out_indices: stages whose output is returned (0 -> C2 ... 3 -> C5), ascending.
        frozen_stages: -1 freezes nothing, 0 the stem (conv1, bn1), k the stem and layer1..k:
            their parameters get ``requires_grad=False`` and they stay in eval mode.
        norm_eval: keep every BatchNorm in eval mode (running statistics frozen) in training.
        strides: stride of the first block of each stage.
        dilations: dilation of each stage. As torchvision's ``replace_stride_with_dilation``,
            the first block of a stage uses the previous stage's dilation (1 for layer1), e.g.
            DeepLab output stride 8 is ``strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)`` and
            output stride 16 is ``strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)``.
        multi_grid: unit rates of the last stage's blocks (DeepLabv3): block j of layer4 gets
            dilation ``dilations[3] * multi_grid[j]`` (the first block included), so
            ``multi_grid=(1, 2, 4)`` with ``dilations[3]=2`` gives rates (2, 4, 8). One entry
            per block of layer4.
        style: 'pytorch' (stride on the 3x3 conv) or 'caffe' (stride on the first 1x1 conv;
            only changes Bottleneck).
        norm_cfg: norm config (:func:`toolbox.models.layers.build_norm_layer`: 'BN', 'SyncBN',
            'FrozenBN', 'GN', 'LN', 'IN'); ``dict(type='BN')`` when ``None``.
        zero_init_residual: zero the last norm's weight in each block (Goyal et al. 2017).
        pretrained: path of a torchvision-format checkpoint (or ``'torchvision://resnet50'``),
            loaded by ``init_weights()`` (see :class:`BaseBackbone`); its ``fc.*`` is reported
            as unexpected.
        init_cfg: mmengine ``init_cfg``, e.g. ``dict(type='Pretrained', checkpoint=path)``.
    """

    arch_settings = {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }

    def __init__(self,
                 depth: int,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 strides: Sequence[int] = (1, 2, 2, 2),
                 dilations: Sequence[int] = (1, 1, 1, 1),
                 multi_grid: Sequence[int] | None = None,
                 style: str = 'pytorch',
                 norm_cfg: dict | None = None,
                 zero_init_residual: bool = False,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, pretrained=pretrained, init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise ValueError(f'ResNet depth must be one of {sorted(self.arch_settings)}, '
                             f'got {depth}')
        block, num_blocks = self.arch_settings[depth]
        strides, dilations = tuple(strides), tuple(dilations)
        if len(strides) != 4 or len(dilations) != 4:
            raise ValueError(f'strides and dilations need 4 entries (one per stage), got '
                             f'{strides} and {dilations}')
        self.check_out_indices(4)
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'frozen_stages must be in -1..4, got {frozen_stages}')
        if style not in ('pytorch', 'caffe'):
            raise ValueError(f"style must be 'pytorch' or 'caffe', got '{style}'")
        if multi_grid is not None and len(multi_grid) != num_blocks[3]:
            raise ValueError(f'multi_grid needs one entry per block of layer4 '
                             f'({num_blocks[3]} for depth {depth}), got {tuple(multi_grid)}')

        self.depth = depth
        self.zero_init_residual = zero_init_residual
        self.norm_cfg = dict(norm_cfg or dict(type='BN', requires_grad=True))

        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(self.norm_cfg, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        inplanes = 64
        stage_out_channels, stage_strides = [], []
        total_stride = 4
        for i in range(4):
            planes = 64 * 2 ** i
            block_dilations = [dilations[i - 1] if i > 0 else 1] + \
                [dilations[i]] * (num_blocks[i] - 1)
            if i == 3 and multi_grid is not None:
                block_dilations = [dilations[3] * g for g in multi_grid]
            layer = self._make_layer(block, inplanes, planes, strides[i], block_dilations, style)
            self.add_module(f'layer{i + 1}', layer)
            inplanes = planes * block.expansion
            total_stride *= strides[i]
            stage_out_channels.append(inplanes)
            stage_strides.append(total_stride)
        self.out_channels = tuple(stage_out_channels[i] for i in self.out_indices)
        self.strides = tuple(stage_strides[i] for i in self.out_indices)

        self.reset_parameters()
        self.freeze_stages()

    def _make_layer(self, block, inplanes: int, planes: int, stride: int,
                    block_dilations: list[int], style: str) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                _norm(self.norm_cfg, planes * block.expansion))
        blocks = []
        for j, dilation in enumerate(block_dilations):
            blocks.append(block(inplanes, planes, stride=stride if j == 0 else 1,
                                dilation=dilation, downsample=downsample if j == 0 else None,
                                style=style, norm_cfg=self.norm_cfg))
            inplanes = planes * block.expansion
        return nn.Sequential(*blocks)

    def reset_parameters(self) -> None:
        """torchvision's initialisation: Kaiming-normal fan-out convs, unit-scale norms."""
        kaiming_init_conv_norm(self.modules())
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.last_norm().weight.data.zero_()  # FrozenBN keeps its weight as a buffer

    def frozen_modules(self) -> list[nn.Module]:
        """The stem (conv1, bn1) and layer1..layer{frozen_stages}."""
        if self.frozen_stages < 0:
            return []
        return [self.conv1, self.bn1] + [getattr(self, f'layer{i}')
                                         for i in range(1, self.frozen_stages + 1)]

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, C, H, W) -> tuple of C2..C5 maps selected by ``out_indices``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(4):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
