"""Anchor generation.

Anchors are ``xyxy`` absolute pixels in the padded input frame, ordered per level as
``(y, x, anchor)``: for a level of size (H, W) with A base anchors the (H * W * A, 4) tensor
has anchor ``a`` of cell ``(y, x)`` at row ``(y * W + x) * A + a``. This matches a head output
permuted from (B, A * K, H, W) to (B, H, W, A, K) and flattened.
"""
from __future__ import annotations

import torch

from toolbox.registry import TASK_UTILS


@TASK_UTILS.register_module()
class AnchorGenerator:
    """Square-grid anchors per FPN level (the RetinaNet / Faster R-CNN convention).

    Args:
        strides: stride of each level, e.g. (8, 16, 32, 64, 128).
        ratios: height / width ratios, e.g. (0.5, 1.0, 2.0).
        scales: anchor sizes relative to ``base_sizes`` (default: the strides); or give
            ``octave_base_scale`` and ``scales_per_octave`` (RetinaNet: 4 and 3, i.e. scales
            4 * 2^(k/3)).
        base_sizes: per-level base size; defaults to the stride.
        center_offset: anchor centres at ``(x + center_offset) * stride``; 0 as in mmdet,
            0.5 as in SSD / RefineDet.
        round_base_anchors: round the corners of the base anchors to integers (torchvision's
            ``AnchorGenerator``); False as in mmdet.

    With ratio ``r`` and size ``s`` an anchor has ``w = s / sqrt(r)``, ``h = s * sqrt(r)``.
    Base anchors are ordered ratio-major, scale fastest (as mmdet's default).
    """

    def __init__(self, strides, ratios=(0.5, 1.0, 2.0), scales=None, octave_base_scale=None,
                 scales_per_octave=None, base_sizes=None, center_offset: float = 0.0,
                 round_base_anchors: bool = False):
        self.strides = [int(s) for s in strides]
        if scales is None:
            if octave_base_scale is None or scales_per_octave is None:
                raise ValueError('give scales, or octave_base_scale and scales_per_octave')
            scales = [octave_base_scale * 2 ** (k / scales_per_octave)
                      for k in range(scales_per_octave)]
        elif octave_base_scale is not None:
            raise ValueError('give either scales or octave_base_scale, not both')
        self.ratios = torch.tensor(ratios, dtype=torch.float32)
        self.scales = torch.tensor(scales, dtype=torch.float32)
        self.base_sizes = list(base_sizes) if base_sizes is not None else list(self.strides)
        self.center_offset = center_offset
        self.round_base_anchors = round_base_anchors
        self.base_anchors = [self._base_anchors(s) for s in self.base_sizes]

    @property
    def num_base_anchors(self) -> list[int]:
        return [len(b) for b in self.base_anchors]

    def _base_anchors(self, base_size: float) -> torch.Tensor:
        """(A, 4) anchors centred at 0, A = len(ratios) * len(scales), scale fastest."""
        h_ratio = self.ratios.sqrt()
        w_ratio = 1 / h_ratio
        ws = (base_size * w_ratio[:, None] * self.scales[None, :]).reshape(-1)
        hs = (base_size * h_ratio[:, None] * self.scales[None, :]).reshape(-1)
        base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)
        return base.round() if self.round_base_anchors else base

    def grid_anchors(self, featmap_sizes, device='cpu') -> list[torch.Tensor]:
        """Anchors of each level: list of (H_l * W_l * A_l, 4), see module docstring."""
        anchors = []
        for base, stride, (h, w) in zip(self.base_anchors, self.strides, featmap_sizes):
            xs = (torch.arange(w, device=device, dtype=torch.float32) + self.center_offset) * stride
            ys = (torch.arange(h, device=device, dtype=torch.float32) + self.center_offset) * stride
            yy, xx = torch.meshgrid(ys, xs, indexing='ij')
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            anchors.append((shifts + base.to(device)[None]).reshape(-1, 4))
        return anchors
