"""VoVNet (Lee et al. 2019) and VoVNetV2 (CenterMask, Lee & Park 2020): one-shot aggregation.

An OSA module runs ``num_convs`` 3x3 conv+BN+ReLU in sequence, concatenates the module input
with *every* intermediate output once (one-shot, unlike DenseNet's aggregation at each layer)
and aggregates them with a 1x1 conv+BN+ReLU. V2 adds, per module, an effective
squeeze-excitation (eSE: global average pool, 1x1 conv *with bias* on all C channels, no
reduction, hard-sigmoid gate) and an identity mapping on every module of a stage but the first
(the first changes channels and follows the stage's max-pool). Architectures and counts:
reference/ANCHORS.md 1.2.

Where eSE sits differs between the two V2 references, so it is the argument ``ese_blocks``:
timm's ``ese_vovnet*b`` models put it on the *last* module of each stage (``'last'``, default);
the vovnet-detectron2 code builds it in *every* module (``'all'``; for V-39 that is 1.64M more
parameters: 25.18M instead of 23.54M).

Parameter names are timm's (``stem.{0,1,2}.{conv,bn}``, ``stages.{i}.blocks.{j}.conv_mid.{k}.
{conv,bn}``, ``...conv_concat.{conv,bn}``, ``...attn.fc``), so a timm ``vovnet39a`` /
``ese_vovnet39b`` state dict loads directly (its ``head.fc.*`` is reported as unexpected).
The deformable-conv and plugin options only add keys (``conv_mid.{k}.conv.conv_offset.*``,
``plugins_after_concat.*``, ``stages.{i}.plugins_after_stage.*``, ``plugins_input.*``).
:meth:`VoVNet.load_pretrained` also converts two other layouts:

* timm ``features_only`` models, which flatten ``stem.0`` / ``stages.0`` to ``stem_0`` /
  ``stages_0`` (:data:`TIMM_PREFIX_MAP`);
* the official checkpoints (stigma0617/VoVNet.pytorch v1, youngwanLEE/vovnet-detectron2 V2),
  whose names carry a literal ``/``: ``stem.stem_1/conv``, ``stage2.OSA2_1.layers.0.OSA2_1_0/norm``,
  ``stage2.OSA2_1.concat.OSA2_1_concat/conv``, ``stage2.OSA2_1.ese.fc``
  (:func:`convert_official_keys`). A detectron2 detector checkpoint prefixes them with
  ``backbone.bottom_up.``: pass ``prefix_map={'backbone.bottom_up.': ''}``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from mmcv.cnn import ConvModule
from mmengine.logging import print_log
from torch import Tensor, nn

from toolbox.engine.weights import load_weights, read_state_dict
from toolbox.models.bases import BaseBackbone, kaiming_init_conv_norm
from toolbox.models.layers import (build_conv, build_plugin_sequence, check_stage_with_dcn,
                                   init_deform_convs, parse_plugins, select_stage_plugins)
from toolbox.registry import MODELS

# timm features_only state dicts flatten ``stem.0`` to ``stem_0``; rename before matching.
TIMM_PREFIX_MAP = {f'stem_{i}.': f'stem.{i}.' for i in range(3)}
TIMM_PREFIX_MAP.update({f'stages_{i}.': f'stages.{i}.' for i in range(4)})

_WIDE = dict(stem=(64, 64, 128), mid=(128, 160, 192, 224), out=(256, 512, 768, 1024))
_SLIM_MID = (64, 80, 96, 112)
# version -> arch -> stem channels, 3x3 conv channels (mid) and output channels per stage,
# convs per OSA module, OSA modules per stage. v1: stigma0617/VoVNet.pytorch (= timm
# vovnet39a / vovnet57a); v2: vovnet-detectron2 _STAGE_SPECS (= timm ese_vovnet*b).
ARCH_SETTINGS: dict[int, dict[str, dict]] = {
    1: {
        'V-27-slim': dict(stem=(64, 64, 128), mid=_SLIM_MID, out=(128, 256, 384, 512),
                          num_convs=5, num_blocks=(1, 1, 1, 1)),
        'V-39': dict(**_WIDE, num_convs=5, num_blocks=(1, 1, 2, 2)),
        'V-57': dict(**_WIDE, num_convs=5, num_blocks=(1, 1, 4, 3)),
    },
    2: {
        'V-19-slim': dict(stem=(64, 64, 128), mid=_SLIM_MID, out=(112, 256, 384, 512),
                          num_convs=3, num_blocks=(1, 1, 1, 1)),
        'V-19': dict(**_WIDE, num_convs=3, num_blocks=(1, 1, 1, 1)),
        'V-39': dict(**_WIDE, num_convs=5, num_blocks=(1, 1, 2, 2)),
        'V-57': dict(**_WIDE, num_convs=5, num_blocks=(1, 1, 4, 3)),
        'V-99': dict(**_WIDE, num_convs=5, num_blocks=(1, 3, 9, 3)),
    },
}
ESE_BLOCKS = ('last', 'all', 'none')

_OFFICIAL_STEM = re.compile(r'stem\.stem_(\d+)/(conv|norm)\.(.+)')
_OFFICIAL_BLOCK = re.compile(
    r'stage(\d+)\.OSA\d+_(\d+)\.(?:layers\.(\d+)\.OSA\d+_\d+_\d+/(conv|norm)'
    r'|concat\.OSA\d+_\d+_concat/(conv|norm)|ese\.(fc))\.(.+)')


def convert_official_keys(state_dict: Mapping[str, Tensor],
                          norm_name: str = 'bn') -> dict[str, Tensor]:
    """Rename official VoVNet keys (stigma0617 v1, vovnet-detectron2 V2) to ours (timm's).

    ``stem.stem_{k}/{conv,norm}.*`` -> ``stem.{k-1}.{conv,<norm_name>}.*``;
    ``stage{s}.OSA{s}_{b}.layers.{k}.OSA{s}_{b}_{k}/...`` -> ``stages.{s-2}.blocks.{b-1}.
    conv_mid.{k}...``; ``...concat.OSA{s}_{b}_concat/...`` -> ``...conv_concat...``;
    ``...ese.fc.*`` -> ``...attn.fc.*``. Other keys (``classifier.*``, timm keys) are kept as they
    are, so a mixed or already converted dict passes through.
    """
    out = {}
    for key, value in state_dict.items():
        m = _OFFICIAL_STEM.fullmatch(key)
        if m:
            layer = norm_name if m[2] == 'norm' else 'conv'
            key = f'stem.{int(m[1]) - 1}.{layer}.{m[3]}'
        else:
            m = _OFFICIAL_BLOCK.fullmatch(key)
            if m:
                stage, block, conv, mid_layer, concat_layer, ese, rest = m.groups()
                prefix = f'stages.{int(stage) - 2}.blocks.{int(block) - 1}'
                if ese:
                    key = f'{prefix}.attn.fc.{rest}'
                elif conv is not None:
                    layer = norm_name if mid_layer == 'norm' else 'conv'
                    key = f'{prefix}.conv_mid.{conv}.{layer}.{rest}'
                else:
                    layer = norm_name if concat_layer == 'norm' else 'conv'
                    key = f'{prefix}.conv_concat.{layer}.{rest}'
        out[key] = value
    return out


class EffectiveSE(nn.Module):
    """eSE: ``x * hardsigmoid(fc(mean_hw(x)))``, (B, C, H, W) -> (B, C, H, W).

    ``fc`` is a 1x1 conv C -> C with bias (no channel reduction, unlike SE). The gate is
    torch's ``nn.Hardsigmoid`` (relu6(x + 3) / 6), the layer timm resolves its
    ``'hard_sigmoid'`` to, so outputs match timm's bit for bit; vovnet-detectron2 computes the
    same function as ``F.relu6(x + 3.) / 6.``. Not mmcv's ``HSigmoid``: same function in two
    ops, and it warns about its changed defaults each time one is built.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.fc(x.mean((2, 3), keepdim=True)))


def _conv_mid(in_ch: int, out_ch: int, dcn: dict | None, norm_cfg: dict,
              act_cfg: dict) -> ConvModule:
    """3x3 conv+norm+act, the conv deformable when ``dcn`` is given (key ``conv.weight`` kept).

    The deformable conv is swapped in after building: mmcv's ``conv_cfg`` is resolved in
    mmengine's root registry, where mmcv-lite has no deformable conv and where registering ours
    as 'DCN' / 'DCNv2' would collide with mmcv-full's ops in every OpenMMLab scope.
    """
    module = ConvModule(in_ch, out_ch, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg)
    if dcn is not None:
        module.conv = build_conv(dcn, in_ch, out_ch, 3, padding=1)
    return module


class OSAModule(nn.Module):
    """One-shot aggregation: (B, in_ch, H, W) -> (B, out_ch, H, W).

    ``conv_mid``: ``num_convs`` 3x3 conv+norm+act (in_ch -> mid_ch, then mid_ch -> mid_ch),
    deformable with ``dcn``; ``conv_concat``: 1x1 conv+norm+act over the concatenation [input,
    every conv_mid output] (in_ch + num_convs * mid_ch channels); then the ``plugins`` of
    position ``'after_concat'``, eSE (``ese``) and the identity mapping (``residual``: add the
    input; needs in_ch == out_ch).
    """

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, num_convs: int, residual: bool,
                 ese: bool, norm_cfg: dict, act_cfg: dict, dcn: dict | None = None,
                 plugins: dict[str, list[dict]] | None = None):
        super().__init__()
        if residual and in_ch != out_ch:
            raise ValueError(f'OSAModule: the identity mapping needs in_ch == out_ch, got '
                             f'{in_ch} and {out_ch}')
        self.residual = residual
        self.conv_mid = nn.Sequential(*[
            _conv_mid(in_ch if k == 0 else mid_ch, mid_ch, dcn, norm_cfg, act_cfg)
            for k in range(num_convs)])
        self.conv_concat = ConvModule(in_ch + num_convs * mid_ch, out_ch, 1, norm_cfg=norm_cfg,
                                      act_cfg=act_cfg)
        self.plugins_after_concat = build_plugin_sequence((plugins or {}).get('after_concat'),
                                                          out_ch)
        self.attn = EffectiveSE(out_ch) if ese else None

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for conv in self.conv_mid:
            feats.append(conv(feats[-1]))
        out = self.conv_concat(torch.cat(feats, dim=1))
        if self.plugins_after_concat is not None:
            out = self.plugins_after_concat(out)
        if self.attn is not None:
            out = self.attn(out)
        if self.residual:
            out = out + x
        return out


class OSAStage(nn.Module):
    """[MaxPool(3, s2, ceil_mode, no padding)] + ``blocks`` (OSA modules) [+ plugins of position
    ``'after_stage'``]: (B, in_ch, H, W) -> (B, out_ch, floor(H / 2), floor(W / 2)) with
    ``downsample``, (B, out_ch, H, W) without."""

    def __init__(self, downsample: bool, blocks: list[OSAModule],
                 plugins_after_stage: nn.Module | None = None):
        super().__init__()
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True) if downsample else None
        self.blocks = nn.Sequential(*blocks)
        self.plugins_after_stage = plugins_after_stage

    def forward(self, x: Tensor) -> Tensor:
        if self.pool is not None:
            x = self.pool(x)
        x = self.blocks(x)
        return x if self.plugins_after_stage is None else self.plugins_after_stage(x)


@MODELS.register_module()
class VoVNet(BaseBackbone):
    """VoVNet v1 / VoVNetV2 feature extractor returning the outputs of its four OSA stages.

    Input (B, in_channels, H, W). Stem: 3x3 conv s2, 3x3 conv, 3x3 conv s2 (each + norm +
    ReLU, stride 4); stage 0 has no pooling, stages 1..3 open with MaxPool(3, s2, ceil_mode).
    Output ``k`` of ``out_indices`` is stage ``k``'s (B, C_k, H_k, W_k) map, strides
    s = (4, 8, 16, 32), channels C = ``out`` of the arch (e.g. (256, 512, 768, 1024) for V-39).
    The padded s2 stem convs round up and the unpadded ceil-mode pools round down:
    H_0 = ceil(H / 4), H_k = floor(H_0 / 2^k) (e.g. H = 100: 25, 12, 6, 3). Stage ``k`` is
    timm ``features_only`` index ``k + 1`` (timm's index 0 is the stride-2 stem map).

    ======== ==========================  =============  ======  ========  ======================
    version  arch                        blocks         convs   mid ch    timm peer
    ======== ==========================  =============  ======  ========  ======================
    1        V-27-slim                   1, 1, 1, 1     5       64..112   --
    1        V-39                        1, 1, 2, 2     5       128..224  vovnet39a
    1        V-57                        1, 1, 4, 3     5       128..224  vovnet57a
    2        V-19-slim                   1, 1, 1, 1     3       64..112   ese_vovnet19b_slim
    2        V-19                        1, 1, 1, 1     3       128..224  ese_vovnet19b
    2        V-39                        1, 1, 2, 2     5       128..224  ese_vovnet39b
    2        V-57                        1, 1, 4, 3     5       128..224  ese_vovnet57b
    2        V-99                        1, 3, 9, 3     5       128..224  ese_vovnet99b
    ======== ==========================  =============  ======  ========  ======================

    Args:
        arch: architecture name of ``version`` (table above).
        version: 1 (the VoVNet paper: plain OSA modules) or 2 (VoVNetV2 / CenterMask: eSE and
            identity mapping).
        in_channels: channels of the input image.
        out_indices: stages whose output is returned (0 -> stride 4 ... 3 -> stride 32),
            ascending.
        frozen_stages: -1 freezes nothing, 0 the stem, k the stem and stages 0..k-1:
            their parameters get ``requires_grad=False`` and they stay in eval mode.
        norm_eval: keep every BatchNorm in eval mode (running statistics frozen) in training.
        ese_blocks: where eSE sits: ``'last'`` module of each stage (timm ``ese_vovnet*b``),
            ``'all'`` modules (the vovnet-detectron2 code) or ``'none'``. ``None``: ``'none'``
            for version 1, ``'last'`` for version 2.
        identity_mapping: add the input to the output of every OSA module but the first of
            each stage. ``None``: False for version 1 (the paper and timm ``vovnet*a``), True
            for version 2. (The stigma0617 v1 repository's HEAD adds it to v1 too; its
            checkpoints may need ``identity_mapping=True``.)
        norm_cfg: norm config (:func:`toolbox.models.layers.build_norm_layer` types: 'BN',
            'SyncBN', 'FrozenBN', 'GN', ...); ``dict(type='BN')`` when ``None``.
        act_cfg: activation of every conv (mmcv config); ``dict(type='ReLU', inplace=True)``
            when ``None``.
        dcn: deformable conv config for the 3x3 convs (``conv_mid``) of every OSA module of
            the stages selected by ``stage_with_dcn`` (VoVNetV2 / CenterMask, which uses them
            in stages 2-4): ``dict(type='DCN' | 'DCNv2', deform_groups=1)``
            (:func:`toolbox.models.layers.build_conv`); ``conv_offset`` starts at zero.
        stage_with_dcn: one bool per stage; must select a stage when ``dcn`` is given and none
            when it is not.
        plugins: modules inserted by config, mmdet's format
            (:mod:`toolbox.models.layers.stage_plugins`). An OSA module has no conv1/2/3
            sequence, so the positions are 'after_concat' (in every OSA module of the selected
            stages, after the 1x1 aggregation conv+norm+act, before eSE and the identity add:
            the counterpart of ResNet's 'after_conv3'), 'after_stage' (once on each selected
            stage's output, frozen with the stage) and 'input' (once on the image, never
            frozen). Plugins keep their own initialisation.
        pretrained: path of a timm-format (classifier or ``features_only``) or official-format
            checkpoint, loaded by ``init_weights()`` through :meth:`load_pretrained`, which
            converts the keys and logs the missing / unexpected ones.
        init_cfg: mmengine ``init_cfg``, e.g. ``dict(type='Pretrained', checkpoint=path)``.
    """

    arch_settings = ARCH_SETTINGS

    def __init__(self,
                 arch: str = 'V-39',
                 version: int = 2,
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 ese_blocks: str | None = None,
                 identity_mapping: bool | None = None,
                 norm_cfg: dict | None = None,
                 act_cfg: dict | None = None,
                 dcn: dict | None = None,
                 stage_with_dcn: Sequence[bool] = (False, False, False, False),
                 plugins: Sequence[dict] | None = None,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, pretrained=pretrained, init_cfg=init_cfg)
        if version not in self.arch_settings:
            raise ValueError(f'VoVNet version must be 1 or 2, got {version!r}')
        if arch not in self.arch_settings[version]:
            other = [v for v, archs in self.arch_settings.items() if arch in archs]
            hint = f' ({arch} exists in version {other[0]})' if other else ''
            raise ValueError(f'VoVNet version {version} arch must be one of '
                             f'{list(self.arch_settings[version])}, got {arch!r}{hint}')
        if ese_blocks is None:
            ese_blocks = 'none' if version == 1 else 'last'
        if ese_blocks not in ESE_BLOCKS:
            raise ValueError(f'VoVNet ese_blocks must be one of {ESE_BLOCKS} or None, got '
                             f'{ese_blocks!r}')
        if identity_mapping is None:
            identity_mapping = version == 2
        self.check_out_indices(4)
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'VoVNet frozen_stages must be in -1..4, got {frozen_stages}')
        stage_with_dcn = check_stage_with_dcn(dcn, stage_with_dcn, 'VoVNet')
        self.plugins = parse_plugins(plugins, ('after_concat', 'after_stage', 'input'),
                                     owner='VoVNet')

        self.arch, self.version = arch, version
        self.ese_blocks, self.identity_mapping = ese_blocks, identity_mapping
        spec = self.arch_settings[version][arch]
        norm_cfg = dict(norm_cfg or dict(type='BN', requires_grad=True))
        act_cfg = dict(act_cfg or dict(type='ReLU', inplace=True))
        stem_ch = spec['stem']
        self.plugins_input = build_plugin_sequence(
            select_stage_plugins(self.plugins, None).get('input'), in_channels)
        self.stem = nn.Sequential(*[
            ConvModule(c_in, c_out, 3, stride=stride, padding=1, norm_cfg=norm_cfg,
                       act_cfg=act_cfg)
            for c_in, c_out, stride in zip((in_channels, ) + stem_ch[:2], stem_ch, (2, 1, 2))])

        stages, in_ch = [], stem_ch[-1]
        for i, (mid_ch, out_ch, num_blocks) in enumerate(
                zip(spec['mid'], spec['out'], spec['num_blocks'])):
            blocks = []
            plugins_here = select_stage_plugins(self.plugins, i)
            for j in range(num_blocks):
                last = j == num_blocks - 1
                ese = ese_blocks == 'all' or (ese_blocks == 'last' and last)
                blocks.append(OSAModule(in_ch, mid_ch, out_ch, spec['num_convs'],
                                        residual=identity_mapping and j > 0, ese=ese,
                                        norm_cfg=norm_cfg, act_cfg=act_cfg,
                                        dcn=dcn if stage_with_dcn[i] else None,
                                        plugins=plugins_here))
                in_ch = out_ch
            stages.append(OSAStage(downsample=i > 0, blocks=blocks,
                                   plugins_after_stage=build_plugin_sequence(
                                       plugins_here.get('after_stage'), out_ch)))
        self.stages = nn.Sequential(*stages)
        self.out_channels = tuple(spec['out'][i] for i in self.out_indices)
        self.strides = tuple((4, 8, 16, 32)[i] for i in self.out_indices)

        self.reset_parameters()
        self.freeze_stages()

    def reset_parameters(self) -> None:
        """Kaiming-normal fan-out convs with zero bias (timm's VoVNet init; deformable convs
        too, with a zero ``conv_offset``), unit-scale norms. Plugins keep their own
        initialisation."""
        host = [m for name, m in self.named_modules()
                if not any(part.startswith('plugins_') for part in name.split('.'))]
        kaiming_init_conv_norm(host)
        init_deform_convs(host)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem and stages 0..frozen_stages-1."""
        if self.frozen_stages < 0:
            return []
        return [self.stem] + list(self.stages[:self.frozen_stages])

    def convert_state_dict(self, state_dict: Mapping[str, Tensor],
                           prefix_map: Mapping[str, str] | None = None) -> dict[str, Tensor]:
        """A timm (classifier or ``features_only``) or official state dict in our names:
        ``prefix_map`` renames first (in order), then :data:`TIMM_PREFIX_MAP`, then
        :func:`convert_official_keys`. Unknown keys pass through (and are reported by the
        loader as unexpected)."""
        renames = {**(prefix_map or {}), **TIMM_PREFIX_MAP}
        for old, new in renames.items():
            state_dict = {(new + k[len(old):] if k.startswith(old) else k): v
                          for k, v in state_dict.items()}
        return convert_official_keys(state_dict, norm_name=self.stem[0].norm_name)

    def load_pretrained(self, checkpoint: str | Mapping[str, Tensor],
                        prefix_map=None) -> dict[str, list[str]]:
        """Load a checkpoint file (``torch.load(weights_only=True)``) or an in-memory state
        dict, converting its keys with :meth:`convert_state_dict`; returns (and logs) the
        :func:`load_weights` report (missing / unexpected / mismatched keys)."""
        state_dict, source = read_state_dict(checkpoint)  # mmengine / detectron2 wrappers too
        print_log(f'VoVNet: loading {source}', logger='current')
        return load_weights(self, self.convert_state_dict(state_dict, prefix_map))

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, C, H, W) -> tuple of the stage maps in ``out_indices`` (class docstring)."""
        if self.plugins_input is not None:
            x = self.plugins_input(x)
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
                if i == self.out_indices[-1]:
                    break
        return tuple(outs)
