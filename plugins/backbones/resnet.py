"""ResNet backbones (He et al. 2016) in torchvision's layout, with dilation for DeepLab,
hybrid dilated convolution, deformable convs and stage plugins.

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4`` with
``{i}.conv1/bn1/conv2/bn2/conv3/bn3/downsample.0/downsample.1``; no ``fc``), so torchvision and
timm ResNet state dicts load without renaming (their ``fc.*`` is reported as unexpected). For
that reason the blocks hold plain ``conv``/``bn`` attributes rather than mmcv ``ConvModule``s
(whose keys would read ``conv1.conv`` / ``conv1.bn``). The options add keys and rename none:
a deformable ``conv2`` keeps ``conv2.weight`` and gains ``conv2.conv_offset.*``; plugins live
under ``plugins_<position>`` (``layer2.0.plugins_after_conv2.0.*``,
``plugins_after_stage.layer2.*``, ``plugins_input.*``), so a torchvision checkpoint still loads,
reporting only the new keys as missing.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from toolbox.models.bases import BaseBackbone, kaiming_init_conv_norm
from toolbox.models.layers import (build_conv, build_norm_layer, build_plugin_sequence,
                                   check_stage_with_dcn, init_deform_convs, parse_plugins,
                                   select_stage_plugins)
from toolbox.registry import MODELS


def _norm(cfg: dict, num_features: int) -> nn.Module:
    return build_norm_layer(cfg, num_features)[1]


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1,
             dcn: dict | None = None) -> nn.Module:
    return build_conv(dcn, in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation)


def _plug(plugins: nn.Module | None, x: Tensor) -> Tensor:
    return x if plugins is None else plugins(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual: (B, inplanes, H, W) -> (B, planes, H/stride, W/stride).

    ``dcn`` makes the second 3x3 conv (``conv2``, stride 1) deformable; ``plugins`` maps
    ``'after_conv1'`` (after relu(bn1)) / ``'after_conv2'`` (after bn2, before the residual
    add) to module configs (:mod:`toolbox.models.layers.stage_plugins`).
    """

    expansion = 1
    plugin_positions = ('after_conv1', 'after_conv2')

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, style: str = 'pytorch',
                 norm_cfg: dict | None = None, dcn: dict | None = None,
                 plugins: dict[str, list[dict]] | None = None):
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN')
        plugins = plugins or {}
        self.conv1 = _conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = _norm(norm_cfg, planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilation, dcn)
        self.bn2 = _norm(norm_cfg, planes)
        self.downsample = downsample
        self.plugins_after_conv1 = build_plugin_sequence(plugins.get('after_conv1'), planes)
        self.plugins_after_conv2 = build_plugin_sequence(plugins.get('after_conv2'), planes)

    def last_norm(self) -> nn.Module:
        return self.bn2

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = _plug(self.plugins_after_conv1, self.relu(self.bn1(self.conv1(x))))
        out = _plug(self.plugins_after_conv2, self.bn2(self.conv2(out)))
        out += identity  # in place, as torchvision: one full-size tensor less per block
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) with a residual.

    ``style='pytorch'`` puts the stride on the 3x3 conv (torchvision, "ResNet v1.5");
    ``style='caffe'`` puts it on the first 1x1 conv (original paper, caffe-style checkpoints).
    ``dcn`` makes the 3x3 conv (``conv2``) deformable, as mmdet and detectron2. ``plugins`` maps
    ``'after_conv1'`` / ``'after_conv2'`` (after that conv's norm and ReLU) and
    ``'after_conv3'`` (after bn3, before the residual add) to module configs.
    """

    expansion = 4
    plugin_positions = ('after_conv1', 'after_conv2', 'after_conv3')

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, style: str = 'pytorch',
                 norm_cfg: dict | None = None, dcn: dict | None = None,
                 plugins: dict[str, list[dict]] | None = None):
        super().__init__()
        norm_cfg = norm_cfg or dict(type='BN')
        plugins = plugins or {}
        stride_1x1, stride_3x3 = (stride, 1) if style == 'caffe' else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=stride_1x1, bias=False)
        self.bn1 = _norm(norm_cfg, planes)
        self.conv2 = _conv3x3(planes, planes, stride_3x3, dilation, dcn)
        self.bn2 = _norm(norm_cfg, planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = _norm(norm_cfg, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.plugins_after_conv1 = build_plugin_sequence(plugins.get('after_conv1'), planes)
        self.plugins_after_conv2 = build_plugin_sequence(plugins.get('after_conv2'), planes)
        self.plugins_after_conv3 = build_plugin_sequence(plugins.get('after_conv3'),
                                                         planes * self.expansion)

    def last_norm(self) -> nn.Module:
        return self.bn3

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = _plug(self.plugins_after_conv1, self.relu(self.bn1(self.conv1(x))))
        out = _plug(self.plugins_after_conv2, self.relu(self.bn2(self.conv2(out))))
        out = _plug(self.plugins_after_conv3, self.bn3(self.conv3(out)))
        out += identity  # in place, as torchvision: one full-size tensor less per block
        return self.relu(out)


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
        block_dilations: hybrid dilated convolution (HDC, Wang et al. 2018, "Understanding
            Convolution for Semantic Segmentation"): per stage ``None`` (the ``dilations`` /
            ``multi_grid`` rule above) or a tuple of rates cycled over the stage's blocks,
            block j getting ``rates[j % len(rates)]`` (the first block included; the next
            stage's first block still uses ``dilations`` of this stage). Rates such as
            (1, 2, 5) without a common factor cover every pixel of the receptive field, where
            a constant rate leaves a grid of holes ("gridding"). DeepLab-style ResNet-101 at
            output stride 8 with HDC in the last two stages::

                ResNet(depth=101, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
                       block_dilations=(None, None, (1, 2, 5), (5, 9, 17)))

            (layer3's 23 blocks get 1, 2, 5, 1, 2, 5, ..., layer4's 5, 9, 17). Not combined
            with ``multi_grid`` (both set layer4's rates).
        dcn: deformable conv config for the 3x3 conv ``conv2`` of the blocks of the stages
            selected by ``stage_with_dcn``: ``dict(type='DCN', deform_groups=1)`` (v1, Dai et
            al. 2017) or ``dict(type='DCNv2', deform_groups=1)`` (modulated, Zhu et al. 2019),
            mmdet's names (:func:`toolbox.models.layers.build_conv`). In a Bottleneck that is
            the conv carrying the stride in 'pytorch' style (as mmdet and detectron2, which
            support Bottleneck only); in a BasicBlock it is the second 3x3 conv (stride 1), our
            choice, so that the offsets are predicted at the block's output resolution. Its
            ``conv_offset`` starts at zero (a regular grid; DCNv2's mask then halves conv2's
            output until it is learned).
        stage_with_dcn: one bool per stage; must select a stage when ``dcn`` is given and
            none when it is not.
        plugins: modules inserted by config, mmdet's format
            (:mod:`toolbox.models.layers.stage_plugins`), e.g.
            ``[dict(cfg=dict(type='SE', ratio=1 / 16), stages=(False, True, True, True),
            position='after_conv2')]``. Positions: 'after_conv1', 'after_conv2',
            'after_conv3' (Bottleneck only), 'after_stage', 'input'. Plugins keep their own
            initialisation; an 'after_stage' plugin is frozen with its stage, an 'input' one
            is never frozen.
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
                 block_dilations: Sequence[Sequence[int] | None] = (None, None, None, None),
                 dcn: dict | None = None,
                 stage_with_dcn: Sequence[bool] = (False, False, False, False),
                 plugins: Sequence[dict] | None = None,
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
        block_dilations = self._check_block_dilations(block_dilations, multi_grid)
        stage_with_dcn = check_stage_with_dcn(dcn, stage_with_dcn, 'ResNet')
        self.plugins = parse_plugins(
            plugins, block.plugin_positions + ('after_stage', 'input'),
            owner=f'ResNet-{depth} ({block.__name__})')

        self.depth = depth
        self.zero_init_residual = zero_init_residual
        self.norm_cfg = dict(norm_cfg or dict(type='BN', requires_grad=True))

        self.plugins_input = build_plugin_sequence(
            select_stage_plugins(self.plugins, None).get('input'), in_channels)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(self.norm_cfg, 64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        inplanes = 64
        stage_out_channels, stage_strides = [], []
        stage_plugins = {}
        total_stride = 4
        for i in range(4):
            planes = 64 * 2 ** i
            if block_dilations[i] is not None:
                rates = [block_dilations[i][j % len(block_dilations[i])]
                         for j in range(num_blocks[i])]
            elif i == 3 and multi_grid is not None:
                rates = [dilations[3] * g for g in multi_grid]
            else:
                rates = [dilations[i - 1] if i > 0 else 1] + [dilations[i]] * (num_blocks[i] - 1)
            plugins_here = select_stage_plugins(self.plugins, i)
            layer = self._make_layer(block, inplanes, planes, strides[i], rates, style,
                                     dcn if stage_with_dcn[i] else None, plugins_here)
            self.add_module(f'layer{i + 1}', layer)
            inplanes = planes * block.expansion
            after_stage = build_plugin_sequence(plugins_here.get('after_stage'), inplanes)
            if after_stage is not None:
                stage_plugins[f'layer{i + 1}'] = after_stage
            total_stride *= strides[i]
            stage_out_channels.append(inplanes)
            stage_strides.append(total_stride)
        self.plugins_after_stage = nn.ModuleDict(stage_plugins) if stage_plugins else None
        self.out_channels = tuple(stage_out_channels[i] for i in self.out_indices)
        self.strides = tuple(stage_strides[i] for i in self.out_indices)

        self.reset_parameters()
        self.freeze_stages()

    @staticmethod
    def _check_block_dilations(block_dilations, multi_grid) -> tuple:
        block_dilations = tuple(None if rates is None else tuple(rates)
                                for rates in block_dilations)
        if len(block_dilations) != 4:
            raise ValueError(f'block_dilations needs 4 entries (None or a tuple of rates per '
                             f'stage), got {block_dilations}')
        for rates in block_dilations:
            if rates is not None and (not rates or not all(
                    isinstance(r, int) and r >= 1 for r in rates)):
                raise ValueError(f'block_dilations: each entry must be None or a non-empty '
                                 f'tuple of positive ints, got {block_dilations}')
        if multi_grid is not None and block_dilations[3] is not None:
            raise ValueError('give multi_grid or block_dilations[3] (both set the rates of '
                             'layer4), not both')
        return block_dilations

    def _make_layer(self, block, inplanes: int, planes: int, stride: int,
                    block_dilations: list[int], style: str, dcn: dict | None,
                    plugins: dict[str, list[dict]]) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                _norm(self.norm_cfg, planes * block.expansion))
        blocks = []
        for j, dilation in enumerate(block_dilations):
            blocks.append(block(inplanes, planes, stride=stride if j == 0 else 1,
                                dilation=dilation, downsample=downsample if j == 0 else None,
                                style=style, norm_cfg=self.norm_cfg, dcn=dcn, plugins=plugins))
            inplanes = planes * block.expansion
        return nn.Sequential(*blocks)

    def reset_parameters(self) -> None:
        """torchvision's initialisation: Kaiming-normal fan-out convs (deformable ones too, with
        a zero ``conv_offset``), unit-scale norms. Plugins keep their own initialisation."""
        host = [m for name, m in self.named_modules()
                if not any(part.startswith('plugins_') for part in name.split('.'))]
        kaiming_init_conv_norm(host)
        init_deform_convs(host)
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.last_norm().weight.data.zero_()  # FrozenBN keeps its weight as a buffer

    def frozen_modules(self) -> list[nn.Module]:
        """The stem (conv1, bn1) and layer1..layer{frozen_stages} with their 'after_stage'
        plugins."""
        if self.frozen_stages < 0:
            return []
        modules = [self.conv1, self.bn1]
        for i in range(1, self.frozen_stages + 1):
            modules.append(getattr(self, f'layer{i}'))
            if self.plugins_after_stage is not None and f'layer{i}' in self.plugins_after_stage:
                modules.append(self.plugins_after_stage[f'layer{i}'])
        return modules

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, C, H, W) -> tuple of C2..C5 maps selected by ``out_indices``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(_plug(self.plugins_input, x)))))
        outs = []
        for i in range(4):
            name = f'layer{i + 1}'
            x = getattr(self, name)(x)
            if self.plugins_after_stage is not None and name in self.plugins_after_stage:
                x = self.plugins_after_stage[name](x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
