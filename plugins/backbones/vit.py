"""Plain Vision Transformer (Dosovitskiy et al. 2021) on 2D images or 3D volumes: the UNETR
encoder (Hatamizadeh et al. 2022, reference/ANCHORS.md 3.5).

Structure: a non-overlapping patch embedding (``patch_size`` cube or square, stride =
``patch_size``) plus a learned position embedding for the fixed ``img_size`` grid, then
``num_layers`` pre-norm blocks ``x + attn(norm1(x))``, ``x + ffn(norm2(x))`` (multi-head
self-attention with one fused ``qkv`` projection; FFN = linear, exact GELU, linear, mmcv's
``FFN``), no class token, and a final LayerNorm.

Tokens are the patches in row-major order of the patch grid (first spatial dimension slowest:
D, H, W in 3D; H, W in 2D), the order of ``conv(x).flatten(2)``. A returned map is the tokens
reshaped back to the grid, channels first: (B, hidden_size, *grid), grid = img_size // patch_size.

Numerically equal to ``monai.networks.nets.ViT`` (and the encoder of ``monai.networks.nets.UNETR``)
with the same weights; ``toolbox_plugins.decode_heads.unetr_head.convert_monai_unetr_state_dict``
renames MONAI's keys. Parameter names (timm-like, FFN as mmcv names it):
``patch_embed.{projection, pos_embed}``, ``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2,
ffn.layers.0.0, ffn.layers.1}``, ``norm``.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolbox.models.bases import BaseBackbone
from toolbox.models.layers import build_norm_layer
from toolbox.registry import MODELS

with warnings.catch_warnings():
    # mmcv-lite has no mmcv.ops: the module warns that MultiScaleDeformableAttention (unused here)
    # is unavailable, at every import.
    warnings.filterwarnings('ignore', message='Fail to import ``MultiScaleDeformableAttention')
    from mmcv.cnn.bricks.transformer import FFN

PROJ_TYPES = ('conv', 'perceptron')


def _as_tuple(value: int | Sequence[int], spatial_dims: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * spatial_dims
    value = tuple(int(v) for v in value)
    if len(value) != spatial_dims:
        raise ValueError(f'{name} must be an int or {spatial_dims} ints (spatial_dims='
                         f'{spatial_dims}), got {value}')
    return value


class PatchEmbedding(nn.Module):
    """Non-overlapping patches -> tokens plus a learned position embedding.

    (B, C, *img_size) -> (B, N, hidden_size), N = prod(grid), grid = img_size // patch_size.

    * ``proj_type='conv'``: ``projection`` is a Conv{2,3}d with kernel = stride = patch_size.
    * ``proj_type='perceptron'``: ``projection`` is a Linear on each patch flattened in the order
      (p_1, ..., p_n, c) (patch offsets slowest, channel fastest, MONAI's layout); the same
      function as the conv with the weight permuted, kept so that MONAI checkpoints load as is.

    ``pos_embed`` (1, N, hidden_size) is initialised truncated-normal (std 0.02, cut at +-2).
    """

    def __init__(self, in_channels: int, img_size: tuple[int, ...], patch_size: tuple[int, ...],
                 hidden_size: int, proj_type: str, dropout_rate: float, spatial_dims: int):
        super().__init__()
        self.proj_type = proj_type
        self.patch_size = patch_size
        self.grid = tuple(s // p for s, p in zip(img_size, patch_size))
        if proj_type == 'conv':
            conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
            self.projection = conv(in_channels, hidden_size, patch_size, stride=patch_size)
        else:
            self.projection = nn.Linear(in_channels * math.prod(patch_size), hidden_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, math.prod(self.grid), hidden_size))
        self.dropout = nn.Dropout(dropout_rate)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-2.0, b=2.0)

    def patchify(self, x: Tensor) -> Tensor:
        """(B, C, *img_size) -> (B, N, prod(patch_size) * C), each patch in (p_1..p_n, c) order."""
        b, c = x.shape[:2]
        n = len(self.grid)
        split = [b, c]
        for g, p in zip(self.grid, self.patch_size):
            split += [g, p]
        # (B, C, g1, p1, g2, p2, ...) -> (B, g1, g2, ..., p1, p2, ..., C)
        order = [0] + [2 + 2 * i for i in range(n)] + [3 + 2 * i for i in range(n)] + [1]
        return x.reshape(split).permute(order).reshape(b, math.prod(self.grid), -1)

    def forward(self, x: Tensor) -> Tensor:
        if self.proj_type == 'conv':
            x = self.projection(x).flatten(2).transpose(1, 2)
        else:
            x = self.projection(self.patchify(x))
        return self.dropout(x + self.pos_embed)


class SelfAttention(nn.Module):
    """Multi-head self-attention, (B, N, C) -> (B, N, C).

    ``qkv`` (C -> 3C, bias optional) is split as (3, heads, head_dim) along its output, the layout
    of ``nn.MultiheadAttention.in_proj_weight`` and MONAI's ``SABlock``; ``proj`` (C -> C) always
    has a bias (so ``nn.MultiheadAttention``, whose ``bias`` flag covers both, cannot hold a
    bias-free qkv). The attention itself is ``F.scaled_dot_product_attention`` (fused kernels on
    CUDA), with dropout ``dropout_rate`` on the attention weights in training.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout_rate: float = 0.0,
                 qkv_bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.dropout_rate = dropout_rate
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.proj_drop = nn.Dropout(dropout_rate)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout_rate if self.training else 0.0)  # (B, h, N, d)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm1(x))`` then ``x + ffn(norm2(x))``; (B, N, C) -> same."""

    def __init__(self, hidden_size: int, mlp_dim: int, num_heads: int, dropout_rate: float,
                 qkv_bias: bool, norm_cfg: dict):
        super().__init__()
        self.norm1 = build_norm_layer(norm_cfg, hidden_size, spatial_dims=0)[1]
        self.attn = SelfAttention(hidden_size, num_heads, dropout_rate, qkv_bias)
        self.norm2 = build_norm_layer(norm_cfg, hidden_size, spatial_dims=0)[1]
        self.ffn = FFN(embed_dims=hidden_size, feedforward_channels=mlp_dim, num_fcs=2,
                       act_cfg=dict(type='GELU'), ffn_drop=dropout_rate, add_identity=True)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return self.ffn(self.norm2(x), identity=x)


@MODELS.register_module()
class ViT(BaseBackbone):
    """Vision Transformer backbone for a fixed input size (2D or 3D), as in UNETR.

    ``forward(x)``: x (B, in_channels, *img_size) -> tuple with one map (B, hidden_size, *grid)
    per entry of ``out_indices``, grid = img_size // patch_size; ``strides`` are ``patch_size``
    (an int when isotropic, else the per-axis tuple), ``out_channels`` ``hidden_size``.

    ``out_indices`` are 1-based block numbers: index k is the output z_k of block k (index 0, the
    embedded patches z_0, is allowed too). The map of the *last* block (k = ``num_layers``) goes
    through the final LayerNorm ``norm``; every other map is the raw block output, un-normalised.
    This is what MONAI's UNETR reads: ``hidden_states_out[3]``, ``[6]``, ``[9]`` (0-based list of
    block outputs, i.e. blocks 4, 7, 10) and the final normalised ``x``. The paper's text names
    z3, z6, z9, z12; its released code (Project-MONAI research-contributions, same indexing as
    MONAI) and every MONAI checkpoint use blocks 4, 7, 10, 12, hence the default ``(4, 7, 10, 12)``.
    Blocks after the last entry of ``out_indices`` are not run (their parameters get no gradient).

    The input must have exactly ``img_size`` (the position embedding is learned per grid cell,
    not interpolated): another size raises a ``ValueError`` naming both. ``img_size`` must be a
    multiple of ``patch_size``.

    Args:
        in_channels: channels C of the input.
        img_size: input spatial size, an int (same on every axis) or ``spatial_dims`` ints.
        patch_size: patch side(s), kernel and stride of the patch embedding.
        hidden_size: token width.
        mlp_dim: hidden width of the FFN.
        num_layers: number of blocks.
        num_heads: attention heads (``hidden_size`` must be divisible by it).
        proj_type: 'conv' or 'perceptron' (see :class:`PatchEmbedding`), MONAI >= 1.3's names.
        dropout_rate: dropout after the embedding, on attention weights, after the attention
            projection and in the FFN (MONAI's places).
        qkv_bias: bias of the qkv projection.
        spatial_dims: 2 (B, C, H, W) or 3 (B, C, D, H, W).
        out_indices: block numbers to return, ascending, in 0..num_layers.
        norm_cfg: the token LayerNorms (blocks and final); a ``'LN'`` config.
        frozen_stages: -1 freezes nothing; k >= 0 freezes the patch embedding (with the
            position embedding) and blocks 1..k.
        pretrained, init_cfg: see :class:`BaseBackbone`.
    """

    def __init__(self, in_channels: int, img_size: int | Sequence[int],
                 patch_size: int | Sequence[int] = 16, hidden_size: int = 768,
                 mlp_dim: int = 3072, num_layers: int = 12, num_heads: int = 12,
                 proj_type: str = 'conv', dropout_rate: float = 0.0, qkv_bias: bool = False,
                 spatial_dims: int = 3, out_indices: Sequence[int] = (4, 7, 10, 12),
                 norm_cfg: dict = dict(type='LN', eps=1e-5), frozen_stages: int = -1,
                 pretrained: str | None = None, init_cfg: dict | list | None = None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         pretrained=pretrained, init_cfg=init_cfg)
        if spatial_dims not in (2, 3):
            raise ValueError(f'ViT: spatial_dims must be 2 or 3, got {spatial_dims}')
        if proj_type not in PROJ_TYPES:
            raise ValueError(f'ViT: proj_type must be one of {PROJ_TYPES}, got {proj_type!r}')
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f'ViT: dropout_rate must be in [0, 1], got {dropout_rate}')
        if hidden_size % num_heads:
            raise ValueError(f'ViT: hidden_size {hidden_size} is not divisible by num_heads '
                             f'{num_heads}')
        self.img_size = _as_tuple(img_size, spatial_dims, 'img_size')
        self.patch_size = _as_tuple(patch_size, spatial_dims, 'patch_size')
        if any(s % p for s, p in zip(self.img_size, self.patch_size)):
            raise ValueError(f'ViT: img_size {self.img_size} must be a multiple of patch_size '
                             f'{self.patch_size}')
        if frozen_stages > num_layers:
            raise ValueError(f'ViT: frozen_stages must be in -1..{num_layers}, got '
                             f'{frozen_stages}')
        self.check_out_indices(num_layers + 1)
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.patch_embed = PatchEmbedding(in_channels, self.img_size, self.patch_size,
                                          hidden_size, proj_type, dropout_rate, spatial_dims)
        self.grid = self.patch_embed.grid
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, mlp_dim, num_heads, dropout_rate, qkv_bias, norm_cfg)
            for _ in range(num_layers))
        self.norm = build_norm_layer(norm_cfg, hidden_size, spatial_dims=0)[1]
        isotropic = len(set(self.patch_size)) == 1
        stride = self.patch_size[0] if isotropic else self.patch_size
        self.out_channels = (hidden_size,) * len(self.out_indices)
        self.strides = (stride,) * len(self.out_indices)
        self.reset_parameters()
        self.freeze_stages()

    def reset_parameters(self) -> None:
        """Linear layers truncated-normal (std 0.02, zero bias), LayerNorms 1 / 0; the patch
        conv keeps PyTorch's default and the position embedding its own init."""
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-2.0, b=2.0)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.patch_embed, *self.blocks[:self.frozen_stages]]

    def to_map(self, tokens: Tensor) -> Tensor:
        """(B, N, C) tokens -> (B, C, *grid), contiguous. The reshape alone is a channels-last
        view, which ran the UNETR decoder channels-last: forward+backward at 64^3 on CPU was
        0.92x MONAI's (which copies, as here), 1.05x with the copy (benchmarks/bench_unetr)."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *self.grid).contiguous()

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels \
                or tuple(x.shape[2:]) != self.img_size:
            raise ValueError(
                f'ViT expects input (B, {self.in_channels}, *{self.img_size}) (in_channels, '
                f'img_size; spatial_dims={self.spatial_dims}), got {tuple(x.shape)}')
        x = self.patch_embed(x)
        wanted = set(self.out_indices)
        outs = [self.to_map(x)] if 0 in wanted else []
        for k, block in enumerate(self.blocks, start=1):
            x = block(x)
            if k == self.num_layers:
                x = self.norm(x)
            if k in wanted:
                outs.append(self.to_map(x))
            if k == self.out_indices[-1]:
                break
        return tuple(outs)
