"""VGG-16 as SSD and RefineDet use it: atrous fc6/fc7, L2Norm on conv4_3 and conv5_3, extras.

Layout (RefineDet, Zhang et al. 2018; numbers in reference/ANCHORS.md 3.1):

* ``features``: torchvision's ``vgg16().features`` (or ``vgg16_bn().features`` with a norm),
  same module indices, so torchvision state dicts load without renaming. It ends with pool5
  (2x2, stride 2).
* ``fc6``: 3x3 conv 512 -> 1024, dilation 3 (padding 3); ``fc7``: 1x1 conv 1024 -> 1024.
* ``conv6_1``: 1x1 conv 1024 -> 256; ``conv6_2``: 3x3 conv stride 2, 256 -> 512.
* fc6, fc7, conv6_1, conv6_2 are mmcv ``ConvModule``s (conv [+ norm] + ReLU): keys
  ``fc6.conv.weight``, ``fc6.conv.bias`` (no bias with a norm), ``fc6.bn.*``.
* ``conv4_3_norm`` / ``conv5_3_norm``: :class:`L2Norm` with initial scales 10 and 8.

Outputs: ``(conv4_3_norm, conv5_3_norm, fc7, conv6_2)`` at strides 8, 16, 32, 64 with
512, 512, 1024, 512 channels (40/20/10/5 cells for a 320x320 input, 64/32/16/8 for 512x512).

Pretrained weights: torchvision ``vgg16`` checkpoints load into ``features``; ``fc6``/``fc7``
are made from torchvision's fully connected ``classifier.0``/``classifier.3`` by decimation,
SSD's "reduced fc" recipe (see :func:`reduce_torchvision_fc`). They are loaded by
``init_weights()``, which the Runner calls when training starts (before ``load_from``), so that
building a model never reads or downloads a checkpoint.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from mmcv.cnn import ConvModule
from torch import Tensor, nn

from toolbox.engine.weights import load_weights, read_state_dict
from toolbox.models.bases import BaseBackbone
from toolbox.models.layers import build_norm_layer
from toolbox.registry import MODELS

VGG16_CONVS_PER_STAGE = (2, 2, 3, 3, 3)


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (ParseNet, SSD).

    ``y[:, c] = weight[c] * x[:, c] / (||x||_2 over channels + eps)`` for x (B, C, H, W).
    """

    def __init__(self, channels: int, scale: float, eps: float = 1e-10):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight[None, :, None, None]


def reduce_torchvision_fc(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Turn torchvision VGG-16 ``classifier`` weights into RefineDet's ``fc6``/``fc7`` convs.

    SSD's "fc_reduced" recipe: fc6 (4096, 512 * 7 * 7) is viewed as a 7x7 conv and decimated
    to every 4th filter and every 3rd tap, giving a (1024, 512, 3, 3) conv used with dilation
    3; fc7 (4096, 4096) keeps every 4th output and input, giving (1024, 1024, 1, 1).
    The consumed ``classifier.0``/``classifier.3`` keys are removed; others (the 1000-class
    ``classifier.6``) stay and are reported as unexpected by ``load_weights`` (so are the fc6 /
    fc7 biases of a VGG with ``norm_cfg``, whose convs have none).
    """
    out = dict(state_dict)
    if 'classifier.0.weight' in out:
        fc6 = out.pop('classifier.0.weight').reshape(4096, 512, 7, 7)
        out['fc6.conv.weight'] = fc6[::4, :, ::3, ::3].contiguous()
        out['fc6.conv.bias'] = out.pop('classifier.0.bias')[::4].contiguous()
    if 'classifier.3.weight' in out:
        fc7 = out.pop('classifier.3.weight')
        out['fc7.conv.weight'] = fc7[::4, ::4].reshape(1024, 1024, 1, 1).contiguous()
        out['fc7.conv.bias'] = out.pop('classifier.3.bias')[::4].contiguous()
    return out


@MODELS.register_module()
class VGG(BaseBackbone):
    """VGG-16 backbone of SSD / RefineDet (see the module docstring for the layout).

    Input (B, 3, H, W). Four feature points ``(conv4_3, conv5_3, fc7, conv6_2)``, maps
    (B, out_channels[k], H / s_k, W / s_k) with s = (8, 16, 32, 64) when H and W are multiples
    of 64 (otherwise floor divisions per pool); ``forward`` returns those in ``out_indices``.

    Args:
        stage_channels: width of the five conv stages (64, 128, 256, 512, 512). Smaller values
            give a narrow VGG for CPU experiments (torchvision weights then do not fit).
        fc_channels: width of fc6 and fc7 (1024).
        extra_channels: widths of conv6_1 and conv6_2 (256, 512).
        fc6_dilation: dilation (and padding) of the 3x3 fc6 (3).
        l2_norm_scales: initial L2Norm scales of conv4_3 and conv5_3 (10, 8); ``None`` leaves
            both un-normalised (useful with ``norm_cfg``).
        norm_cfg: ``None`` for plain VGG-16 (the paper); ``dict(type='BN')`` puts a norm after
            every conv of ``features`` in torchvision's ``vgg16_bn`` layout, and after fc6,
            fc7 and the extras (``fc6.bn`` ..., whose convs then have no bias).
        out_indices: feature points to return, ascending, in 0..3.
        norm_eval: keep every BatchNorm in eval mode during training.
        pretrained: torchvision-format checkpoint path or ``'torchvision://vgg16'``, loaded
            by ``init_weights()`` (see :meth:`load_pretrained`): its ``classifier`` is
            converted by :func:`reduce_torchvision_fc` and :func:`load_weights` logs every key
            that was not loaded.
        init_cfg: mmengine ``init_cfg``, e.g. ``dict(type='Pretrained', checkpoint=path)``.
    """

    def __init__(self,
                 stage_channels: Sequence[int] = (64, 128, 256, 512, 512),
                 fc_channels: int = 1024,
                 extra_channels: Sequence[int] = (256, 512),
                 fc6_dilation: int = 3,
                 l2_norm_scales: Sequence[float] | None = (10.0, 8.0),
                 norm_cfg: dict | None = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 norm_eval: bool = False,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(out_indices=out_indices, norm_eval=norm_eval, pretrained=pretrained,
                         init_cfg=init_cfg)
        if len(stage_channels) != 5 or len(extra_channels) != 2:
            raise ValueError(f'VGG needs 5 stage_channels and 2 extra_channels, got '
                             f'{tuple(stage_channels)} and {tuple(extra_channels)}')
        if l2_norm_scales is not None and len(l2_norm_scales) != 2:
            raise ValueError(f'l2_norm_scales needs 2 values (conv4_3, conv5_3) or None, got '
                             f'{tuple(l2_norm_scales)}')
        self.check_out_indices(4)
        self.norm_cfg = norm_cfg

        # torchvision's vgg16(_bn).features layout (module indices are checkpoint keys)
        layers: list[nn.Module] = []
        in_ch = 3
        self._stage_ends = []  # index in ``features`` just after relu4_3 and relu5_3
        for stage, (width, num_convs) in enumerate(zip(stage_channels, VGG16_CONVS_PER_STAGE)):
            for _ in range(num_convs):
                layers.append(nn.Conv2d(in_ch, width, 3, padding=1))
                if norm_cfg is not None:
                    layers.append(build_norm_layer(norm_cfg, width)[1])
                layers.append(nn.ReLU(inplace=True))
                in_ch = width
            if stage >= 3:
                self._stage_ends.append(len(layers))
            layers.append(nn.MaxPool2d(2, stride=2))
        self.features = nn.Sequential(*layers)

        self.fc6 = ConvModule(in_ch, fc_channels, 3, padding=fc6_dilation,
                              dilation=fc6_dilation, norm_cfg=norm_cfg)
        self.fc7 = ConvModule(fc_channels, fc_channels, 1, norm_cfg=norm_cfg)
        self.conv6_1 = ConvModule(fc_channels, extra_channels[0], 1, norm_cfg=norm_cfg)
        self.conv6_2 = ConvModule(extra_channels[0], extra_channels[1], 3, stride=2, padding=1,
                                  norm_cfg=norm_cfg)
        if l2_norm_scales is not None:
            self.conv4_3_norm = L2Norm(stage_channels[3], l2_norm_scales[0])
            self.conv5_3_norm = L2Norm(stage_channels[4], l2_norm_scales[1])
        else:
            self.conv4_3_norm = self.conv5_3_norm = nn.Identity()

        channels = (stage_channels[3], stage_channels[4], fc_channels, extra_channels[1])
        self.out_channels = tuple(channels[i] for i in self.out_indices)
        self.strides = tuple((8, 16, 32, 64)[i] for i in self.out_indices)
        self.reset_parameters()
        self.freeze_stages()

    def reset_parameters(self) -> None:
        """torchvision's VGG initialisation for ``features``, Xavier for fc6/fc7/extras (as
        the RefineDet PyTorch port initialises the layers it adds); unit-scale norms."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                if name.startswith('features'):
                    nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
                else:
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def load_pretrained(self, checkpoint: str, prefix_map=None) -> dict[str, list[str]]:
        """Load a torchvision-format VGG-16 checkpoint: ``prefix_map`` renames first, then
        :func:`reduce_torchvision_fc` converts the classifier into fc6 / fc7; returns and logs
        the :func:`load_weights` report."""
        state_dict, _ = read_state_dict(checkpoint, prefix_map)
        return load_weights(self, reduce_torchvision_fc(state_dict))

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, 3, H, W) -> the maps in ``out_indices`` of (conv4_3 L2-normed, conv5_3
        L2-normed, fc7, conv6_2)."""
        end4, end5 = self._stage_ends
        for layer in self.features[:end4]:
            x = layer(x)
        conv4_3 = self.conv4_3_norm(x)
        for layer in self.features[end4:end5]:
            x = layer(x)
        conv5_3 = self.conv5_3_norm(x)
        for layer in self.features[end5:]:
            x = layer(x)
        fc7 = self.fc7(self.fc6(x))
        conv6_2 = self.conv6_2(self.conv6_1(fc7))
        feats = (conv4_3, conv5_3, fc7, conv6_2)
        return tuple(feats[i] for i in self.out_indices)
