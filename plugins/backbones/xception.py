"""Aligned (modified) Xception-65, the encoder of DeepLab v3+ (Chen et al. 2018).

Differences from Chollet's Xception: 16 middle-flow blocks instead of 8, every max-pool replaced
by a stride-2 separable conv, and a norm after every depthwise and every pointwise conv
(reference/ANCHORS.md 1.5). As in the official TF DeepLab code (and timm's ``xception65``), the
ReLUs of the entry, middle and first exit blocks sit *before* each separable conv
(``ReLU -> depthwise -> BN -> pointwise -> BN``); only the last exit block applies ReLU inside
the separable conv (``depthwise -> BN -> ReLU -> pointwise -> BN -> ReLU``) and has no skip.

Parameter names are timm's (``stem.{0,1}.{conv,bn}``, ``blocks.{i}.stack.conv{1,2,3}.{conv_dw,
bn_dw,conv_pw,bn_pw}``, ``blocks.{i}.shortcut.{conv,bn}``), so a timm ``xception65`` state dict
loads directly (its ``head.fc.*`` is reported as unexpected). The state dict of a timm
``features_only`` model names the same tensors ``stem_0.*`` / ``blocks_0.*``; the prefix map
:data:`TIMM_PREFIX_MAP` renames them, and ``pretrained=`` applies it.
"""
from __future__ import annotations

from collections.abc import Sequence

from mmcv.cnn import ConvModule
from torch import Tensor, nn

from toolbox.models.bases import BaseBackbone, kaiming_init_conv_norm
from toolbox.models.layers import build_norm_layer
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
        self.relu = nn.ReLU()  # not in place: the block input is still needed by the skip

    def forward_with_tap(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = x
        for k in range(1, 4):
            if self.start_with_relu:
                out = self.relu(out)
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
