"""FCN-32s / FCN-16s / FCN-8s (Long, Shelhamer and Darrell 2015): the skip architecture as a
decode head.

Data flow for ``variant='8s'`` and backbone maps p3 (stride 8), p4 (stride 16), p5 (stride 32)
picked by ``in_index`` (finest first), K = ``num_classes``::

    features(feats) = convs(p5)                                   (B, channels, *S/32)
    score = conv_seg(dropout(.))            the paper's score_fr  (B, K, *S/32)
    score = fit(up_scores[0](score), p4) + score_skips[0](p4)     (B, K, *S/16)  score_pool4
    score = fit(up_scores[1](score), p3) + score_skips[1](p3)     (B, K, *S/8)   score_pool3
    forward() returns it; loss / predict resize it bilinearly to the labels / input (x8)

``'16s'`` stops after the first fusion, ``'32s'`` has none. ``convs`` are the paper's fc6 / fc7
turned convolutional (with VGG-16: 7x7 512 -> 4096 and 1x1 4096 -> 4096, ``num_convs=2,
kernel_size=(7, 1), channels=4096, norm_cfg=None``); with a backbone that already ends in them
(or with none), ``num_convs=0`` scores the coarsest map directly.

* ``up_scores``: ``ConvTranspose2d(K, K, 4, stride=2, padding=1, bias=False)``, initialised to
  bilinear interpolation (per-class diagonal kernel [1/4, 3/4, 3/4, 1/4] per axis) and learned,
  as in the paper. With padding 1 the output is exactly 2x the input and equals
  ``F.interpolate(scale_factor=2, mode='bilinear', align_corners=False)`` except on its first
  and last row and column, where the transposed conv sees zeros beyond the border
  (3/4 of the edge value) while ``interpolate`` clamps to the edge.
* ``fit``: the upsampled score is cropped or zero-padded at the end of each axis to the skip
  map's size, which differs by one for odd sizes: a ceil-dividing backbone (ResNet's padded
  strided convs, 97 -> 13 / 7 / 4 at strides 8 / 16 / 32) gives 2 x 4 = 8 > 7 (crop), a
  floor-dividing one (max-pools, 75 -> 9 / 4 / 2) gives 2 x 4 = 8 < 9 (pad). The paper instead
  pads the input by 100 pixels, uses valid convs and crops with offsets; here every conv is
  size-preserving, so the maps stay top-left aligned.
* ``score_skips``: 1x1 convs (with bias) on the finer maps, initialised to zero as in the
  paper, so an untrained FCN-16s / 8s scores exactly like the FCN-32s it extends (the skips add
  0 until they learn).
* The final upsampling (the paper's fixed bilinear ``upscore8`` / ``16`` / ``32`` transposed
  conv, learning rate 0) is the base's bilinear resize in ``loss`` / ``predict`` instead: the
  same interpolation away from the border, exact for any input size, and no fixed weights
  (for K = 21 and 8s the paper's blob holds 21 * 21 * 16 * 16 = 112,896 values).

Layers: ``convs.{i}`` (mmcv ``ConvModule``: ``.conv``, ``.bn``), ``conv_seg`` (score_fr),
``up_scores.{j}`` and ``score_skips.{j}`` (j = 0 for the stride-16 fusion, 1 for stride 8).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from mmcv.cnn import ConvModule
from torch import Tensor, nn

from toolbox.models.bases import BaseDecodeHead, fit_to
from toolbox.registry import MODELS

#: number of backbone maps each variant reads (strides 32; 16, 32; 8, 16, 32)
VARIANT_MAPS = {'32s': 1, '16s': 2, '8s': 3}


def bilinear_upsampling_weight(channels: int, factor: int) -> Tensor:
    """Weight (channels, channels, 2f - f % 2, same) of a ``ConvTranspose2d`` with stride
    ``factor`` that upsamples each channel bilinearly on its own (zero between channels).

    Per axis the kernel is ``1 - |i - c| / f`` with centre ``c = f - 1/2`` for even ``f``
    (``f - 1`` for odd); for f = 2: [1/4, 3/4, 3/4, 1/4].
    """
    size = 2 * factor - factor % 2
    centre = factor - 0.5 if factor % 2 == 0 else factor - 1.0
    taps = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor
    weight = torch.zeros(channels, channels, size, size)
    index = torch.arange(channels)
    weight[index, index] = taps[:, None] * taps[None, :]
    return weight


@MODELS.register_module()
class FCNSkipHead(BaseDecodeHead):
    """FCN-32s / 16s / 8s skip head (see the module docstring for the layers).

    Registered as ``FCNSkipHead``: ``FCNHead`` is taken by the one-map FCN head of
    ``deeplab_head.py`` (the auxiliary head of the DeepLab recipes).

    ``conv_seg`` is the paper's ``score_fr``: ``features`` returns the coarsest map after
    ``convs`` (B, channels, *S/32), exactly what the base contract asks, and ``conv_seg`` scores
    it like in every other head; ``forward`` then continues past the classifier with the skip
    fusions, which work in score space (K channels), so they cannot sit inside ``features``.
    The base's ``loss`` / ``predict`` call ``forward`` and resize its (B, K, *S/8) (16s: /16,
    32s: /32) scores to the labels / the batch input, so any input size comes back exactly.

    Args:
        in_channels: channels of the maps read, finest first (one per map, see ``variant``).
        num_classes: K.
        variant: ``'32s'``, ``'16s'`` or ``'8s'``: reads the 1, 2 or 3 coarsest maps.
        channels: width of ``convs`` (fc6 / fc7); with ``num_convs=0`` it must equal the
            coarsest map's channels.
        num_convs: convs (with ``norm_cfg`` and ReLU, size-preserving padding) before
            ``conv_seg``.
        kernel_size: of each conv: one int for all, or one per conv (the paper's (7, 1)).
        in_index: which backbone outputs are read, finest first (strides 8, 16, 32 for 8s);
            default: the last ``VARIANT_MAPS[variant]``.
        **kwargs: the remaining :class:`BaseDecodeHead` arguments (``dropout_ratio`` before
            ``conv_seg``, ``norm_cfg`` of ``convs`` (``None``: biased convs, the paper),
            ``align_corners``, ``loss_decode``, ...).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, variant: str = '8s',
                 channels: int = 512, num_convs: int = 0,
                 kernel_size: int | Sequence[int] = 3,
                 in_index: Sequence[int] | None = None, **kwargs):
        if variant not in VARIANT_MAPS:
            raise ValueError(f'FCNSkipHead: variant must be one of {sorted(VARIANT_MAPS)}, got '
                             f'{variant!r}')
        num_maps = VARIANT_MAPS[variant]
        in_channels = tuple(in_channels)
        in_index = tuple(range(-num_maps, 0)) if in_index is None else tuple(in_index)
        if len(in_channels) != num_maps or len(in_index) != num_maps:
            raise ValueError(f'FCNSkipHead {variant} reads {num_maps} maps (finest first): '
                             f'in_channels and in_index need {num_maps} entries, got '
                             f'{in_channels} and {in_index}')
        kernel_sizes = (kernel_size,) * num_convs if isinstance(kernel_size, int) \
            else tuple(kernel_size)
        if len(kernel_sizes) != num_convs:
            raise ValueError(f'FCNSkipHead: kernel_size needs one entry per conv '
                             f'({num_convs}), got {kernel_sizes}')
        if num_convs == 0 and channels != in_channels[-1]:
            raise ValueError(f'FCNSkipHead with num_convs=0 scores the coarsest map directly: '
                             f'channels must be its {in_channels[-1]} channels, got {channels}')
        super().__init__(in_channels, channels, num_classes, in_index=in_index, **kwargs)
        self.variant = variant
        self.convs = nn.Sequential(*[
            ConvModule(in_channels[-1] if k == 0 else channels, channels, size,
                       padding=size // 2, norm_cfg=self.norm_cfg)
            for k, size in enumerate(kernel_sizes)])
        # coarse to fine: j = 0 fuses the stride-16 map, j = 1 the stride-8 map
        skips = in_channels[-2::-1]
        self.up_scores = nn.ModuleList(
            nn.ConvTranspose2d(num_classes, num_classes, 4, stride=2, padding=1, bias=False)
            for _ in skips)
        self.score_skips = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in skips)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The base's initialisation (Kaiming ``convs``, normal(0.01) ``conv_seg``), then
        bilinear ``up_scores`` and zero ``score_skips``."""
        super().reset_parameters()
        weight = bilinear_upsampling_weight(self.num_classes, 2)
        with torch.no_grad():
            for up in self.up_scores:
                up.weight.copy_(weight)
        for score in self.score_skips:
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)

    def features(self, feats: Sequence[Tensor]) -> Tensor:
        """The coarsest map read (B, in_channels[-1], *S/32) -> ``convs`` ->
        (B, channels, *S/32)."""
        return self.convs(feats[self.in_index[-1]])

    def forward(self, feats: Sequence[Tensor], inputs: Tensor | None = None) -> Tensor:
        """Backbone outputs -> scores (B, num_classes, *S/8) for 8s (/16 for 16s, /32 for
        32s), at the size of the finest map read."""
        score = self.conv_seg(self.dropout(self.features(feats)))
        skips = [feats[i] for i in self.in_index[-2::-1]]
        for up, score_skip, skip in zip(self.up_scores, self.score_skips, skips):
            score = fit_to(up(score), skip.shape[2:]) + score_skip(skip)
        return score
