"""DETR's transformer (Carion et al. 2020): sine positional encoding, post-norm encoder and
decoder, as :class:`toolbox.models.detectors.SetPredictionDetector` calls them.

Tokens are batch-first: a feature map (B, C, H, W) is flattened row-major to (B, HW, C); the
padding mask (B, HW) is ``True`` at padded positions. Attention keeps the parameters of
``torch.nn.MultiheadAttention`` (packed ``in_proj_weight`` = [q; k; v] and ``out_proj``, as the
official DETR checkpoints); positional encodings are added to queries and keys, never to values.

Dropout in training uses :func:`fast_dropout`: on the CPU, drawing one float per element
(``torch.bernoulli_``) costs more than the matrix products of the transformer at DETR's sizes;
16 random bits per element cost a quarter of that.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolbox.registry import MODELS


@MODELS.register_module()
class SinePositionalEncoding(nn.Module):
    """Normalised 2D sine encoding of the non-padded positions (DETR's ``PositionEmbeddingSine``).

    With ``y = cumsum(~mask, rows)`` and ``x = cumsum(~mask, cols)`` (1 at the first valid
    position), normalised by the last valid value and multiplied by ``scale`` when ``normalize``,
    channel ``2i`` / ``2i + 1`` of each half is ``sin`` / ``cos`` of ``pos / temperature^(2i /
    num_feats)``; the output is ``[y-half, x-half]``. Positions in the padding get the values of
    the nearest valid row / column before them, so a padded image's valid region is encoded
    exactly as the unpadded image.

    Args:
        num_feats: channels per axis (DETR: 128, so the output has 256 = ``embed_dims``).
        temperature: wavelength base (10000).
        normalize: divide by the valid extent so that positions span ``(0, scale]``.
        scale: multiplier after normalisation (2 pi).
        eps: added to the extent before dividing (1e-6).
    """

    def __init__(self, num_feats: int = 128, temperature: float = 10000.0,
                 normalize: bool = True, scale: float = 2 * math.pi, eps: float = 1e-6):
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps

    def forward(self, mask: Tensor) -> Tensor:
        """``mask`` (B, H, W) bool, True = padding -> (B, 2 * num_feats, H, W) float32."""
        not_mask = (~mask).float()
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            y_embed = y_embed / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode='floor')
                                     / self.num_feats)
        pos_x = x_embed[..., None] / dim_t  # (B, H, W, num_feats)
        pos_y = y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def fast_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with the keep mask drawn from 16 random bits per element.

    An element is kept when its 16-bit draw ``u`` (uniform over 0..65535) is at least
    ``round(p * 65536)``, so the drop probability is ``p`` rounded to a multiple of 1 / 65536
    (0.1 -> 0.100006); kept elements are scaled by ``1 / (1 - p)``. The bits come from the
    default generator (``torch.randint`` on int64, four draws per number), so
    ``torch.manual_seed`` makes them reproducible.
    """
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    n = x.numel()
    words = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64,
                          device=x.device)
    bits = words.view(torch.int16)[:n].view(x.shape)  # uniform over -32768..32767
    keep = bits >= round(p * 65536) - 32768
    return x * keep * (1.0 / (1.0 - p))


class _Dropout(nn.Module):
    """:func:`fast_dropout` as a module (keeps ``nn.Dropout``'s ``p`` and train/eval switch)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return fast_dropout(x, self.p, self.training)


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameters (``in_proj_weight``
    (3C, C) = [q; k; v], ``in_proj_bias``, ``out_proj``), batch-first.

    ``softmax(q k^T / sqrt(C / heads))`` with padded keys excluded, dropout on the attention
    weights in training (:func:`fast_dropout`), times v; ``torch``'s fused
    ``scaled_dot_product_attention`` when there is no dropout. When ``query is key`` (self-
    attention with the positional encoding added to both), q and k come from one product.
    """

    def __init__(self, embed_dims: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by num_heads {num_heads}')
        self.embed_dims, self.num_heads, self.dropout = embed_dims, num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dims, embed_dims))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dims))
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, _ = x.shape  # (B, L, C) -> (B, heads, L, C / heads)
        return x.view(batch, length, self.num_heads, -1).transpose(1, 2)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None) -> Tensor:
        """``query`` (B, Lq, C), ``key`` / ``value`` (B, Lk, C), ``key_padding_mask`` (B, Lk)
        bool, True = ignore -> (B, Lq, C)."""
        c = self.embed_dims
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key:
            q, k = F.linear(query, w[:2 * c], b[:2 * c]).chunk(2, dim=-1)
        else:
            q, k = F.linear(query, w[:c], b[:c]), F.linear(key, w[c:2 * c], b[c:2 * c])
        v = F.linear(value, w[2 * c:], b[2 * c:])
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        keep = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        if self.training and self.dropout > 0:
            weights = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, heads, Lq, Lk)
            if keep is not None:
                weights = weights.masked_fill(~keep, float('-inf'))
            out = fast_dropout(weights.softmax(-1), self.dropout) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class _FFN(nn.Module):
    """``linear2(dropout(relu(linear1(x))))`` (DETR's names ``linear1`` / ``linear2``)."""

    def __init__(self, embed_dims: int, feedforward_channels: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(embed_dims, feedforward_channels)
        self.linear2 = nn.Linear(feedforward_channels, embed_dims)
        self.dropout = _Dropout(dropout)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class DetrTransformerEncoderLayer(nn.Module):
    """Post-norm layer: ``x = norm1(x + drop(attn(x + pos, x + pos, x)))``,
    ``x = norm2(x + drop(ffn(x)))``; ``dropout`` also inside the attention and the FFN."""

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 feedforward_channels: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.self_attn = MultiheadAttention(embed_dims, num_heads, dropout)
        self.ffn = _FFN(embed_dims, feedforward_channels, dropout)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.dropout1 = _Dropout(dropout)
        self.dropout2 = _Dropout(dropout)

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        """``query``, ``query_pos`` (B, N, C); ``key_padding_mask`` (B, N) -> (B, N, C)."""
        q = query + query_pos
        attn = self.self_attn(q, q, query, key_padding_mask)
        query = self.norm1(query + self.dropout1(attn))
        return self.norm2(query + self.dropout2(self.ffn(query)))


class DetrTransformerDecoderLayer(nn.Module):
    """Post-norm layer: query self-attention (``query_pos`` on q and k), cross-attention to
    the memory (``query_pos`` on q, ``key_pos`` on k), FFN; each followed by dropout,
    residual and LayerNorm (``norm1``, ``norm2``, ``norm3``)."""

    def __init__(self, embed_dims: int = 256, num_heads: int = 8,
                 feedforward_channels: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.self_attn = MultiheadAttention(embed_dims, num_heads, dropout)
        self.cross_attn = MultiheadAttention(embed_dims, num_heads, dropout)
        self.ffn = _FFN(embed_dims, feedforward_channels, dropout)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.norm3 = nn.LayerNorm(embed_dims)
        self.dropout1 = _Dropout(dropout)
        self.dropout2 = _Dropout(dropout)
        self.dropout3 = _Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor, query_pos: Tensor, key_pos: Tensor,
                key_padding_mask: Tensor | None) -> Tensor:
        """``query``, ``query_pos`` (B, Q, C); ``key``, ``key_pos`` (B, N, C);
        ``key_padding_mask`` (B, N) -> (B, Q, C)."""
        q = query + query_pos
        attn = self.self_attn(q, q, query)
        query = self.norm1(query + self.dropout1(attn))
        attn = self.cross_attn(query + query_pos, key + key_pos, key, key_padding_mask)
        query = self.norm2(query + self.dropout2(attn))
        return self.norm3(query + self.dropout3(self.ffn(query)))


@MODELS.register_module()
class DetrTransformerEncoder(nn.Module):
    """``num_layers`` :class:`DetrTransformerEncoderLayer` (DETR: 6, 256, 8 heads, FFN 2048,
    dropout 0.1); no final norm (post-norm layers end normalised)."""

    def __init__(self, num_layers: int = 6, embed_dims: int = 256, num_heads: int = 8,
                 feedforward_channels: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.embed_dims = embed_dims
        self.layers = nn.ModuleList(
            DetrTransformerEncoderLayer(embed_dims, num_heads, feedforward_channels, dropout)
            for _ in range(num_layers))
        _xavier_init(self)

    def forward(self, query: Tensor, query_pos: Tensor,
                key_padding_mask: Tensor | None = None) -> Tensor:
        """Flattened map ``query`` (B, N, C), its encoding ``query_pos`` (B, N, C) and
        ``key_padding_mask`` (B, N) bool (True = padding) -> memory (B, N, C)."""
        for layer in self.layers:
            query = layer(query, query_pos, key_padding_mask)
        return query


@MODELS.register_module()
class DetrTransformerDecoder(nn.Module):
    """``num_layers`` :class:`DetrTransformerDecoderLayer` and a shared final LayerNorm
    (``post_norm``) applied to every layer's output for the deep supervision; the
    un-normalised output is what the next layer reads (as the official DETR)."""

    def __init__(self, num_layers: int = 6, embed_dims: int = 256, num_heads: int = 8,
                 feedforward_channels: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.embed_dims = embed_dims
        self.layers = nn.ModuleList(
            DetrTransformerDecoderLayer(embed_dims, num_heads, feedforward_channels, dropout)
            for _ in range(num_layers))
        self.post_norm = nn.LayerNorm(embed_dims)
        _xavier_init(self)

    def forward(self, query: Tensor, key: Tensor, query_pos: Tensor, key_pos: Tensor,
                key_padding_mask: Tensor | None = None) -> Tensor:
        """``query`` (B, Q, C) (zeros in DETR), memory ``key`` (B, N, C), learned
        ``query_pos`` (B, Q, C), ``key_pos`` (B, N, C), ``key_padding_mask`` (B, N) bool ->
        (L, B, Q, C): ``post_norm`` of every layer's output."""
        hidden = []
        for layer in self.layers:
            query = layer(query, key, query_pos, key_pos, key_padding_mask)
            hidden.append(self.post_norm(query))
        return torch.stack(hidden)


def _xavier_init(module: nn.Module) -> None:
    """DETR's ``Transformer._reset_parameters``: Xavier-uniform for every matrix."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
