"""Semantic segmentation decode heads: DeepLab v3 (ASPP), DeepLab v3+ (ASPP + decoder), FCN.

Every head builds on :class:`toolbox.models.bases.BaseDecodeHead` (the contract: features ->
classifier -> loss / predict, ``ignore_index``, ``align_corners``).

Layers: ``aspp.branches.{i}`` (1x1, then one per rate), ``aspp.image_pool``, ``aspp.project``,
``c1_bottleneck`` / ``sep_bottleneck`` (v3+ decoder, mmseg's names), ``convs`` (FCN, v3 extra
convs), ``conv_seg``; every conv block is an mmcv ``ConvModule`` (``.conv`` / ``.bn``) or
``DepthwiseSeparableConvModule`` (``.depthwise_conv`` / ``.pointwise_conv``).
:func:`convert_torchvision_deeplabv3` renames a torchvision ``deeplabv3_resnet50/101`` state
dict to this layout.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from torch import Tensor, nn

from toolbox.models.bases import BaseDecodeHead, resize
from toolbox.registry import MODELS


def _conv(in_channels: int, out_channels: int, kernel_size: int, norm_cfg: dict | None,
          dilation: int = 1) -> ConvModule:
    """Conv (bias only without norm) -> norm -> ReLU, size-preserving padding."""
    return ConvModule(in_channels, out_channels, kernel_size,
                      padding=dilation * (kernel_size // 2), dilation=dilation,
                      norm_cfg=norm_cfg)


def _conv3x3(in_channels, out_channels, dilation, separable, norm_cfg) -> nn.Module:
    """Plain 3x3 ConvModule, or depthwise 3x3 + norm + ReLU then pointwise 1x1 + norm + ReLU
    (TF DeepLab's ``split_separable_conv2d``)."""
    if separable:
        return DepthwiseSeparableConvModule(in_channels, out_channels, 3, padding=dilation,
                                            dilation=dilation, norm_cfg=norm_cfg)
    return _conv(in_channels, out_channels, 3, norm_cfg, dilation)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab v3, Sec. 3.3).

    Branches, concatenated in this order: a 1x1 conv, one 3x3 conv per rate in ``dilations``
    (plain or depthwise-separable), and image pooling (global average -> 1x1 conv -> bilinear
    back to the map size); each has ``channels`` outputs with norm and ReLU. A 1x1 conv + norm +
    ReLU projects the concatenation to ``channels``.

    (B, in_channels, h, w) -> (B, channels, h, w). Rates (6, 12, 18) suit output stride 16,
    (12, 24, 36) output stride 8.
    """

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int],
                 separable: bool = False, norm_cfg: dict | None = None,
                 align_corners: bool = False):
        super().__init__()
        self.align_corners = align_corners
        self.branches = nn.ModuleList(
            [_conv(in_channels, channels, 1, norm_cfg)]
            + [_conv3x3(in_channels, channels, d, separable, norm_cfg) for d in dilations])
        self.image_pool = _conv(in_channels, channels, 1, norm_cfg)
        self.project = _conv((len(dilations) + 2) * channels, channels, 1, norm_cfg)

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.branches]
        pooled = self.image_pool(F.adaptive_avg_pool2d(x, 1))
        outs.append(resize(pooled, x.shape[-2:], self.align_corners))
        return self.project(torch.cat(outs, dim=1))



@MODELS.register_module()
class ASPPHead(BaseDecodeHead):
    """DeepLab v3 head: ASPP, ``num_convs`` extra 3x3 convs, classifier.

    The paper's head is ASPP then the 1x1 classifier (``num_convs=0``). torchvision's
    ``DeepLabHead`` adds one 3x3 conv + norm + ReLU after ASPP (``num_convs=1``, rates
    (12, 24, 36)); with it, :func:`convert_torchvision_deeplabv3` weights give torchvision's
    outputs. (torchvision drops out with p=0.5 after the ASPP projection, here dropout sits
    before ``conv_seg``; this only matters in training.)

    Args:
        dilations: atrous rates of the 3x3 branches: (6, 12, 18) for output stride 16,
            (12, 24, 36) for output stride 8.
        num_convs: 3x3 convs between ASPP and the classifier.
        (others: see ``BaseDecodeHead``)
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256,
                 dilations: Sequence[int] = (6, 12, 18), num_convs: int = 0, **kwargs):
        super().__init__(in_channels, channels, num_classes, **kwargs)
        self.aspp = ASPP(in_channels, channels, dilations, separable=False,
                         norm_cfg=self.norm_cfg, align_corners=self.align_corners)
        self.convs = nn.Sequential(*[_conv(channels, channels, 3, self.norm_cfg)
                                     for _ in range(num_convs)])
        self.reset_parameters()

    def features(self, feats: Sequence[Tensor]) -> Tensor:
        return self.convs(self.aspp(feats[self.in_index]))


@MODELS.register_module()
class DepthwiseSeparableASPPHead(BaseDecodeHead):
    """DeepLab v3+ head: ASPP on the deep feature, then a decoder with a low-level feature.

    ``x = ASPP(feats[in_index])`` (stride 16 or 8); ``c1 = 1x1 conv(feats[c1_in_index]) ->
    c1_channels`` (48, stride 4); ``x`` is resized bilinearly to ``c1``'s size (x4 at output
    stride 16), concatenated with ``c1`` and refined by two 3x3 convs of ``channels`` (256);
    ``conv_seg`` then gives logits at stride 4, which the loss / predict resize (x4) to the input.

    ``separable=True`` (the paper's Xception variant, TF DeepLab): the ASPP atrous branches and
    the two decoder convs are depthwise-separable (depthwise 3x3 + norm + ReLU, pointwise 1x1 +
    norm + ReLU). ``separable=False``: plain 3x3 convs, as in jfzhang95's pytorch-deeplab-xception,
    whose head has 16,838,005 parameters for 2048/128 input channels and 21 classes
    (ANCHORS.md 1.5).

    Args:
        c1_in_channels: channels of the low-level feature (256 for ResNet C2 and for
            AlignedXception feature point 1).
        c1_channels: channels of its 1x1 projection (48 in the paper).
        c1_in_index: which backbone output is the low-level feature.
        dilations, channels: as :class:`ASPPHead`.
    """

    def __init__(self, in_channels: int, num_classes: int, c1_in_channels: int,
                 channels: int = 256, c1_channels: int = 48, c1_in_index: int = 0,
                 dilations: Sequence[int] = (6, 12, 18), separable: bool = True, **kwargs):
        super().__init__(in_channels, channels, num_classes, **kwargs)
        self.c1_in_index = c1_in_index
        self.aspp = ASPP(in_channels, channels, dilations, separable=separable,
                         norm_cfg=self.norm_cfg, align_corners=self.align_corners)
        self.c1_bottleneck = _conv(c1_in_channels, c1_channels, 1, self.norm_cfg)
        self.sep_bottleneck = nn.Sequential(
            _conv3x3(channels + c1_channels, channels, 1, separable, self.norm_cfg),
            _conv3x3(channels, channels, 1, separable, self.norm_cfg))
        self.reset_parameters()

    def features(self, feats: Sequence[Tensor]) -> Tensor:
        x = self.aspp(feats[self.in_index])
        c1 = self.c1_bottleneck(feats[self.c1_in_index])
        x = resize(x, c1.shape[-2:], self.align_corners)
        return self.sep_bottleneck(torch.cat([x, c1], dim=1))


@MODELS.register_module()
class FCNHead(BaseDecodeHead):
    """FCN head (Long et al. 2015), used as the auxiliary head on ResNet C4.

    ``num_convs`` convs of ``kernel_size`` with norm and ReLU, optionally concatenated with the
    input and fused by one more conv (``concat_input``), then the classifier. torchvision's
    ``FCNHead(1024, 21)`` is ``channels=256, num_convs=1``. With ``num_convs=0`` the head is the
    1x1 classifier alone (``channels`` must equal ``in_channels``).
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 256,
                 num_convs: int = 1, kernel_size: int = 3, dilation: int = 1,
                 concat_input: bool = False, in_index: int = -2, **kwargs):
        super().__init__(in_channels, channels, num_classes, in_index=in_index, **kwargs)
        if num_convs == 0 and channels != in_channels:
            raise ValueError(f'FCNHead with num_convs=0 needs channels == in_channels, got '
                             f'{channels} and {in_channels}')
        if num_convs == 0 and concat_input:
            raise ValueError('FCNHead: concat_input needs num_convs >= 1')
        self.concat_input = concat_input
        self.convs = nn.Sequential(*[
            _conv(in_channels if k == 0 else channels, channels, kernel_size, self.norm_cfg,
                  dilation) for k in range(num_convs)])
        if concat_input:
            self.conv_cat = _conv(in_channels + channels, channels, kernel_size, self.norm_cfg)
        self.reset_parameters()

    def features(self, feats: Sequence[Tensor]) -> Tensor:
        x = feats[self.in_index]
        out = self.convs(x)
        if self.concat_input:
            out = self.conv_cat(torch.cat([x, out], dim=1))
        return out


_TORCHVISION_RULES = [
    (r'^classifier\.0\.convs\.(\d+)\.0\.', r'decode_head.aspp.branches.\1.conv.'),
    (r'^classifier\.0\.convs\.(\d+)\.1\.', r'decode_head.aspp.branches.\1.bn.'),
    (r'^classifier\.0\.project\.0\.', 'decode_head.aspp.project.conv.'),
    (r'^classifier\.0\.project\.1\.', 'decode_head.aspp.project.bn.'),
    (r'^classifier\.1\.', 'decode_head.convs.0.conv.'),
    (r'^classifier\.2\.', 'decode_head.convs.0.bn.'),
    (r'^classifier\.4\.', 'decode_head.conv_seg.'),
    (r'^aux_classifier\.0\.', 'auxiliary_head.convs.0.conv.'),
    (r'^aux_classifier\.1\.', 'auxiliary_head.convs.0.bn.'),
    (r'^aux_classifier\.4\.', 'auxiliary_head.conv_seg.'),
]
_POOL_LAYERS = {'1': 'conv', '2': 'bn'}  # torchvision ASPPPooling: 0 pool, 1 conv, 2 norm


def convert_torchvision_deeplabv3(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a torchvision ``deeplabv3_resnet50/101`` state dict for an
    :class:`EncoderDecoder` with a ``ResNet`` backbone (``out_indices`` ending in C4, C5),
    ``ASPPHead(num_convs=1, dilations=(12, 24, 36))`` and, if present, ``FCNHead(channels=256)``
    as auxiliary head.

    torchvision's image-pooling branch is the last entry of ``classifier.0.convs``
    (``convs.{n}.1`` conv, ``convs.{n}.2`` norm); it becomes ``aspp.image_pool``. Backbone keys
    are identical. Unknown keys are returned unchanged (``load_weights`` reports them).
    """
    pool_index = max((int(m.group(1)) for k in state_dict
                      if (m := re.match(r'^classifier\.0\.convs\.(\d+)\.', k))), default=None)
    out = {}
    for key, value in state_dict.items():
        if pool_index is not None and key.startswith(f'classifier.0.convs.{pool_index}.'):
            rest = key[len(f'classifier.0.convs.{pool_index}.'):]
            sub, _, name = rest.partition('.')
            if sub in _POOL_LAYERS:
                key = f'decode_head.aspp.image_pool.{_POOL_LAYERS[sub]}.{name}'
        else:
            for pattern, replacement in _TORCHVISION_RULES:
                new = re.sub(pattern, replacement, key)
                if new != key:
                    key = new
                    break
        out[key] = value
    return out
