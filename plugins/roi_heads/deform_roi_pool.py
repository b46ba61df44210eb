"""Deformable RoI pooling (Dai et al. 2017, sec. 2.2) and its modulated form (DCNv2, Zhu et al.
2019), as a multi-level RoI feature extractor for the RoI heads.

Semantics are mmcv's ``DeformRoIPoolPack`` / ``ModulatedDeformRoIPoolPack``: each RoI is first
pooled to k x k by RoIAlign (half-pixel aligned); ``offset_fc`` maps that to one normalised
offset per bin, and bin (i, j) is pooled again with its box shifted by ``gamma * offset * (roi_w,
roi_h)``. The modulated form multiplies each bin by a mask from ``mask_fc``. Both last layers
are zero-initialised: at construction the result is RoIAlign (times 0.5 when modulated).

Why not one ``torchvision.ops.roi_align`` call over the shifted bins (each bin a box pooled to
1 x 1, which gives the same values): roi_align has no gradient with respect to its boxes, so
``offset_fc`` would never learn. :func:`deform_roi_pool` samples the same points with
``F.grid_sample``, differentiable in the sampling positions, and reproduces roi_align's
boundary rules (zero beyond one pixel outside the map, clamped to the edge within it); a test
checks it against roi_align to 1e-5.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolbox.models.bases import MultiLevelRoIAlign
from toolbox.registry import MODELS


def deform_roi_pool(feat: Tensor, rois: Tensor, offset: Tensor, spatial_scale: float,
                    output_size: tuple[int, int], sampling_ratio: int,
                    gamma: float = 0.1) -> Tensor:
    """Average of ``sampling_ratio``\\ ² bilinear samples in each shifted bin of each RoI.

    Args:
        feat: (B, C, H, W) one feature level.
        rois: (K, 5) ``[image_index, x1, y1, x2, y2]`` in input pixels.
        offset: (K, 2, kh, kw) normalised bin offsets, channel 0 along x (width), 1 along y
            (mmcv's layout); bin (i, j) moves by ``gamma * offset[:, :, i, j] * (w, h)``.
        spatial_scale: feature pixels per input pixel (1 / stride).
        output_size: (kh, kw) bins.
        sampling_ratio: samples per bin along each axis (> 0).
        gamma: scale of the normalised offsets.

    Returns:
        (K, C, kh, kw). With ``offset == 0`` it equals ``roi_align(feat, rois, output_size,
        spatial_scale, sampling_ratio, aligned=True)``.
    """
    (kh, kw), s = output_size, sampling_ratio
    num_images, _, height, width = feat.shape
    num_rois = rois.shape[0]
    boxes = rois[:, 1:] * spatial_scale - 0.5  # aligned: pixel centres at integers
    roi_w = (boxes[:, 2] - boxes[:, 0])[:, None, None]
    roi_h = (boxes[:, 3] - boxes[:, 1])[:, None, None]
    cols = torch.arange(kw, dtype=feat.dtype, device=feat.device)
    rows = torch.arange(kh, dtype=feat.dtype, device=feat.device)
    # top-left corner of every shifted bin, (K, kh, kw)
    left = boxes[:, 0, None, None] + cols * roi_w / kw + gamma * roi_w * offset[:, 0]
    top = boxes[:, 1, None, None] + rows[:, None] * roi_h / kh + gamma * roi_h * offset[:, 1]
    frac = (torch.arange(s, dtype=feat.dtype, device=feat.device) + 0.5) / s
    # sample grid (K, kh, s, kw, s): row i * s + iy, column j * s + ix
    x = (left[..., None] + frac * roi_w[..., None] / kw)[:, :, None, :, :]
    y = (top[..., None] + frac * roi_h[..., None] / kh).permute(0, 1, 3, 2)[..., None]
    x, y = torch.broadcast_tensors(x, y)
    # roi_align's bilinear_interpolate: zero beyond one pixel outside, clamped to the edge inside
    valid = (y >= -1) & (y <= height) & (x >= -1) & (x <= width)
    grid = torch.stack((x.clamp(0, width - 1) * 2 / max(width - 1, 1) - 1,
                        y.clamp(0, height - 1) * 2 / max(height - 1, 1) - 1), dim=-1)
    grid = grid.reshape(num_rois, kh * s, kw * s, 2)

    # one grid_sample per level: the RoIs of each image side by side, padded to the longest
    image = rois[:, 0].long()
    rank = (F.one_hot(image, num_images).cumsum(0) - 1).gather(1, image[:, None])[:, 0]
    per_image = grid.new_zeros(num_images, int(rank.max()) + 1, kh * s, kw * s, 2)
    per_image[image, rank] = grid
    sampled = F.grid_sample(feat, per_image.flatten(1, 2), mode='bilinear',
                            padding_mode='border', align_corners=True)
    sampled = sampled.unflatten(2, (-1, kh * s))[image, :, rank]  # (K, C, kh * s, kw * s)
    sampled = sampled * valid.reshape(num_rois, 1, kh * s, kw * s)
    return F.avg_pool2d(sampled, s)


@MODELS.register_module()
class MultiLevelDeformRoIPool(MultiLevelRoIAlign):
    """Deformable RoI pooling of each RoI on its FPN level (levels as ``MultiLevelRoIAlign``).

    ``forward(feats, rois)``: feats a sequence of (B, C, H_l, W_l), rois (K, 5) -> (K, C, kh,
    kw), as ``MultiLevelRoIAlign``, so it drops into ``StandardRoIHead(roi_extractor=...)``.

    Args:
        output_size: (kh, kw) bins (7 for box heads).
        featmap_strides: stride of each input level, finest first.
        in_channels: channels C of the feature maps (``offset_fc`` reads the k x k x C pooled
            features).
        sampling_ratio: samples per bin along each axis, > 0 (mmcv's default 2). Adaptive (0)
            is refused: roi_align's adaptive count ``ceil(bin size)`` would be taken from each
            shifted bin's recomputed size, where rounding can change it from the RoI's.
        aligned: must be True: mmcv's deformable RoI pooling is always half-pixel aligned
            (the unaligned RoIAlign's minimum RoI size of one pixel has no per-bin equivalent).
        finest_scale: level mapping, as ``MultiLevelRoIAlign``.
        gamma: offset scale (0.1, the paper's and mmcv's).
        modulated: add ``mask_fc`` (DCNv2's modulated deformable RoI pooling).
        fc_channels: width of the hidden layers of ``offset_fc`` / ``mask_fc`` (1024).

    ``offset_fc``: Linear(k*k*C, 1024) ReLU Linear(1024, 1024) ReLU Linear(1024, k*k*2);
    ``mask_fc``: Linear(k*k*C, 1024) ReLU Linear(1024, k*k) Sigmoid; the first layers keep
    PyTorch's default init, the last are zero (mmcv's). Unlike mmdet, whose
    ``SingleRoIExtractor`` builds one ``DeformRoIPoolPack`` (with its own ``offset_fc``) per
    level, the offset and mask layers are shared by all levels, as the box head that follows
    is: for C = 256 that is 14.0M parameters instead of 4 x 14.0M.
    """

    def __init__(self, output_size: int | tuple[int, int] = 7,
                 featmap_strides: Sequence[int] = (4, 8, 16, 32), in_channels: int = 256,
                 sampling_ratio: int = 2, aligned: bool = True, finest_scale: float = 56.0,
                 gamma: float = 0.1, modulated: bool = False, fc_channels: int = 1024):
        if sampling_ratio < 1:
            raise ValueError(f'MultiLevelDeformRoIPool needs sampling_ratio >= 1 (adaptive 0 is '
                             f'not supported, see the class docstring), got {sampling_ratio}')
        if not aligned:
            raise ValueError('MultiLevelDeformRoIPool is always half-pixel aligned (mmcv '
                             'semantics); aligned=False is not supported')
        super().__init__(output_size, featmap_strides, sampling_ratio, aligned, finest_scale)
        self.gamma = gamma
        kh, kw = self.output_size
        in_features = in_channels * kh * kw
        self.offset_fc = nn.Sequential(
            nn.Linear(in_features, fc_channels), nn.ReLU(inplace=True),
            nn.Linear(fc_channels, fc_channels), nn.ReLU(inplace=True),
            nn.Linear(fc_channels, kh * kw * 2))
        self.mask_fc = nn.Sequential(
            nn.Linear(in_features, fc_channels), nn.ReLU(inplace=True),
            nn.Linear(fc_channels, kh * kw), nn.Sigmoid()) if modulated else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero last layers: no offset, mask 0.5."""
        last_layers = [self.offset_fc[-1]] + ([self.mask_fc[-2]] if self.mask_fc else [])
        for layer in last_layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        pooled = super().forward(feats, rois)
        if rois.shape[0] == 0:
            return pooled
        kh, kw = self.output_size
        flat = pooled.flatten(1)
        offset = self.offset_fc(flat).view(-1, 2, kh, kw)
        out = pooled.new_zeros(pooled.shape)
        levels = self.map_levels(rois)
        for level, (feat, stride) in enumerate(zip(feats, self.featmap_strides)):
            index = (levels == level).nonzero(as_tuple=True)[0]
            if index.numel():
                out[index] = deform_roi_pool(feat, rois[index], offset[index], 1.0 / stride,
                                             self.output_size, self.sampling_ratio, self.gamma)
        if self.mask_fc is not None:
            out = out * self.mask_fc(flat).view(-1, 1, kh, kw)
        return out
