"""Attention blocks that re-weight a feature map: SE, SK, CBAM and the GC block.

Every block is a stage plugin (``plugins=[dict(cfg=dict(type='SE'), ...)]`` in a backbone
config): its first argument is ``in_channels``, every other argument has a default, and it maps
(B, C, H, W) -> (B, C, H, W) with the input's dtype, for any H, W >= 1 and any batch size, in
training mode too.

==================  =====================  ==============================================
registry name       class                  paper
==================  =====================  ==============================================
'SE'                SqueezeExcitation      Hu et al. 2018, Squeeze-and-Excitation Networks
'SK'                SelectiveKernel        Li et al. 2019, Selective Kernel Networks
'CBAM'              CBAM                   Woo et al. 2018, CBAM
'ContextBlock'      GlobalContextBlock     Cao et al. 2019, GCNet (mmcv's ContextBlock)
==================  =====================  ==============================================

Parameter names follow timm (SE, SK) and mmcv (GC), so that their weights load by name.
Every block has ``reset_parameters()``, which restores its own initialisation: a backbone that
re-initialises all of its convs after building its plugins calls it to undo that.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.context_block import ContextBlock
from torch import Tensor, nn

from toolbox.registry import MODELS


def divisible_channels(value: float, divisor: int) -> int:
    """``value`` rounded to the nearest multiple of ``divisor``, at least ``divisor``.

    timm's ``make_divisible(value, divisor, round_limit=0)``: halves round up
    (``int(value + divisor / 2)``) and the result never drops to 0 (64 / 16 = 4 -> 8 for
    ``divisor=8``; 256 / 16 -> 16; 2048 / 16 -> 128).
    """
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class BatchNorm2dFallbackToRunningStats(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that normalises with its running statistics when a training batch
    holds a single value per channel.

    Batch statistics of one value are undefined (``nn.BatchNorm2d`` raises "Expected more than
    1 value per channel when training"); the attention branches of SK and CBAM meet that case
    at batch 1, after global pooling or on a 1x1 map. There the layer acts as in eval mode and
    leaves the running statistics untouched; otherwise it is ``nn.BatchNorm2d`` (same
    parameters and buffers, so BatchNorm state dicts load, and ``norm_eval`` freezes it).
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.numel() == x.shape[1]:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                training=False, eps=self.eps)
        return super().forward(x)


@MODELS.register_module(name='SE')
class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``.

    ``fc1`` (C -> r) and ``fc2`` (r -> C) are 1x1 convs with bias on the pooled (B, C, 1, 1)
    vector; the gate (B, C, 1, 1) scales each channel. Equal to timm's ``SEModule`` (same
    parameter names ``fc1``, ``fc2``).

    Args:
        in_channels: C.
        ratio: r = C * ratio before rounding (the paper's reduction 16).
        channels_divisor: r is rounded to a multiple of it (:func:`divisible_channels`, timm's
            rule; 1 keeps ``round(C * ratio)``, at least 1).
        reduced_channels: r given explicitly; overrides ``ratio`` and ``channels_divisor``.
    """

    def __init__(self, in_channels: int, ratio: float = 1 / 16, channels_divisor: int = 8,
                 reduced_channels: int | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.reduced_channels = (reduced_channels if reduced_channels is not None
                                 else divisible_channels(in_channels * ratio, channels_divisor))
        self.fc1 = nn.Conv2d(in_channels, self.reduced_channels, kernel_size=1)
        self.fc2 = nn.Conv2d(self.reduced_channels, in_channels, kernel_size=1)

    def reset_parameters(self) -> None:
        """PyTorch's default conv initialisation, as at construction."""
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        gate = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()


@MODELS.register_module(name='SK')
class SelectiveKernel(nn.Module):
    """Selective kernel unit: M conv branches with different receptive fields, mixed per channel
    by a softmax attention over the branches.

    Branch m is conv 3x3 (dilation ``dilations[m]``, padding = dilation, ``groups``) + BN + ReLU,
    C -> C, giving U_m (B, C, H, W). Fuse: ``s = mean_hw(sum_m U_m)`` (B, C, 1, 1);
    ``z = relu(bn(fc_reduce(s)))`` (B, d, 1, 1); ``a = softmax_m(fc_select(z))`` with
    ``fc_select`` producing (B, M * C, 1, 1) read as (B, M, C, 1, 1), branch-major. Output
    ``sum_m a_m * U_m``. The default branches (dilation 1 and 2) are the paper's 3x3 and
    "5x5 as a dilated 3x3".

    d follows the paper: ``d = max(int(C * ratio), min_channels)`` (r = 16, L = 32), unless
    ``reduced_channels`` is given (timm uses ``make_divisible(C * ratio, 8)`` instead: pass its
    value there to reproduce a timm model).

    SKNet proper replaces the 3x3 conv of each ResNeXt bottleneck by this unit (with
    ``groups=32``). As a stage plugin it is inserted after a conv instead (stride 1, C -> C),
    which leaves every parameter of the host block in place, so the host's pretrained weights
    still load; the unit itself starts from its initialisation.

    Parameter names are timm's ``SelectiveKernel`` (``split_input=False``): ``paths.{m}.conv``,
    ``paths.{m}.bn``, ``attn.fc_reduce``, ``attn.bn``, ``attn.fc_select``.

    Args:
        in_channels: C.
        dilations: one 3x3 branch per entry, with that dilation.
        groups: groups of every branch conv; must divide C.
        ratio: d = C * ratio before the ``min_channels`` floor.
        min_channels: the paper's L, the smallest d.
        reduced_channels: d given explicitly.
    """

    def __init__(self, in_channels: int, dilations: tuple[int, ...] = (1, 2), groups: int = 1,
                 ratio: float = 1 / 16, min_channels: int = 32,
                 reduced_channels: int | None = None):
        super().__init__()
        if in_channels % groups:
            raise ValueError(f'SelectiveKernel: groups={groups} must divide '
                             f'in_channels={in_channels}')
        if len(dilations) < 2:
            raise ValueError(f'SelectiveKernel: dilations={dilations} needs at least two '
                             f'branches to select between')
        self.in_channels = in_channels
        self.num_branches = len(dilations)
        self.reduced_channels = (reduced_channels if reduced_channels is not None
                                 else max(int(in_channels * ratio), min_channels))
        self.paths = nn.ModuleList(
            nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, in_channels, 3, padding=dilation, dilation=dilation,
                               groups=groups, bias=False),
                bn=BatchNorm2dFallbackToRunningStats(in_channels),
                act=nn.ReLU(inplace=True)))
            for dilation in dilations)
        self.attn = nn.Sequential(OrderedDict(
            fc_reduce=nn.Conv2d(in_channels, self.reduced_channels, 1, bias=False),
            bn=BatchNorm2dFallbackToRunningStats(self.reduced_channels),
            act=nn.ReLU(inplace=True),
            fc_select=nn.Conv2d(self.reduced_channels, in_channels * self.num_branches, 1,
                                bias=False)))

    def reset_parameters(self) -> None:
        """PyTorch's default conv initialisation, BN weight 1 and bias 0, as at construction."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        branches = torch.stack([path(x) for path in self.paths], dim=1)  # (B, M, C, H, W)
        logits = self.attn(branches.sum(1).mean((2, 3), keepdim=True))   # (B, M * C, 1, 1)
        weights = logits.view(x.shape[0], self.num_branches, -1, 1, 1).softmax(dim=1)
        return (branches * weights).sum(1)


@MODELS.register_module(name='CBAM')
class CBAM(nn.Module):
    """Convolutional block attention module: channel attention, then spatial attention.

    Channel: a shared MLP (``fc1`` C -> r, ReLU, ``fc2`` r -> C, 1x1 convs without bias) on the
    average- and the max-pooled (B, C, 1, 1) vectors; ``x' = x * sigmoid(mlp(avg) + mlp(max))``.
    Spatial: the channel mean and channel max of ``x'`` (B, 2, H, W) -> 7x7 conv (padding 3, no
    bias) -> BN -> sigmoid gives (B, 1, H, W); output ``x' * gate``. The BN follows the paper's
    "conv + BN" spatial branch (and timm's ``CbamModule``, which this equals with its parameters
    ``channel.fc1/fc2`` -> ``fc1/fc2`` and ``spatial.conv.conv/bn`` -> ``spatial_conv/bn``).

    Args:
        in_channels: C.
        ratio: r = round(C * ratio), at least 1 (timm's ``rd_divisor=1``; the paper's 16).
        reduced_channels: r given explicitly.
        spatial_kernel_size: odd kernel of the spatial conv (7).
    """

    def __init__(self, in_channels: int, ratio: float = 1 / 16,
                 reduced_channels: int | None = None, spatial_kernel_size: int = 7):
        super().__init__()
        if spatial_kernel_size % 2 == 0:
            raise ValueError(f'CBAM: spatial_kernel_size={spatial_kernel_size} must be odd so '
                             f'that the map keeps its size')
        self.in_channels = in_channels
        self.reduced_channels = (reduced_channels if reduced_channels is not None
                                 else divisible_channels(in_channels * ratio, 1))
        self.fc1 = nn.Conv2d(in_channels, self.reduced_channels, 1, bias=False)
        self.fc2 = nn.Conv2d(self.reduced_channels, in_channels, 1, bias=False)
        self.spatial_conv = nn.Conv2d(2, 1, spatial_kernel_size,
                                      padding=spatial_kernel_size // 2, bias=False)
        self.spatial_bn = BatchNorm2dFallbackToRunningStats(1)

    def reset_parameters(self) -> None:
        """PyTorch's default conv initialisation, BN weight 1 and bias 0, as at construction."""
        for module in (self.fc1, self.fc2, self.spatial_conv, self.spatial_bn):
            module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        # One MLP pass over both pooled vectors, stacked along the batch.
        pooled = torch.cat((x.mean((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)))
        avg_term, max_term = self.fc2(F.relu(self.fc1(pooled))).chunk(2)
        x = x * (avg_term + max_term).sigmoid()
        descriptor = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), dim=1)
        return x * self.spatial_bn(self.spatial_conv(descriptor)).sigmoid()


@MODELS.register_module(name='ContextBlock')
class GlobalContextBlock(ContextBlock):
    """GC block: mmcv's ``ContextBlock`` (GCNet) with a default ``ratio``.

    ``out = x + transform(context)``: attention pooling (``conv_mask`` C -> 1, softmax over
    H * W) gives a context (B, C, 1, 1), transformed by ``channel_add_conv`` (1x1 conv
    C -> C * ratio, LayerNorm, ReLU, 1x1 conv back to C) and broadcast-added. mmcv zero-inits
    that last conv, so the block starts as the identity. Parameter names are mmcv's, so mmdet
    GCNet checkpoints load.

    mmcv requires ``ratio``; the subclass gives it the default 1/16 (GCNet's r16 setting,
    mmdet's ``gcb=dict(ratio=1/16)``) so that ``dict(type='ContextBlock')`` builds as every
    other stage plugin does, and rejects a ratio that leaves no bottleneck channel (mmcv would
    build 0-channel convs).

    Args:
        in_channels: C.
        ratio: bottleneck width C * ratio (truncated to an int by mmcv; at least 1, and a width
            of 1 makes the LayerNorm output its bias alone, a context-independent term).
        pooling_type: 'att' (attention pooling) or 'avg'.
        fusion_types: ('channel_add',) and/or 'channel_mul'.
    """

    def __init__(self, in_channels: int, ratio: float = 1 / 16, pooling_type: str = 'att',
                 fusion_types: tuple[str, ...] = ('channel_add',)):
        if int(in_channels * ratio) < 1:
            raise ValueError(f'ContextBlock: in_channels * ratio = {in_channels} * {ratio} '
                             f'leaves no bottleneck channel (mmcv truncates it to an int)')
        super().__init__(in_channels, ratio, pooling_type=pooling_type,
                         fusion_types=fusion_types)
