"""Swin Transformer backbones (Liu et al. 2021): shifted-window attention, strides 4 to 32.

Structure (``arch`` T / S / B / L, reference/ANCHORS.md 1.4): a 4x4 patch embedding (conv +
LayerNorm), then four stages of Swin blocks. A block is ``x + DropPath(W-MSA(LN(x)))`` followed
by ``x + DropPath(MLP(LN(x)))``; odd blocks shift the windows by ``window_size // 2`` and mask the
attention between regions that the cyclic shift made adjacent. A patch merging (2x2
neighbourhood concat, LayerNorm, linear 4C -> 2C) ends every stage but the last; each returned
stage output goes through its own LayerNorm (``norm{i}``), as in MMDetection and the official
detection code.

Any input size: the patch embedding and the patch merging pad the bottom / right edge with
zeros to a multiple of their stride, and every block pads its (normalised) tokens to a multiple
of the window, then rolls, attends and crops back (the order of the official detection code,
MMDetection and HF ``transformers``). ``size_divisor`` is therefore 1.

Windows along a small side (``always_partition``): with ``False`` (default) a side that is no
longer than the window is not shifted, so at 224x224 the last stage (7x7) attends within one
unshifted window, exactly as the ImageNet-1K checkpoints were trained (timm's rule, per side;
the official classification code applies it when the shorter side fits). With ``True`` every
odd block shifts whatever the size, as MMDetection, the official detection code and HF
``SwinBackbone`` do, i.e. how their COCO checkpoints were trained. The two only differ when a
stage side is at most ``window_size`` (an input side of at most 32 * window_size = 224).

Parameter names are MMDetection's (``mmdet.models.backbones.SwinTransformer``), because the
blocks are mmcv's ``PatchEmbed`` / ``FFN`` and a :class:`PatchMerging` equal to mmcv's:
``patch_embed.projection``, ``stages.{i}.blocks.{j}.{norm1, attn.w_msa.{...}, norm2,
ffn.layers.0.0, ffn.layers.1}`` (``w_msa``: ``relative_position_bias_table``, ``qkv``,
``proj``), ``stages.{i}.downsample.{norm, reduction}`` (the downsample at the *end* of stage i)
and ``norm{i}``. The official (microsoft) and timm checkpoint layouts are converted by
:mod:`toolbox_plugins.backbones.swin_checkpoints`.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from toolbox.models.bases import BaseBackbone
from toolbox.models.layers import build_norm_layer, resolve_norm_cfg
from toolbox.registry import MODELS

from .swin_checkpoints import CHECKPOINT_FORMATS, convert_swin_state_dict

with warnings.catch_warnings():
    # mmcv-lite has no mmcv.ops: the module warns that MultiScaleDeformableAttention (unused here)
    # is unavailable, at every import.
    warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformableAttention')
    from mmcv.cnn.bricks.drop import build_dropout
    from mmcv.cnn.bricks.transformer import FFN, PatchEmbed

# Attention logit added between tokens that the cyclic shift made neighbours (official value).
MASK_VALUE = -100.0


# ------------------------------------------------------------------------------ window helpers

def relative_position_index(window_size: int) -> Tensor:
    """(N, N) long, N = window_size**2: index into the ((2 ws - 1)**2, heads) bias table of the
    offset between token i and token j of a window (tokens in row-major order)."""
    ws = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing='ij'))
    coords = coords.flatten(1)  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :] + (ws - 1)  # (2, N, N), in 0..2 ws - 2
    return rel[0] * (2 * ws - 1) + rel[1]


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B, Hp, Wp, C) with Hp, Wp multiples of ``window_size`` -> (B * nW, ws * ws, C), windows
    in row-major order per image, images consecutive."""
    b, h, w, c = x.shape
    ws = window_size
    x = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: Tensor, window_size: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws * ws, C) -> (B, Hp, Wp, C)."""
    ws = window_size
    c = windows.shape[-1]
    x = windows.view(-1, height // ws, width // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, height, width, c)


def shifted_window_mask(height: int, width: int, window_size: int, shift: tuple[int, int],
                        device=None, dtype=torch.float32) -> Tensor:
    """(nW, N, N) additive attention mask of the shifted windows of a padded (Hp, Wp) map:
    0 between tokens of the same region, ``MASK_VALUE`` between tokens that the cyclic shift by
    ``shift`` = (sh, sw) brought together. A side with shift 0 has a single region."""
    def regions(size: int, s: int) -> Tensor:
        idx = torch.arange(size, device=device)
        if s == 0:
            return torch.zeros_like(idx)
        return (idx >= size - window_size).long() + (idx >= size - s).long()

    label = regions(height, shift[0])[:, None] * 3 + regions(width, shift[1])[None, :]
    label = window_partition(label[None, :, :, None], window_size)[..., 0]  # (nW, N)
    different = label[:, None, :] != label[:, :, None]
    return torch.zeros(different.shape, device=device, dtype=dtype).masked_fill_(
        different, MASK_VALUE)


# ------------------------------------------------------------------------------------ modules

class WindowMSA(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias.

    Input (B * nW, N, C) tokens of nW windows per image (N = window_size**2), optional additive
    mask (nW, N, N); output (B * nW, N, C).

    Explicit ``softmax(q k^T / sqrt(d) + bias + mask) v`` (timm's default path), not
    ``F.scaled_dot_product_attention`` with bias + mask as its float mask: on an H200 (Swin-T,
    2x512x512, fp32, 5 interleaved rounds of 20 passes) forward 8.4-8.8 ms against 9.1-13.2 ms
    with SDPA, forward + backward equal within the noise (32-38 against 26-39 ms).
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int,
                 qkv_bias: bool = True, attn_drop: float = 0., proj_drop: float = 0.):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by num_heads '
                             f'{num_heads}')
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (embed_dims // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer('relative_position_index', relative_position_index(window_size),
                             persistent=False)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def relative_position_bias(self) -> Tensor:
        """(heads, N, N) bias added to the attention logits."""
        n = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        bw, n, c = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).view(bw, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B * nW, heads, N, N)
        attn = attn + self.relative_position_bias().unsqueeze(0)
        if mask is not None:  # windows of one image are consecutive: broadcast over B
            nw = mask.shape[0]
            attn = (attn.view(-1, nw, heads, n, n) + mask[:, None]).view(bw, heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj_drop(self.proj(out))


class ShiftWindowMSA(nn.Module):
    """(Shifted-)window attention on a token map: pad to the window, roll, attend, crop.

    ``forward(x, hw_shape, shift, mask)``: ``x`` (B, H * W, C) tokens in row-major order,
    ``shift`` = (sh, sw) cyclic shift (0 = none), ``mask`` the (nW, N, N) mask of
    :func:`shifted_window_mask` for the padded map when shifted. Returns (B, H * W, C).
    Padding tokens are zero vectors that take part in the attention (no mask), as in the official
    detection code and MMDetection. The attention module is ``w_msa`` (MMDetection's key names).
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, qkv_bias: bool,
                 attn_drop: float, proj_drop: float):
        super().__init__()
        self.window_size = window_size
        self.w_msa = WindowMSA(embed_dims, num_heads, window_size, qkv_bias, attn_drop,
                               proj_drop)

    def forward(self, x: Tensor, hw_shape: tuple[int, int], shift: tuple[int, int] = (0, 0),
                mask: Tensor | None = None) -> Tensor:
        b, _, c = x.shape
        h, w = hw_shape
        ws = self.window_size
        x = x.view(b, h, w, c)
        if h % ws or w % ws:
            x = F.pad(x, (0, 0, 0, (-w) % ws, 0, (-h) % ws))
        hp, wp = x.shape[1:3]
        shifted = any(shift)
        if shifted:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        x = window_reverse(self.w_msa(window_partition(x, ws), mask if shifted else None), ws,
                           hp, wp)
        if shifted:
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :h, :w].reshape(b, h * w, c)


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat, LayerNorm, linear 4C -> 2C: (B, H * W, C) tokens of an (H, W)
    map -> (B, ceil(H / 2) * ceil(W / 2), 2C); an odd side is zero-padded at the bottom / right.

    mmcv's ``PatchMerging`` (kernel 2, stride 2, 'corner' padding) with its parameters
    (``norm``, ``reduction``; 4C inputs in ``nn.Unfold`` order c * 4 + kh * 2 + kw) and
    checkpoints, but faster: the tokens are gathered offset-major ((kh * 2 + kw) * C + c: whole
    C-vectors move) and the parameters permuted to match (LayerNorm and a linear map commute
    with a channel permutation). On a 2-core Xeon (Swin-T, 2x512x512, fp32) the first merging
    took 5.2 ms against mmcv's 16.1 ms (NCHW permute + ``nn.Unfold`` + transpose; timm 5.5 ms).
    """

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict):
        super().__init__()
        self.norm = build_norm_layer(norm_cfg, 4 * in_channels, spatial_dims=0)[1]
        if not isinstance(self.norm, nn.LayerNorm):
            raise TypeError(f'PatchMerging normalises with a LayerNorm, got {norm_cfg}')
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: Tensor, hw_shape: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
        b, _, c = x.shape
        h, w = hw_shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        hm, wm = (h + 1) // 2, (w + 1) // 2
        x = x.view(b, hm, 2, wm, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hm * wm, 4 * c)
        # (..., 4C) channel-major -> offset-major; a strided copy, 7x faster than an index
        weight, bias, reduction = (t.view(*t.shape[:-1], c, 4).transpose(-2, -1).reshape(t.shape)
                                   for t in (self.norm.weight, self.norm.bias,
                                             self.reduction.weight))
        x = F.layer_norm(x, (4 * c,), weight, bias, self.norm.eps)
        return F.linear(x, reduction), (hm, wm)


class SwinBlock(nn.Module):
    """Pre-norm Swin block: (B, H * W, C) -> (B, H * W, C).

    ``x + DropPath(attn(norm1(x)))`` then ``x + DropPath(ffn(norm2(x)))`` (mmcv ``FFN``: fc,
    activation, fc, with the identity and DropPath inside).
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, mlp_ratio: float,
                 qkv_bias: bool, drop_rate: float, attn_drop_rate: float, drop_path_rate: float,
                 norm_cfg: dict, act_cfg: dict):
        super().__init__()
        self.norm1 = build_norm_layer(norm_cfg, embed_dims, spatial_dims=0)[1]
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size, qkv_bias,
                                   attn_drop_rate, drop_rate)
        self.drop_path = build_dropout(dict(type='DropPath', drop_prob=drop_path_rate))
        self.norm2 = build_norm_layer(norm_cfg, embed_dims, spatial_dims=0)[1]
        self.ffn = FFN(embed_dims=embed_dims, feedforward_channels=int(embed_dims * mlp_ratio),
                       num_fcs=2, ffn_drop=drop_rate, act_cfg=act_cfg, add_identity=True,
                       dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate))

    def forward(self, x: Tensor, hw_shape: tuple[int, int], shift: tuple[int, int] = (0, 0),
                mask: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape, shift, mask))
        return self.ffn(self.norm2(x), identity=x)


class SwinStage(nn.Module):
    """``depth`` Swin blocks (odd ones shifted), then an optional patch merging.

    ``forward(x, hw_shape)`` with ``x`` (B, H * W, C) returns ``(out, hw_shape, down,
    down_hw_shape)``: ``out`` (B, H * W, C) is the stage's feature; ``down`` (B, ceil(H/2) *
    ceil(W/2), 2C) the merged tokens for the next stage (``out`` again without a downsample or
    with ``downsample=False``).
    """

    def __init__(self, embed_dims: int, num_heads: int, depth: int, window_size: int,
                 mlp_ratio: float, qkv_bias: bool, drop_rate: float, attn_drop_rate: float,
                 drop_path_rates: Sequence[float], downsample: bool, always_partition: bool,
                 norm_cfg: dict, act_cfg: dict, with_cp: bool):
        super().__init__()
        self.window_size = window_size
        self.always_partition = always_partition
        self.with_cp = with_cp
        self._mask_cache: tuple = (None, None)  # (key, mask) of the last map size
        self.blocks = nn.ModuleList(
            SwinBlock(embed_dims, num_heads, window_size, mlp_ratio, qkv_bias, drop_rate,
                      attn_drop_rate, drop_path_rates[j], norm_cfg, act_cfg)
            for j in range(depth))
        self.downsample = PatchMerging(embed_dims, 2 * embed_dims, norm_cfg) \
            if downsample else None

    def shift_size(self, hw_shape: tuple[int, int]) -> tuple[int, int]:
        """The (sh, sw) cyclic shift of the shifted blocks on an (H, W) map (class docstring of
        :class:`SwinTransformer`, ``always_partition``)."""
        s = self.window_size // 2
        return tuple(s if self.always_partition or size > self.window_size else 0
                     for size in hw_shape)

    def forward(self, x: Tensor, hw_shape: tuple[int, int], downsample: bool = True):
        shift = self.shift_size(hw_shape)
        mask = None
        if any(shift):  # one mask for every shifted block of the stage
            hp, wp = (-(-size // self.window_size) * self.window_size for size in hw_shape)
            key = (hp, wp, shift, x.device, x.dtype)
            if self._mask_cache[0] != key:  # batches padded to one size reuse it
                self._mask_cache = (key, shifted_window_mask(hp, wp, self.window_size, shift,
                                                             x.device, x.dtype))
            mask = self._mask_cache[1]
        for j, block in enumerate(self.blocks):
            block_shift = shift if j % 2 else (0, 0)
            if self.with_cp and x.requires_grad:
                x = checkpoint(block, x, hw_shape, block_shift, mask, use_reentrant=False)
            else:
                x = block(x, hw_shape, block_shift, mask)
        if self.downsample is None or not downsample:
            return x, hw_shape, x, hw_shape
        down, down_hw = self.downsample(x, hw_shape)
        return x, hw_shape, down, tuple(down_hw)


# ------------------------------------------------------------------------------------ backbone

@MODELS.register_module()
class SwinTransformer(BaseBackbone):
    """Swin Transformer feature extractor (Liu et al. 2021) returning stride 4/8/16/32 maps.

    Input (B, in_channels, H, W), any H and W (padded inside, module docstring). Output: a tuple
    with one (B, C_i, ceil(H / s_i), ceil(W / s_i)) map per entry of ``out_indices``, with
    C_i = embed_dims * 2**i and s_i = 4 * 2**i, each after its LayerNorm ``norm{i}``.

    ========  ==========  =============  ================  =====================
    arch      embed_dims  depths         num_heads         params (+1000-cls head)
    ========  ==========  =============  ================  =====================
    'T'       96          (2, 2, 6, 2)   (3, 6, 12, 24)    28.29M
    'S'       96          (2, 2, 18, 2)  (3, 6, 12, 24)    49.61M
    'B'       128         (2, 2, 18, 2)  (4, 8, 16, 32)    87.77M
    'L'       192         (2, 2, 18, 2)  (6, 12, 24, 48)   196.53M
    ========  ==========  =============  ================  =====================

    The counts are timm's classifiers (ANCHORS.md 1.4): this backbone plus a 1000-class linear
    head, with the four output norms in place of the classifier's final norm. The official
    ImageNet recipes use drop_path_rate 0.2 / 0.3 / 0.5 / 0.2 for T / S / B / L.

    Args:
        arch: 'T', 'S', 'B', 'L', or ``dict(embed_dims=..., depths=(...), num_heads=(...))``.
        in_channels: channels of the input image.
        window_size: attention window side: 7, or 12 for the ``*_384`` checkpoints.
        patch_size: side of the patch embedding (its conv kernel and stride).
        mlp_ratio: hidden width of the MLP over embed_dims.
        qkv_bias: bias on the qkv projection.
        drop_rate: dropout after the patch embedding, in the MLP and after the attention
            projection.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth of the last block; block k of n (over all stages)
            drops its residual branches with probability ``drop_path_rate * k / (n - 1)``.
        always_partition: shift every odd block whatever the map size (MMDetection and the
            official detection code); ``False`` leaves a side that fits in one window unshifted
            (timm, the ImageNet training); see the module docstring.
        out_indices: stages whose output is returned (0 -> stride 4 ... 3 -> stride 32).
        frozen_stages: -1 freezes nothing; 0 the patch embedding; k >= 1 also stages 0..k-1
            (each with the patch merging at its end, as in MMDetection) and their output
            norms. Frozen parts get ``requires_grad=False`` and stay in eval mode (no dropout).
        norm_eval: keep BatchNorms in eval mode (the base contract); Swin has LayerNorms only,
            which have no running statistics, so it changes nothing here.
        norm_cfg: token norm config, ``dict(type='LN')``.
        act_cfg: MLP activation (mmcv), ``dict(type='GELU')``.
        with_cp: activation checkpointing: each block's activations are recomputed in the
            backward pass instead of being stored (less memory, ~1/3 more compute).
        checkpoint_format: layout of the ``pretrained`` checkpoint: 'official', 'timm',
            'mmdet', or ``None`` to detect it from the keys (:func:`convert_swin_state_dict`).
        pretrained: path of a checkpoint loaded by ``init_weights()`` through
            :meth:`load_pretrained`. For a detector checkpoint add ``prefix_map={'backbone.':
            ''}`` (``init_cfg=dict(type='Pretrained', checkpoint=PATH, prefix_map=...)``).
        init_cfg: mmengine ``init_cfg``.
    """

    arch_settings = {
        'T': dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
        'S': dict(embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
        'B': dict(embed_dims=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
        'L': dict(embed_dims=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
    }

    def __init__(self,
                 arch: str | dict = 'T',
                 in_channels: int = 3,
                 window_size: int = 7,
                 patch_size: int = 4,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 always_partition: bool = False,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 norm_cfg: dict | None = None,
                 act_cfg: dict | None = None,
                 with_cp: bool = False,
                 checkpoint_format: str | None = None,
                 pretrained: str | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         norm_eval=norm_eval, size_divisor=1, pretrained=pretrained,
                         init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in self.arch_settings:
                raise ValueError(f"SwinTransformer arch must be one of "
                                 f"{sorted(self.arch_settings)} or a dict(embed_dims, depths, "
                                 f"num_heads), got '{arch}'")
            arch = self.arch_settings[arch]
        elif not (isinstance(arch, Mapping) and
                  set(arch) == {'embed_dims', 'depths', 'num_heads'}):
            raise ValueError(f'SwinTransformer arch dict needs exactly the keys embed_dims, '
                             f'depths and num_heads, got {arch!r}')
        embed_dims, depths, num_heads = (arch['embed_dims'], tuple(arch['depths']),
                                         tuple(arch['num_heads']))
        if len(depths) != len(num_heads) or not depths:
            raise ValueError(f'depths {depths} and num_heads {num_heads} need one entry per '
                             f'stage')
        num_stages = len(depths)
        self.check_out_indices(num_stages)
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in -1..{num_stages}, got {frozen_stages}')
        if window_size < 1 or patch_size < 1:
            raise ValueError(f'window_size and patch_size must be >= 1, got {window_size} and '
                             f'{patch_size}')
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
        if checkpoint_format not in CHECKPOINT_FORMATS + (None,):
            raise ValueError(f'checkpoint_format must be one of {CHECKPOINT_FORMATS} or None, '
                             f'got {checkpoint_format!r}')
        norm_cfg = dict(norm_cfg or dict(type='LN'))
        resolve_norm_cfg(norm_cfg, 0)  # token norms: raises for a type without a (B, N, C) form
        act_cfg = dict(act_cfg or dict(type='GELU'))

        self.arch = dict(embed_dims=embed_dims, depths=depths, num_heads=num_heads)
        self.num_stages = num_stages
        self.window_size = window_size
        self.checkpoint_format = checkpoint_format
        self.patch_embed = PatchEmbed(in_channels, embed_dims, conv_type='Conv2d',
                                      kernel_size=patch_size, stride=patch_size,
                                      padding='corner', norm_cfg=resolve_norm_cfg(norm_cfg, 0))
        self.drop_after_pos = nn.Dropout(drop_rate)
        num_blocks = sum(depths)
        rates = [drop_path_rate * k / max(num_blocks - 1, 1) for k in range(num_blocks)]
        self.stages = nn.ModuleList()
        channels = []
        for i in range(num_stages):
            dims = embed_dims * 2 ** i
            start = sum(depths[:i])
            self.stages.append(SwinStage(
                dims, num_heads[i], depths[i], window_size, mlp_ratio, qkv_bias, drop_rate,
                attn_drop_rate, rates[start:start + depths[i]], i < num_stages - 1,
                always_partition, norm_cfg, act_cfg, with_cp))
            channels.append(dims)
        for i in self.out_indices:
            self.add_module(f'norm{i}', build_norm_layer(norm_cfg, channels[i], 0)[1])
        self.out_channels = tuple(channels[i] for i in self.out_indices)
        self.strides = tuple(patch_size * 2 ** i for i in self.out_indices)

        self.reset_parameters()
        self.freeze_stages()

    def reset_parameters(self) -> None:
        """timm / MMDetection initialisation: Linear weights and the relative position bias
        tables truncated-normal (std 0.02), biases 0, norms 1 / 0; PyTorch's default for the
        patch embedding conv."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, WindowMSA):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=.02)
        self.patch_embed.projection.reset_parameters()

    def frozen_modules(self) -> list[nn.Module]:
        """The patch embedding, then stages 0..frozen_stages-1 with their output norms."""
        if self.frozen_stages < 0:
            return []
        modules = [self.patch_embed, self.drop_after_pos]
        for i in range(self.frozen_stages):
            modules.append(self.stages[i])
            if i in self.out_indices:
                modules.append(getattr(self, f'norm{i}'))
        return modules

    def load_pretrained(self, checkpoint: str | os.PathLike | Mapping[str, Tensor],
                        prefix_map: Mapping[str, str] | None = None) -> dict[str, list[str]]:
        """Load an official / timm / mmdet checkpoint (a path or a state dict).

        The file is read with ``torch.load(weights_only=True)``; ``prefix_map`` renames are
        applied first (e.g. ``{'backbone.': ''}``), then :func:`convert_swin_state_dict` with
        ``self.checkpoint_format``, then :func:`toolbox.engine.weights.load_weights`, which logs
        and returns the missing / unexpected / mismatched keys.
        """
        from toolbox.engine.weights import load_weights, read_state_dict
        state_dict, source = read_state_dict(checkpoint, prefix_map)
        converted, fmt, dropped = convert_swin_state_dict(state_dict, self.checkpoint_format,
                                                          self.num_stages)
        print_log(f'SwinTransformer: {source} read as the {fmt} layout; dropped {len(dropped)} '
                  f'derived buffers (relative_position_index / attn_mask, recomputed here)',
                  logger='current')
        return load_weights(self, converted)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, C, H, W) -> tuple of (B, C_i, ceil(H / s_i), ceil(W / s_i)) maps for
        ``out_indices`` (class docstring)."""
        if x.dim() != 4:
            raise ValueError(f'SwinTransformer takes (B, C, H, W) images, got shape '
                             f'{tuple(x.shape)}')
        x, hw_shape = self.patch_embed(x)
        x = self.drop_after_pos(x)
        last = self.out_indices[-1]
        outs = []
        for i in range(last + 1):
            out, out_hw, x, hw_shape = self.stages[i](x, tuple(hw_shape), downsample=i < last)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(out)
                outs.append(out.view(out.shape[0], *out_hw, out.shape[-1])
                            .permute(0, 3, 1, 2).contiguous())
        return tuple(outs)
