"""SpineNet (Du et al., CVPR 2020): a scale-permuted backbone found by architecture search.

After a stem (7x7 conv s2, 3x3 max-pool s2, two level-2 bottleneck block groups) the network is a
list of blocks whose levels go up and down. Every block has two parents (earlier blocks,
:data:`BLOCK_SPECS` gives their indices in the running feature list, which starts with the two
stem blocks) that are resampled to the block's level and width and summed; an output block also
adds every earlier block of the same level and width that nothing has consumed yet. The last five
blocks are the outputs at levels 3..7, each followed by a 1x1 endpoint conv. Architecture, counts
and published numbers: reference/ANCHORS.md 1.3 (the official TF code is tensorflow/tpu
``models/official/detection/modeling/architecture/spinenet.py``).

Cross-scale resampling of a parent (:class:`Resample`): 1x1 conv+norm+act to
``int(alpha * C')`` channels (``C'`` = the parent's channels, divided by 4 for a bottleneck
parent); to go down, a 3x3 stride-2 conv+norm+act, then 3x3 stride-2 max-pools for the remaining
factor; to go up, nearest upsampling; then a 1x1 conv+norm (no activation) to the block's input
width (``4 * filters`` for a bottleneck block, ``filters`` for a residual one).

A level-``l`` map is ``ceil(H / 2^l) x ceil(W / 2^l)`` (every stride-2 layer pads, so it rounds
up); upsampling resizes to that size, so inputs that are not multiples of 128 work too (for
multiples of 128 it is plain nearest upsampling by 2^k).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from mmcv.cnn import ConvModule, build_activation_layer
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import StochasticDepth

from toolbox.models.bases import BaseBackbone, kaiming_init_conv_norm
from toolbox.models.layers import resolve_norm_cfg
from toolbox.registry import MODELS

# Filters of a block at each level before ``filter_size_scale`` (a bottleneck outputs 4x this).
FILTER_SIZE_MAP = {1: 32, 2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256}

# The official SpineNet-49 block specification (TF ``SPINENET_BLOCK_SPECS``): (level, block type,
# (parent index, parent index), is_output). Indices refer to the running list of features, whose
# first two entries are the stem blocks (the two level-2 bottlenecks, no parents).
BLOCK_SPECS: tuple[tuple[int, str, tuple[int, int] | None, bool], ...] = (
    (2, 'bottleneck', None, False),
    (2, 'bottleneck', None, False),
    (2, 'bottleneck', (0, 1), False),
    (4, 'residual', (0, 1), False),
    (3, 'bottleneck', (2, 3), False),
    (4, 'bottleneck', (2, 4), False),
    (6, 'residual', (3, 5), False),
    (4, 'bottleneck', (3, 5), False),
    (5, 'residual', (6, 7), False),
    (7, 'residual', (6, 8), False),
    (5, 'bottleneck', (8, 9), False),
    (5, 'bottleneck', (8, 10), False),
    (4, 'bottleneck', (5, 10), True),
    (3, 'bottleneck', (4, 10), True),
    (5, 'bottleneck', (7, 12), True),
    (7, 'bottleneck', (5, 14), True),
    (6, 'bottleneck', (12, 14), True),
)
NUM_STEM_BLOCKS = 2

# TF ``SCALING_MAP``: endpoint channels, filter size scale, resample alpha, block repeats.
ARCH_SETTINGS: dict[str, dict] = {
    '49S': dict(endpoints_num_filters=128, filter_size_scale=0.65, resample_alpha=0.5,
                block_repeats=1),
    '49': dict(endpoints_num_filters=256, filter_size_scale=1.0, resample_alpha=0.5,
               block_repeats=1),
    '96': dict(endpoints_num_filters=256, filter_size_scale=1.0, resample_alpha=0.5,
               block_repeats=2),
    '143': dict(endpoints_num_filters=256, filter_size_scale=1.0, resample_alpha=1.0,
                block_repeats=3),
    '143L': dict(endpoints_num_filters=256, filter_size_scale=1.3, resample_alpha=1.0,
                 block_repeats=3),
    '190': dict(endpoints_num_filters=512, filter_size_scale=1.3, resample_alpha=1.0,
                block_repeats=4),
}
OUTPUT_LEVELS = (3, 4, 5, 6, 7)


def block_out_channels(block: str, filters: int) -> int:
    """Channels a block group of ``block`` type and ``filters`` outputs."""
    return 4 * filters if block == 'bottleneck' else filters


class SpineBlock(nn.Module):
    """Bottleneck (1x1, 3x3, 1x1 to ``4 * filters``) or residual (3x3, 3x3 to ``filters``) block,
    stride 1: (B, in_ch, H, W) -> (B, out_ch, H, W).

    Every conv but the last is conv+norm+act; the last is conv+norm (its norm starts at zero
    scale with ``zero_init_residual``, as in the TF code). The shortcut is a 1x1 conv+norm
    projection when ``in_ch != out_ch``, the identity otherwise; stochastic depth
    (``drop_path_rate``, torchvision's per-sample ``'row'`` mode) drops the residual branch;
    ``out = act(branch + shortcut)``.
    """

    def __init__(self, block: str, in_ch: int, filters: int, norm_cfg: dict, act_cfg: dict,
                 drop_path_rate: float = 0.0):
        super().__init__()
        out_ch = block_out_channels(block, filters)
        if block == 'bottleneck':
            layers = [ConvModule(in_ch, filters, 1, norm_cfg=norm_cfg, act_cfg=act_cfg),
                      ConvModule(filters, filters, 3, padding=1, norm_cfg=norm_cfg,
                                 act_cfg=act_cfg),
                      ConvModule(filters, out_ch, 1, norm_cfg=norm_cfg, act_cfg=None)]
        elif block == 'residual':
            layers = [ConvModule(in_ch, filters, 3, padding=1, norm_cfg=norm_cfg,
                                 act_cfg=act_cfg),
                      ConvModule(filters, out_ch, 3, padding=1, norm_cfg=norm_cfg, act_cfg=None)]
        else:
            raise ValueError(f"SpineNet block must be 'bottleneck' or 'residual', got {block!r}")
        self.convs = nn.Sequential(*layers)
        self.shortcut = None if in_ch == out_ch else \
            ConvModule(in_ch, out_ch, 1, norm_cfg=norm_cfg, act_cfg=None)
        self.drop_path = StochasticDepth(drop_path_rate, 'row') if drop_path_rate > 0 else None
        self.act = build_activation_layer(act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        out = self.convs(x)
        if self.drop_path is not None:
            out = self.drop_path(out)
        return self.act(out + (x if self.shortcut is None else self.shortcut(x)))


class Resample(nn.Module):
    """Resample a parent map of level ``in_level`` to ``out_level`` and ``out_ch`` channels.

    (B, in_ch, ceil(H / 2^in_level), ...) -> (B, out_ch, ceil(H / 2^out_level), ...):
    ``reduce`` 1x1 conv+norm+act to ``mid_ch``; going down, ``down`` 3x3 s2 conv+norm+act then
    ``out_level - in_level - 1`` max-pools (3x3, s2, pad 1); going up, nearest resize to the
    target size; ``expand`` 1x1 conv+norm.
    """

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, in_level: int, out_level: int,
                 norm_cfg: dict, act_cfg: dict):
        super().__init__()
        self.in_level, self.out_level = in_level, out_level
        self.reduce = ConvModule(in_ch, mid_ch, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.down = ConvModule(mid_ch, mid_ch, 3, stride=2, padding=1, norm_cfg=norm_cfg,
                               act_cfg=act_cfg) if out_level > in_level else None
        self.pools = nn.Sequential(*[nn.MaxPool2d(3, stride=2, padding=1)
                                     for _ in range(out_level - in_level - 1)])
        self.expand = ConvModule(mid_ch, out_ch, 1, norm_cfg=norm_cfg, act_cfg=None)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """``size``: (h, w) of the target level."""
        x = self.reduce(x)
        if self.down is not None:
            x = self.pools(self.down(x))
        elif self.out_level < self.in_level:
            x = F.interpolate(x, size=size, mode='nearest')
        return self.expand(x)


@MODELS.register_module()
class SpineNet(BaseBackbone):
    """SpineNet-49S / 49 / 96 / 143 / 143L / 190 returning the P3..P7 endpoints.

    Input (B, in_channels, H, W); output ``k`` of ``out_indices`` is level ``3 + k``:
    (B, ``endpoints_num_filters``, ceil(H / 2^(3+k)), ceil(W / 2^(3+k))), strides 8..128.

    The scaling per variant (:data:`ARCH_SETTINGS`, TF ``SCALING_MAP``): every block's filters
    are ``int(FILTER_SIZE_MAP[level] * filter_size_scale)``, every block group repeats its block
    ``block_repeats`` times, resampling narrows by ``resample_alpha``. The connection pattern is
    :data:`BLOCK_SPECS` (a table, shared by every variant).

    Parameters (backbone alone, BN weight and bias counted): 49S 9,089,215; 49 21,831,488;
    96 36,262,976; 143 60,247,616; 190 126,587,664 (equal to reference/spinenet_count.py).

    Args:
        arch: a key of :data:`ARCH_SETTINGS`, or a dict with the same four keys (e.g. a narrow
            model for tests).
        in_channels: channels of the input image.
        out_indices: which of the P3..P7 endpoints to return (0 -> P3 ... 4 -> P7).
        frozen_stages: -1 freezes nothing; 0 the stem conv; k = 1 or 2 the stem conv and the
            first k stem block groups (the scale-permuted blocks are not stages).
        norm_eval: keep every BatchNorm in eval mode (running statistics frozen) in training.
        norm_cfg: norm of every conv (``dict(type='BN')`` by default; the published recipes use
            SyncBN with momentum 0.01 and eps 1e-3).
        act_cfg: activation: ``dict(type='ReLU')`` (the 350-epoch recipes) or
            ``dict(type='SiLU')`` (swish: the 500-epoch recipes).
        drop_path_rate: stochastic depth of the scale-permuted blocks: block ``i`` of the 15
            drops its residual branch with probability ``drop_path_rate * (i + 1) / 15`` (TF
            ``init_drop_connect_rate``, 0.2 in the swish recipes); the stem blocks never drop.
        zero_init_residual: start the last norm of every block at zero scale (TF ``init_zero``).
        pretrained, init_cfg: see :class:`BaseBackbone`.
    """

    arch_settings = ARCH_SETTINGS
    block_specs = BLOCK_SPECS

    def __init__(self,
                 arch: str | dict = '49',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3, 4),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: dict | None = None,
                 act_cfg: dict | None = None,
                 drop_path_rate: float = 0.0,
                 zero_init_residual: bool = True,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, pretrained=pretrained, init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in self.arch_settings:
                raise ValueError(f'SpineNet arch must be one of {list(self.arch_settings)} or a '
                                 f'dict, got {arch!r}')
            arch = self.arch_settings[arch]
        keys = set(ARCH_SETTINGS['49'])
        if set(arch) != keys:
            raise ValueError(f'SpineNet arch dict needs exactly the keys {sorted(keys)}, got '
                             f'{sorted(arch)}')
        self.check_out_indices(len(OUTPUT_LEVELS))
        if not -1 <= frozen_stages <= NUM_STEM_BLOCKS:
            raise ValueError(f'SpineNet frozen_stages must be in -1..{NUM_STEM_BLOCKS}, got '
                             f'{frozen_stages}')
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f'SpineNet drop_path_rate must be in [0, 1), got {drop_path_rate}')
        self.arch = dict(arch)
        scale, alpha = arch['filter_size_scale'], arch['resample_alpha']
        repeats, endpoint_ch = arch['block_repeats'], arch['endpoints_num_filters']
        norm_cfg = resolve_norm_cfg(norm_cfg or dict(type='BN', requires_grad=True), 2)
        act_cfg = dict(act_cfg or dict(type='ReLU', inplace=True))
        self.zero_init_residual = zero_init_residual

        def block_group(block, in_ch, filters, rate):
            blocks = []
            for _ in range(repeats):
                blocks.append(SpineBlock(block, in_ch, filters, norm_cfg, act_cfg, rate))
                in_ch = block_out_channels(block, filters)
            return nn.Sequential(*blocks)

        self.stem = nn.Sequential(
            ConvModule(in_channels, 64, 7, stride=2, padding=3, norm_cfg=norm_cfg,
                       act_cfg=act_cfg),
            nn.MaxPool2d(3, stride=2, padding=1))
        # Running feature list: (level, block type, channels) of every block built so far.
        feats: list[tuple[int, str, int]] = []
        self.stem_blocks = nn.ModuleList()
        in_ch = 64
        for level, block, parents, _ in BLOCK_SPECS[:NUM_STEM_BLOCKS]:
            filters = int(FILTER_SIZE_MAP[level] * scale)
            self.stem_blocks.append(block_group(block, in_ch, filters, 0.0))
            in_ch = block_out_channels(block, filters)
            feats.append((level, block, in_ch))

        num_permuted = len(BLOCK_SPECS) - NUM_STEM_BLOCKS
        self.resamples = nn.ModuleList()  # two per scale-permuted block
        self.blocks = nn.ModuleList()
        self.block_levels: list[int] = []
        self.block_parents: list[tuple[int, int]] = []
        # Per output block: indices of the unused same-level, same-width features it adds.
        self.extra_inputs: list[tuple[int, ...]] = []
        uses = [0] * NUM_STEM_BLOCKS
        output_channels: dict[int, int] = {}
        self.output_blocks: dict[int, int] = {}  # level -> index in the feature list
        for i, (level, block, parents, is_output) in enumerate(BLOCK_SPECS[NUM_STEM_BLOCKS:]):
            filters = int(FILTER_SIZE_MAP[level] * scale)
            target_ch = block_out_channels(block, filters)
            pair = nn.ModuleList()
            for p in parents:
                p_level, p_block, p_ch = feats[p]
                narrow = p_ch / 4 if p_block == 'bottleneck' else p_ch
                pair.append(Resample(p_ch, int(narrow * alpha), target_ch, p_level, level,
                                     norm_cfg, act_cfg))
                uses[p] += 1
            self.resamples.append(pair)
            extra = ()
            if is_output:
                extra = tuple(j for j, (j_level, _, j_ch) in enumerate(feats)
                              if uses[j] == 0 and j_level == level and j_ch == target_ch)
                for j in extra:
                    uses[j] += 1
            self.extra_inputs.append(extra)
            self.block_levels.append(level)
            self.block_parents.append(tuple(parents))
            rate = drop_path_rate * (i + 1) / num_permuted
            self.blocks.append(block_group(block, target_ch, filters, rate))
            feats.append((level, block, target_ch))
            uses.append(0)
            if is_output:
                if level in output_channels:
                    raise ValueError(f'SpineNet block specs: two output blocks at level {level}')
                output_channels[level] = target_ch
                self.output_blocks[level] = len(feats) - 1
        if sorted(output_channels) != list(OUTPUT_LEVELS):
            raise ValueError(f'SpineNet block specs must have one output block per level '
                             f'{OUTPUT_LEVELS}, got {sorted(output_channels)}')
        self.pre_act = build_activation_layer(act_cfg)
        self.endpoints = nn.ModuleList(
            ConvModule(output_channels[level], endpoint_ch, 1, norm_cfg=norm_cfg,
                       act_cfg=act_cfg) for level in OUTPUT_LEVELS)
        self.out_channels = (endpoint_ch,) * len(self.out_indices)
        self.strides = tuple(2 ** OUTPUT_LEVELS[i] for i in self.out_indices)

        self.reset_parameters()
        self.freeze_stages()

    def reset_parameters(self) -> None:
        """Kaiming-normal fan-out convs, unit norms; the last norm of each block at zero scale
        with ``zero_init_residual``."""
        kaiming_init_conv_norm(self.modules())
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, SpineBlock) and m.convs[-1].with_norm:
                    norm = m.convs[-1].norm
                    if getattr(norm, 'weight', None) is not None:
                        nn.init.zeros_(norm.weight)

    def frozen_modules(self) -> list[nn.Module]:
        """The stem conv (and max-pool) and the first ``frozen_stages`` stem block groups."""
        if self.frozen_stages < 0:
            return []
        return [self.stem] + list(self.stem_blocks[:self.frozen_stages])

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, C, H, W) -> the P3..P7 endpoints selected by ``out_indices`` (class docstring)."""
        height, width = x.shape[-2:]
        sizes = {level: (math.ceil(height / 2 ** level), math.ceil(width / 2 ** level))
                 for level in range(2, 8)}
        x = self.stem(x)
        feats = []
        for group in self.stem_blocks:
            x = group(x)
            feats.append(x)
        for level, parents, extra, pair, group in zip(
                self.block_levels, self.block_parents, self.extra_inputs, self.resamples,
                self.blocks):
            size = sizes[level]
            merged = pair[0](feats[parents[0]], size) + pair[1](feats[parents[1]], size)
            for j in extra:
                merged = merged + feats[j]
            feats.append(group(self.pre_act(merged)))
        outs = []
        for k in self.out_indices:
            level = OUTPUT_LEVELS[k]
            outs.append(self.endpoints[k](feats[self.output_blocks[level]]))
        return tuple(outs)
