"""The Xception family: the aligned (modified) Xception-65 of DeepLab v3+ (Chen et al. 2018,
:class:`AlignedXception`) and Chollet's original Xception (2017, :class:`Xception`, timm's
``legacy_xception``; see its docstring).

Aligned Xception-65 differs from Chollet's Xception: 16 middle-flow blocks instead of 8, every
max-pool replaced by a stride-2 separable conv, and a norm after every depthwise and every
pointwise conv (reference/ANCHORS.md 1.5). As in the official TF DeepLab code (and timm's
``xception65``), the ReLUs of the entry, middle and first exit blocks sit *before* each
separable conv (``ReLU -> depthwise -> BN -> pointwise -> BN``); only the last exit block
applies ReLU inside the separable conv (``depthwise -> BN -> ReLU -> pointwise -> BN -> ReLU``)
and has no skip.

Parameter names are timm's (``stem.{0,1}.{conv,bn}``, ``blocks.{i}.stack.conv{1,2,3}.{conv_dw,
bn_dw,conv_pw,bn_pw}``, ``blocks.{i}.shortcut.{conv,bn}``), so a timm ``xception65`` state dict
loads directly (its ``head.fc.*`` is reported as unexpected). The state dict of a timm
``features_only`` model names the same tensors ``stem_0.*`` / ``blocks_0.*``; the prefix map
:data:`TIMM_PREFIX_MAP` renames them, and ``pretrained=`` applies it.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from torch import Tensor, nn

from toolbox.models.bases import BaseBackbone, kaiming_init_conv_norm
from toolbox.models.layers import build_norm_layer, resolve_norm_cfg
from toolbox.registry import MODELS

# timm features_only state dicts flatten ``stem.0`` to ``stem_0``; rename before matching.
TIMM_PREFIX_MAP = {f'stem_{i}.': f'stem.{i}.' for i in range(2)}
TIMM_PREFIX_MAP.update({f'blocks_{i}.': f'blocks.{i}.' for i in range(21)})

# (in_channels, out_channels of the three separable convs, stride, start_with_relu, skip)
XCEPTION65_BLOCKS = (
    [(64, (128, 128, 128), 2, True, True),           # entry flow
     (128, (256, 256, 256), 2, True, True),
     (256, (728, 728, 728), 2, True, True)]
    + [(728, (728, 728, 728), 1, True, True)] * 16   # middle flow
    + [(728, (728, 1024, 1024), 2, True, True),      # exit flow
       (1024, (1536, 1536, 2048), 1, False, False)])


def _norm(cfg: dict, num_features: int) -> nn.Module:
    return build_norm_layer(cfg, num_features)[1]


def rename_prefixes(state_dict: dict, prefix_map: dict[str, str]) -> dict:
    """Rename keys ``old_prefix...`` to ``new_prefix...``, the map's entries applied in order
    (as :func:`toolbox.engine.weights.load_weights` applies its ``prefix_map``)."""
    for old, new in prefix_map.items():
        state_dict = {(new + k[len(old):] if k.startswith(old) else k): v
                      for k, v in state_dict.items()}
    return state_dict


def _check_source(name: str, source: str, supported: tuple[str, ...]) -> None:
    if source not in supported:
        raise ValueError(f'{name} converts checkpoints from {supported}, got source={source!r}')


class SeparableConvBN(nn.Module):
    """Depthwise 3x3 (stride, dilation) + norm [+ ReLU], pointwise 1x1 + norm [+ ReLU].

    (B, in_ch, H, W) -> (B, out_ch, H / stride, W / stride); padding = dilation keeps the size.
    Not mmcv's ``DepthwiseSeparableConvModule``: its keys (``depthwise_conv.conv``, ...) are not
    timm's (``conv_dw``, ``bn_dw``, ``conv_pw``, ``bn_pw``), which checkpoints load by.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, dilation: int, norm_cfg: dict,
                 act: bool):
        super().__init__()
        self.conv_dw = nn.Conv2d(in_ch, in_ch, 3, stride=stride, padding=dilation,
                                 dilation=dilation, groups=in_ch, bias=False)
        self.bn_dw = _norm(norm_cfg, in_ch)
        self.conv_pw = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.bn_pw = _norm(norm_cfg, out_ch)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn_dw(self.conv_dw(x)))
        return self.act(self.bn_pw(self.conv_pw(x)))


class _Stack(nn.Module):
    """Holds ``conv1..conv3`` so that keys read ``stack.conv{k}.*`` (timm's names)."""

    def __init__(self, convs: list[nn.Module]):
        super().__init__()
        for k, conv in enumerate(convs):
            self.add_module(f'conv{k + 1}', conv)


class XceptionBlock(nn.Module):
    """Three separable convs (the last one strided) plus a skip.

    ``start_with_relu``: ReLU before each separable conv (pre-activation, no ReLU inside);
    otherwise ReLU inside each separable conv after both norms. ``skip``: a 1x1 conv + norm
    projection when channels or stride change, the identity otherwise; ``False`` for no skip.

    ``forward_with_tap`` also returns the *tap*: the (ReLU-ed) input of the last separable
    conv, i.e. the finest feature inside a strided block (DeepLab's low-level feature).
    """

    def __init__(self, in_ch: int, out_chs: Sequence[int], stride: int, dilation: int,
                 start_with_relu: bool, skip: bool, norm_cfg: dict):
        super().__init__()
        self.start_with_relu = start_with_relu
        self.skip = skip
        self.shortcut = None
        if skip and (out_chs[-1] != in_ch or stride != 1):
            self.shortcut = ConvModule(in_ch, out_chs[-1], 1, stride=stride,
                                       norm_cfg=norm_cfg, act_cfg=None)
        convs, ch = [], in_ch
        for k, out in enumerate(out_chs):
            convs.append(SeparableConvBN(ch, out, stride if k == 2 else 1, dilation, norm_cfg,
                                         act=not start_with_relu))
            ch = out
        self.stack = _Stack(convs)

    def forward_with_tap(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = x
        for k in range(1, 4):
            if self.start_with_relu:
                # the first ReLU out of place (the skip still needs the block input), the
                # others in place on a conv's fresh output, as timm: 40 fewer copies of a map
                out = F.relu(out, inplace=k > 1)
            if k == 3:
                tap = out
            out = getattr(self.stack, f'conv{k}')(out)
        if self.skip:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return out, tap

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_tap(x)[0]


@MODELS.register_module()
class AlignedXception(BaseBackbone):
    """Aligned Xception-65 feature extractor with output stride 8, 16 or 32.

    Input (B, in_channels, H, W). Five feature points, as timm's ``features_only`` model:

    ====  ==========================================  ========  ================
    idx   where                                       channels  stride (OS 16)
    ====  ==========================================  ========  ================
    0     entry block 1, input of its strided conv    128       2
    1     entry block 2, input of its strided conv    256       4
    2     entry block 3, input of its strided conv    728       8
    3     exit block 1, input of its strided conv     1024      16
    4     output of the last exit block               2048      16
    ====  ==========================================  ========  ================

    ``forward`` returns the points listed in ``out_indices``; DeepLab v3+ uses index 1
    (TF DeepLab's ``entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise``)
    as the decoder's low-level feature and index 4 for ASPP.

    Output stride: a block whose stride would take the network past ``output_stride`` keeps
    stride 1 and every later block is dilated by the accumulated factor (the block itself keeps
    the previous dilation, like torchvision's ``replace_stride_with_dilation``): at OS 16 the
    middle flow has dilation 1 and the exit flow (1, 2); at OS 8 the middle flow 2 and the exit
    flow (2, 4) (ANCHORS.md 1.5).

    Args:
        depth: 65 (the DeepLab v3+ encoder; 16 middle blocks).
        in_channels: channels of the input image.
        output_stride: 8, 16 or 32.
        out_indices: feature points to return, ascending, in 0..4.
        norm_cfg: norm config (:func:`build_norm_layer`); BN with eps 1e-3 (TF and timm) when
            ``None``.
        norm_eval: keep every BatchNorm in eval mode during training.
        pretrained: path of a timm-format checkpoint (classifier or ``features_only``),
            loaded by ``init_weights()`` through :meth:`load_pretrained`, which applies
            :data:`TIMM_PREFIX_MAP` and logs the missing and unexpected keys.
        init_cfg: mmengine ``init_cfg``, e.g. ``dict(type='Pretrained', checkpoint=path)``.
    """

    arch_settings = {65: XCEPTION65_BLOCKS}

    def __init__(self, depth: int = 65, in_channels: int = 3, output_stride: int = 16,
                 out_indices: Sequence[int] = (1, 4), norm_cfg: dict | None = None,
                 norm_eval: bool = False, pretrained: str | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(out_indices=out_indices, norm_eval=norm_eval, pretrained=pretrained,
                         init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise ValueError(f'AlignedXception depth must be one of {sorted(self.arch_settings)},'
                             f' got {depth}')
        if output_stride not in (8, 16, 32):
            raise ValueError(f'output_stride must be 8, 16 or 32, got {output_stride}')
        self.check_out_indices(5)
        norm_cfg = dict(norm_cfg or dict(type='BN', eps=1e-3))
        self.stem = nn.Sequential(
            ConvModule(in_channels, 32, 3, stride=2, padding=1, norm_cfg=norm_cfg),
            ConvModule(32, 64, 3, padding=1, norm_cfg=norm_cfg))
        blocks = []
        stride, dilation = 2, 1
        channels, strides = [], []
        self.tap_blocks = []  # block index of each tap inside a strided block
        for i, (in_ch, out_chs, block_stride, start_with_relu, skip) in \
                enumerate(self.arch_settings[depth]):
            block_dilation = dilation
            if block_stride > 1:
                self.tap_blocks.append(i)
                channels.append(out_chs[-2])
                strides.append(stride)
                if stride * block_stride > output_stride:
                    dilation *= block_stride
                    block_stride = 1
                else:
                    stride *= block_stride
            blocks.append(XceptionBlock(in_ch, out_chs, block_stride, block_dilation,
                                        start_with_relu, skip, norm_cfg))
        self.blocks = nn.Sequential(*blocks)
        channels.append(self.arch_settings[depth][-1][1][-1])
        strides.append(stride)
        self.out_channels = tuple(channels[i] for i in self.out_indices)
        self.strides = tuple(strides[i] for i in self.out_indices)

        self.reset_parameters()
        self.freeze_stages()

    def reset_parameters(self) -> None:
        """Kaiming-normal fan-out convs, unit-scale norms."""
        kaiming_init_conv_norm(self.modules())

    def load_pretrained(self, checkpoint: str, prefix_map=None) -> dict[str, list[str]]:
        """Load a timm-format checkpoint: ``prefix_map`` renames first, then
        :data:`TIMM_PREFIX_MAP`; returns the :func:`load_weights` report."""
        return super().load_pretrained(checkpoint, {**(prefix_map or {}), **TIMM_PREFIX_MAP})

    @staticmethod
    def convert_state_dict(state_dict: dict, source: str = 'timm') -> dict:
        """A timm ``xception65`` state dict (classifier or ``features_only``) in our key layout
        (:data:`TIMM_PREFIX_MAP`; ``head.fc.*`` is kept, and reported as unexpected on load)."""
        _check_source('AlignedXception', source, ('timm',))
        return rename_prefixes(state_dict, TIMM_PREFIX_MAP)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, C, H, W) -> tuple of the feature points in ``out_indices`` (class docstring)."""
        x = self.stem(x)
        feats = []
        last = max(self.out_indices)
        for i, block in enumerate(self.blocks):
            if i in self.tap_blocks:
                x, tap = block.forward_with_tap(x)
                feats.append(tap)
                if len(feats) > last:  # every wanted point is computed
                    break
            else:
                x = block(x)
        if len(feats) == 4:
            feats.append(x)
        return tuple(feats[i] for i in self.out_indices)


# Chollet's Xception (timm ``legacy_xception``), one row per block:
# (in_channels, out_channels, separable convs, stride, start_with_relu, grow_first).
# grow_first: the first separable conv changes the width (else the last one does).
XCEPTION_BLOCKS = (
    ((64, 128, 2, 2, False, True),                   # entry flow
     (128, 256, 2, 2, True, True),
     (256, 728, 2, 2, True, True))
    + ((728, 728, 3, 1, True, True),) * 8            # middle flow
    + ((728, 1024, 2, 2, True, False),))             # exit flow (then 2 separable convs)
XCEPTION_CHANNELS = (64, 128, 256, 728, 2048)  # feature points 0..4
XCEPTION_STRIDES = (2, 4, 8, 16, 32)
# blocks run before each feature point (as timm's ``feature_ends``); point 4 adds exit_convs
XCEPTION_POINT_ENDS = (0, 1, 2, 11, 12)


def _timm_legacy_prefix_map() -> dict[str, str]:
    """timm ``legacy_xception`` key prefixes -> ours, derived from :data:`XCEPTION_BLOCKS`.

    timm's block ``rep`` interleaves ``ReLU, SeparableConv2d(conv1, pointwise), BatchNorm2d``
    (without the leading ReLU when ``start_with_relu=False``), so separable conv ``j`` sits at
    ``rep.{3j + start_with_relu}`` and its norm one index later. The ``body.`` prefix of a
    ``features_only`` (hook) model's state dict is dropped first.
    """
    prefix_map = {'body.': '', 'conv1.': 'stem.0.conv.', 'bn1.': 'stem.0.bn.',
                  'conv2.': 'stem.1.conv.', 'bn2.': 'stem.1.bn.'}
    for i, (_, _, num_convs, _, start_with_relu, _) in enumerate(XCEPTION_BLOCKS):
        src, dst = f'block{i + 1}.', f'blocks.{i}.'
        for j in range(num_convs):
            k = 3 * j + int(start_with_relu)
            prefix_map[f'{src}rep.{k}.conv1.'] = f'{dst}rep.{j}.depthwise_conv.conv.'
            prefix_map[f'{src}rep.{k}.pointwise.'] = f'{dst}rep.{j}.pointwise_conv.conv.'
            prefix_map[f'{src}rep.{k + 1}.'] = f'{dst}rep.{j}.pointwise_conv.bn.'
        prefix_map[f'{src}skip.'] = f'{dst}shortcut.conv.'
        prefix_map[f'{src}skipbn.'] = f'{dst}shortcut.bn.'
    for j, n in enumerate((3, 4)):
        prefix_map[f'conv{n}.conv1.'] = f'exit_convs.{j}.depthwise_conv.conv.'
        prefix_map[f'conv{n}.pointwise.'] = f'exit_convs.{j}.pointwise_conv.conv.'
        prefix_map[f'bn{n}.'] = f'exit_convs.{j}.pointwise_conv.bn.'
    return prefix_map


TIMM_LEGACY_PREFIX_MAP = _timm_legacy_prefix_map()


def separable_conv(in_ch: int, out_ch: int, norm_cfg: dict, pre_relu: bool = False,
                   post_relu: bool = False, inplace: bool = True) -> DepthwiseSeparableConvModule:
    """Chollet's separable conv: [ReLU ->] depthwise 3x3 -> pointwise 1x1 -> norm [-> ReLU].

    (B, in_ch, H, W) -> (B, out_ch, H, W). No norm between the depthwise and the pointwise conv
    and no conv bias (the paper; timm ``legacy_xception``). ``pre_relu``: ReLU on the input
    (the block-internal placement); ``inplace=False`` when the caller still needs the input.
    Keys: ``depthwise_conv.conv``, ``pointwise_conv.conv``, ``pointwise_conv.{bn,gn,...}``.
    """
    relu = dict(type='ReLU')
    return DepthwiseSeparableConvModule(
        in_ch, out_ch, 3, padding=1, norm_cfg=None, act_cfg=None, pw_norm_cfg=norm_cfg,
        dw_act_cfg=relu if pre_relu else None, pw_act_cfg=relu if post_relu else None,
        order=('act', 'conv', 'norm') if pre_relu else ('conv', 'norm', 'act'),
        bias=False, inplace=inplace)


class XceptionV1Block(nn.Module):
    """A block of Chollet's Xception: separable convs with pre-activation ReLUs, an optional
    3x3 stride-2 max-pool, plus a skip.

    (B, in_ch, H, W) -> (B, out_ch, ceil(H / stride), ceil(W / stride)). The skip is a 1x1
    stride-``stride`` conv + norm when width or stride change, the identity otherwise.

    Args:
        in_ch, out_ch: input and output channels.
        num_convs: separable convs (2 in the entry / exit flow, 3 in the middle flow).
        stride: 1, or 2 for a max-pool after the convs.
        start_with_relu: ReLU before the first separable conv (every block but the first).
        grow_first: the first conv goes to ``out_ch`` (else the last one does).
        norm_cfg: norm after each pointwise conv and in the skip.
    """

    def __init__(self, in_ch: int, out_ch: int, num_convs: int, stride: int,
                 start_with_relu: bool, grow_first: bool, norm_cfg: dict):
        super().__init__()
        widths = [in_ch] + [out_ch] * num_convs if grow_first else \
            [in_ch] * num_convs + [out_ch]
        self.rep = nn.Sequential(*[
            # the block input is still needed by the skip: no in-place ReLU on it
            separable_conv(widths[j], widths[j + 1], norm_cfg, pre_relu=start_with_relu or j > 0,
                           inplace=j > 0)
            for j in range(num_convs)])
        self.pool = nn.MaxPool2d(3, stride, 1) if stride > 1 else nn.Identity()
        self.shortcut = None
        if in_ch != out_ch or stride != 1:
            self.shortcut = ConvModule(in_ch, out_ch, 1, stride=stride, bias=False,
                                       norm_cfg=norm_cfg, act_cfg=None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.pool(self.rep(x))
        out += x if self.shortcut is None else self.shortcut(x)
        return out


@MODELS.register_module()
class Xception(BaseBackbone):
    """Chollet's original Xception (2017) as a feature extractor (timm ``legacy_xception``).

    Entry flow: conv 3x3 32 s2 + BN + ReLU, conv 3x3 64 + BN + ReLU, then blocks 64->128,
    128->256, 256->728 (2 separable convs each, 3x3 max-pool s2, 1x1 s2 conv + BN skip); middle
    flow: 8 blocks of 3 separable 728 convs with identity skips; exit flow: block 728->(728, 1024)
    with max-pool, then separable 1536 and 2048 convs, each followed by BN and ReLU. Separable
    convs have no norm between depthwise and pointwise; inside blocks the ReLUs come before
    each separable conv (the first block starts without one), as in the paper's Figure 5.

    Input (B, in_channels, H, W). Five feature points (timm's ``features_only`` taps):

    ====  =====================================================  ========  ======
    idx   tensor                                                 channels  stride
    ====  =====================================================  ========  ======
    0     stem output (after the second conv's ReLU)             64        2
    1     ReLU(entry block 1 output)                             128       4
    2     ReLU(entry block 2 output)                             256       8
    3     ReLU(middle block 8 output)                            728       16
    4     exit flow output (ReLU after the 2048 separable conv)  2048      32
    ====  =====================================================  ========  ======

    Points 1-3 are the ReLU each following block starts with, taken out of place so that the
    block's skip still sees the raw sum. A detector takes indices (1, 2, 3, 4) (strides 4-32).

    Map sizes: with ``stem_padding='same'`` (default) point k is exactly
    ``ceil(H / stride_k)``; ``'valid'`` is Keras' and timm's unpadded stem (e.g. 299 -> 147 ->
    74 -> 37 -> 19 -> 10), where the maps are one or two pixels smaller. The weights are the
    same in both; only the stem's two convs change their padding.

    Parameters: 20,806,952 (backbone); with timm's 1000-class fc 22,855,952
    (reference/ANCHORS.md 1.5). Layers are mmcv bricks (``ConvModule``,
    ``DepthwiseSeparableConvModule``), so keys differ from timm's (``conv1``, ``block1.rep.0``,
    ...): :data:`TIMM_LEGACY_PREFIX_MAP` renames a timm checkpoint (classifier or
    ``features_only``), applied by :meth:`load_pretrained` and :meth:`convert_state_dict`.

    Args:
        in_channels: channels of the input image.
        out_indices: feature points to return, ascending, in 0..4.
        frozen_stages: -1 freezes nothing; k freezes the modules up to feature point k:
            0 the stem, 1 + entry block 1, 2 + entry block 2, 3 + entry block 3 and the middle
            flow, 4 everything.
        norm_cfg: norm config (:func:`build_norm_layer`); ``dict(type='BN')`` (eps 1e-5, as
            timm) when ``None``.
        norm_eval: keep every BatchNorm in eval mode during training.
        stem_padding: 'same' (padding 1: maps are ceil(H / stride)) or 'valid' (padding 0:
            Keras / timm).
        pretrained: path of a timm ``legacy_xception`` checkpoint, loaded by ``init_weights()``
            through :meth:`load_pretrained` (its ``fc.*`` is reported as unexpected).
        init_cfg: mmengine ``init_cfg``, e.g. ``dict(type='Pretrained', checkpoint=path)``.
    """

    def __init__(self, in_channels: int = 3, out_indices: Sequence[int] = (1, 2, 3, 4),
                 frozen_stages: int = -1, norm_cfg: dict | None = None,
                 norm_eval: bool = False, stem_padding: str = 'same',
                 pretrained: str | None = None, init_cfg: dict | list | None = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, pretrained=pretrained, init_cfg=init_cfg)
        self.check_out_indices(len(XCEPTION_CHANNELS))
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'Xception: frozen_stages must be in -1..4, got {frozen_stages}')
        if stem_padding not in ('same', 'valid'):
            raise ValueError(f"Xception: stem_padding must be 'same' or 'valid', got "
                             f"{stem_padding!r}")
        # resolved: mmcv's own 'LN' would normalise the width dimension of a conv map
        norm_cfg = resolve_norm_cfg(norm_cfg or dict(type='BN'))
        padding = 1 if stem_padding == 'same' else 0
        self.stem = nn.Sequential(
            ConvModule(in_channels, 32, 3, stride=2, padding=padding, norm_cfg=norm_cfg),
            ConvModule(32, 64, 3, padding=padding, norm_cfg=norm_cfg))
        self.blocks = nn.Sequential(*[XceptionV1Block(*row, norm_cfg=norm_cfg)
                                      for row in XCEPTION_BLOCKS])
        self.exit_convs = nn.Sequential(
            separable_conv(1024, 1536, norm_cfg, post_relu=True),
            separable_conv(1536, 2048, norm_cfg, post_relu=True))
        self.out_channels = tuple(XCEPTION_CHANNELS[i] for i in self.out_indices)
        self.strides = tuple(XCEPTION_STRIDES[i] for i in self.out_indices)

        self.reset_parameters()
        self.freeze_stages()

    def reset_parameters(self) -> None:
        """Kaiming-normal fan-out convs, unit-scale norms (timm's initialisation)."""
        kaiming_init_conv_norm(self.modules())

    def frozen_modules(self) -> list[nn.Module]:
        """The modules up to feature point ``frozen_stages`` (see the class docstring)."""
        if self.frozen_stages < 0:
            return []
        modules = [self.stem] + list(self.blocks[:XCEPTION_POINT_ENDS[self.frozen_stages]])
        return modules + [self.exit_convs] if self.frozen_stages == 4 else modules

    @staticmethod
    def convert_state_dict(state_dict: dict, source: str = 'timm') -> dict:
        """A timm ``legacy_xception`` state dict (classifier or ``features_only``) in our key
        layout (:data:`TIMM_LEGACY_PREFIX_MAP`; ``fc.*`` is kept, and reported as unexpected
        on load)."""
        _check_source('Xception', source, ('timm',))
        return rename_prefixes(state_dict, TIMM_LEGACY_PREFIX_MAP)

    def load_pretrained(self, checkpoint: str, prefix_map=None) -> dict[str, list[str]]:
        """Load a timm-format checkpoint: ``prefix_map`` renames first, then
        :data:`TIMM_LEGACY_PREFIX_MAP`; returns the :func:`load_weights` report."""
        return super().load_pretrained(checkpoint,
                                       {**(prefix_map or {}), **TIMM_LEGACY_PREFIX_MAP})

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, C, H, W) -> tuple of the feature points in ``out_indices`` (class docstring)."""
        last = self.out_indices[-1]
        x = self.stem(x)
        feats = [x]
        for i, block in enumerate(self.blocks[:XCEPTION_POINT_ENDS[last]], start=1):
            x = block(x)
            if i in XCEPTION_POINT_ENDS[1:4]:
                # out of place: the next block's skip needs x before its ReLU
                feats.append(F.relu(x) if len(feats) in self.out_indices else x)
        if last == 4:
            feats.append(self.exit_convs(x))
        return tuple(feats[i] for i in self.out_indices)
