"""UNETR decoder (Hatamizadeh et al. 2022, reference/ANCHORS.md 3.5) as a decode head, in 2D or 3D.

With the :class:`toolbox_plugins.backbones.vit.ViT` backbone (patch 16) it is numerically equal to
``monai.networks.nets.UNETR`` given the same weights (:func:`convert_monai_unetr_state_dict`).

Data flow, for an input x (B, C_in, *S) and ViT maps z_a, z_b, z_c, z_d (B, hidden, *S/16) (by
default blocks 4, 7, 10 and the normalised block 12), widths in units of f = ``feature_size``::

    encoder1 = conv block(x)                                   (B, f,  *S)
    encoder2 = up(z_a) -> 2 x [up -> conv block]               (B, 2f, *S/2)
    encoder3 = up(z_b) -> 1 x [up -> conv block]               (B, 4f, *S/4)
    encoder4 = up(z_c)                                         (B, 8f, *S/8)
    decoder5(z_d, encoder4) -> decoder4(., encoder3) -> decoder3(., encoder2)
        -> decoder2(., encoder1)                               (B, f,  *S)    = features()
    conv_seg (1x1, bias)                                       (B, num_classes, *S)

"up" is a transposed conv with kernel = stride = 2 (no bias); "conv block" is two 3x3 convs
(no bias) each followed by a norm, LeakyReLU(0.01) after the first and after the sum with a
1x1 conv + norm projection of the input when ``res_block`` (a shortcut only where the widths
differ, as in nnU-Net / MONAI ``UnetResBlock``), or after both convs otherwise
(``UnetBasicBlock``). A decoder block is up -> concat(up, skip) on channels -> conv block.
``conv_block=False`` drops the conv blocks of encoder2 / encoder3 (transposed convs only).

Each stage doubles the resolution, so ``patch_size`` = 2 ** n fixes the number of CNN levels n
(16 -> 4, the paper / MONAI layout above; 8 -> 3: encoder2 = up(z_a) -> 1 x [...] (S/2),
encoder3 = up(z_b) (S/4), decoder4(z_c, encoder3) -> decoder3 -> decoder2, three ViT maps).
The input must be exactly ``patch_size`` x the grid of the maps; another size raises a
``ValueError``. A smaller patch gives the ViT 8x the tokens per halving (a 32x48x32 crop is
2x3x2 tokens of 16^3, 4x6x4 of 8^3) at the same decoder cost per voxel.

Parameter names mirror MONAI's, without its ``.conv`` wrappers: ``encoder1.{conv1, norm1, conv2,
norm2, conv3, norm3}``, ``encoder{2,3,4}.transp_conv_init``, ``encoder{2,3}.blocks.{j}.0``
(transposed conv) and ``.1.*`` (conv block), ``decoder{5..2}.transp_conv``,
``decoder{5..2}.conv_block.*``, and ``conv_seg`` (MONAI's ``out.conv.conv``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from toolbox.models.bases import BaseDecodeHead
from toolbox.models.layers import build_norm_layer
from toolbox.registry import MODELS

def _conv(spatial_dims: int):
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def _up(spatial_dims: int, in_channels: int, out_channels: int) -> nn.Module:
    """Transposed conv, kernel = stride = 2, no bias: (B, Cin, *s) -> (B, Cout, *2s)."""
    transposed = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
    return transposed(in_channels, out_channels, 2, stride=2, bias=False)


class ConvBlock(nn.Module):
    """Two 3x3 convs (no bias), each followed by ``norm_cfg``, LeakyReLU(0.01); size-preserving.

    ``residual=True`` (MONAI ``UnetResBlock``): ``act(norm2(conv2(act(norm1(conv1(x))))) + s)``
    with ``s = norm3(conv3(x))`` (1x1 conv) when the widths differ, else ``s = x``.
    ``residual=False`` (``UnetBasicBlock``): ``act(norm2(conv2(act(norm1(conv1(x))))))``.
    (B, in_channels, *s) -> (B, out_channels, *s).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm_cfg: dict,
                 residual: bool):
        super().__init__()
        conv = _conv(spatial_dims)
        self.conv1 = conv(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = build_norm_layer(norm_cfg, out_channels, spatial_dims)[1]
        self.conv2 = conv(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = build_norm_layer(norm_cfg, out_channels, spatial_dims)[1]
        self.act = nn.LeakyReLU(0.01, inplace=True)
        self.residual = residual
        if residual and in_channels != out_channels:
            self.conv3 = conv(in_channels, out_channels, 1, bias=False)
            self.norm3 = build_norm_layer(norm_cfg, out_channels, spatial_dims)[1]

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        if self.residual:
            # in place, as MONAI: an out-of-place add held one more full-size map (measured
            # forward peak at 64^3: 176 MiB against MONAI's 134)
            out += self.norm3(self.conv3(x)) if hasattr(self, 'conv3') else x
        return self.act(out)


class ProjectionUp(nn.Module):
    """A ViT map up to a skip resolution (MONAI ``UnetrPrUpBlock``): ``transp_conv_init``
    (hidden -> out_channels, x2), then ``num_layers`` x [transposed conv x2 -> conv block]
    (only the transposed conv when ``conv_block=False``).
    (B, in_channels, *g) -> (B, out_channels, *g * 2 ** (num_layers + 1))."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, num_layers: int,
                 norm_cfg: dict, conv_block: bool, res_block: bool):
        super().__init__()
        self.transp_conv_init = _up(spatial_dims, in_channels, out_channels)
        self.blocks = nn.ModuleList(
            nn.Sequential(_up(spatial_dims, out_channels, out_channels),
                          ConvBlock(spatial_dims, out_channels, out_channels, norm_cfg,
                                    res_block))
            if conv_block else _up(spatial_dims, out_channels, out_channels)
            for _ in range(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        x = self.transp_conv_init(x)
        for block in self.blocks:
            x = block(x)
        return x


class UpBlock(nn.Module):
    """Decoder stage (MONAI ``UnetrUpBlock``): ``transp_conv`` (x2, in -> out), concat with the
    skip (B, out_channels, *2s) on channels (upsampled first), ``conv_block`` 2 out -> out.
    (B, in_channels, *s), skip -> (B, out_channels, *2s)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, norm_cfg: dict,
                 res_block: bool):
        super().__init__()
        self.transp_conv = _up(spatial_dims, in_channels, out_channels)
        self.conv_block = ConvBlock(spatial_dims, 2 * out_channels, out_channels, norm_cfg,
                                    res_block)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv_block(torch.cat([self.transp_conv(x), skip], dim=1))


@MODELS.register_module()
class UNETRHead(BaseDecodeHead):
    """UNETR decoder: CNN skips from the input and from ViT blocks, transposed-conv decoder.

    ``reads_inputs = True``: ``features(feats, inputs)`` takes the backbone tuple ``feats`` and
    the network input ``inputs`` (B, input_channels, *S) and returns (B, feature_size, *S);
    ``forward`` then applies ``conv_seg`` (1x1 with bias, MONAI's ``UnetOutBlock``). See the
    module docstring for the layers.

    Args:
        in_channels: width of the ViT maps (its ``hidden_size``).
        num_classes: output channels.
        input_channels: channels of the network input (encoder1's input).
        feature_size: base width f of the CNN path (also ``channels`` of the base).
        in_index: the log2(patch_size) entries of ``feats`` feeding encoder2 ... encoder{n}
            and decoder{n+1} (shallow to deep; the deepest should be the normalised last
            block). Default: the first n entries.
        patch_size: the ViT patch, a power of two >= 4 (16: MONAI's UNETR).
        norm_cfg: norm of every conv block; MONAI's ``norm_name='instance'`` is
            ``dict(type='IN')`` (no affine parameters), ``'batch'`` is ``dict(type='BN')``.
        conv_block: conv blocks after the transposed convs of encoder2 / encoder3.
        res_block: residual conv blocks (else plain two-conv blocks).
        dropout_ratio: dropout before ``conv_seg`` (MONAI's UNETR has none: 0).
        spatial_dims: 2 or 3.
        **kwargs: the remaining :class:`BaseDecodeHead` arguments (``loss_decode``,
            ``ignore_index``, ``align_corners``, ``init_cfg``).
    """

    reads_inputs = True

    def __init__(self, in_channels: int, num_classes: int, input_channels: int,
                 feature_size: int = 16, in_index: Sequence[int] | None = None,
                 patch_size: int = 16, norm_cfg: dict = dict(type='IN'), conv_block: bool = True,
                 res_block: bool = True, dropout_ratio: float = 0.0, spatial_dims: int = 3,
                 **kwargs):
        super().__init__(in_channels, feature_size, num_classes, in_index=-1,
                         dropout_ratio=dropout_ratio, norm_cfg=norm_cfg,
                         spatial_dims=spatial_dims, **kwargs)
        levels = patch_size.bit_length() - 1
        if patch_size < 4 or patch_size != 2 ** levels:
            raise ValueError(f'UNETRHead: patch_size must be a power of two >= 4, got {patch_size}')
        in_index = tuple(range(levels)) if in_index is None else tuple(in_index)
        if len(in_index) != levels:
            raise ValueError(f'UNETRHead: in_index needs {levels} entries for patch {patch_size} '
                             f'(encoder2 .. encoder{levels}, decoder{levels + 1}), got {in_index}')
        if norm_cfg is None:
            raise ValueError('UNETRHead: norm_cfg is required, e.g. dict(type="IN")')
        self.in_index = in_index
        self.patch_size = patch_size
        self.feature_size = feature_size
        f, d = feature_size, spatial_dims
        # level k (1..levels) is at 1 / 2 ** (k - 1) of the input, f * 2 ** (k - 1) wide
        self.encoder1 = ConvBlock(d, input_channels, f, norm_cfg, res_block)
        for k in range(2, levels + 1):
            self.add_module(f'encoder{k}', ProjectionUp(d, in_channels, f * 2 ** (k - 1),
                                                        levels - k, norm_cfg, conv_block,
                                                        res_block))
        self.add_module(f'decoder{levels + 1}',
                        UpBlock(d, in_channels, f * 2 ** (levels - 1), norm_cfg, res_block))
        for k in range(levels, 1, -1):
            self.add_module(f'decoder{k}', UpBlock(d, f * 2 ** (k - 1), f * 2 ** (k - 2),
                                                   norm_cfg, res_block))
        self.levels = levels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's default initialisation of every conv, ``conv_seg`` included, and unit
        affine norms: what MONAI's UNETR trains from. Measured on Hippocampus crops (2 CPU
        cores, AdamW 1e-3): with the small-normal classifier (std 0.01) the foreground Dice of
        the training batches was still 0 after 80 iterations; with this one it was 0.75 / 0.73."""
        for m in self.modules():
            if isinstance(m, nn.modules.conv._ConvNd):
                m.reset_parameters()
            elif isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm,
                                nn.modules.instancenorm._InstanceNorm)) and m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, feats: Sequence[Tensor], inputs: Tensor) -> Tensor:
        """ViT maps (B, in_channels, *g) at ``in_index`` and the input (B, C_in, *p g), p the
        patch size -> (B, feature_size, *p g)."""
        maps = [feats[i] for i in self.in_index]
        grid = tuple(maps[-1].shape[2:])
        expected = tuple(self.patch_size * g for g in grid)
        if tuple(inputs.shape[2:]) != expected:
            raise ValueError(f'UNETRHead: the input must be {self.patch_size} x the ViT grid '
                             f'{grid} = {expected} (patch size {self.patch_size}), got '
                             f'{tuple(inputs.shape)}')
        skips = [self.encoder1(inputs)] + [getattr(self, f'encoder{k}')(z)
                                           for k, z in enumerate(maps[:-1], start=2)]
        x = maps[-1]
        for k in range(self.levels + 1, 1, -1):
            x = getattr(self, f'decoder{k}')(x, skips[k - 2])
        return x


# (MONAI key pattern, our key) for monai.networks.nets.UNETR, in the EncoderDecoder layout
_MONAI_RULES = [
    (r'vit\.patch_embedding\.position_embeddings', r'backbone.patch_embed.pos_embed'),
    # conv: patch_embeddings.{weight,bias}; perceptron: patch_embeddings.1.* (after Rearrange)
    (r'vit\.patch_embedding\.patch_embeddings\.(?:1\.)?(weight|bias)',
     r'backbone.patch_embed.projection.\1'),
    (r'vit\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv)\.(.*)', r'backbone.blocks.\1.\2.\3'),
    (r'vit\.blocks\.(\d+)\.attn\.out_proj\.(.*)', r'backbone.blocks.\1.attn.proj.\2'),
    (r'vit\.blocks\.(\d+)\.mlp\.linear1\.(.*)', r'backbone.blocks.\1.ffn.layers.0.0.\2'),
    (r'vit\.blocks\.(\d+)\.mlp\.linear2\.(.*)', r'backbone.blocks.\1.ffn.layers.1.\2'),
    (r'vit\.norm\.(.*)', r'backbone.norm.\1'),
    (r'out\.conv\.conv\.(.*)', r'decode_head.conv_seg.\1'),
    # decoder: drop MONAI's Convolution wrappers (".conv") and UnetrBasicBlock's ".layer"
    (r'encoder1\.layer\.(conv\d)\.conv\.(.*)', r'decode_head.encoder1.\1.\2'),
    (r'encoder1\.layer\.(norm\d)\.(.*)', r'decode_head.encoder1.\1.\2'),
    (r'(encoder\d|decoder\d)\.(.*?)\.conv\.weight', r'decode_head.\1.\2.weight'),
    (r'(encoder\d|decoder\d)\.(.*)', r'decode_head.\1.\2'),
]


def convert_monai_unetr_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ``monai.networks.nets.UNETR`` state dict -> ours, in the segmentor layout
    (``backbone.*`` for :class:`ViT`, ``decode_head.*`` for :class:`UNETRHead`).

    Values are kept as they are (qkv already has our (3, heads, head_dim) output order; the
    perceptron Linear our patch order). MONAI >= 1.4 builds ``norm_cross_attn`` (and, in 1.4 /
    1.5, ``cross_attn``) in every transformer block even without cross-attention; these unused
    weights are dropped, with a log line giving their count. An unknown key raises a
    ``KeyError`` rather than being lost.
    """
    out, dropped = {}, []
    for key, value in state_dict.items():
        if re.match(r'vit\.blocks\.\d+\.(norm_)?cross_attn\.', key):
            dropped.append(key)
            continue
        for pattern, repl in _MONAI_RULES:
            match = re.fullmatch(pattern, key)
            if match:
                out[match.expand(repl)] = value
                break
        else:
            raise KeyError(f'convert_monai_unetr_state_dict: unknown MONAI UNETR key {key!r}')
    if dropped:
        print_log(f'convert_monai_unetr_state_dict: dropped {len(dropped)} unused cross-attention '
                  f'tensors ({sum(state_dict[k].numel() for k in dropped)} values)',
                  logger='current')
    return out
