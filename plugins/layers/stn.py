"""Spatial transformer (Jaderberg et al. 2015): a learned affine warp of a feature map or image.

Registered as 'SpatialTransformer'. Like the attention blocks it is a stage plugin: first
argument ``in_channels``, (B, C, H, W) -> (B, C, H, W), any H, W >= 1; in front of a backbone
(position 'input', ``in_channels=3``) it warps the image, between stages a feature map.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolbox.registry import MODELS

IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@MODELS.register_module(name='SpatialTransformer')
class SpatialTransformer(nn.Module):
    """Localisation net -> affine theta (B, 2, 3) -> bilinear resampling of the input.

    Localisation net (the paper's / PyTorch tutorial's, widths as arguments): conv 7x7
    C -> ``conv_channels[0]``, max-pool 2, ReLU, conv 5x5 -> ``conv_channels[1]``, max-pool 2,
    ReLU, adaptive average pool to ``pooled_size`` x ``pooled_size``, fc -> ``hidden_channels``,
    ReLU, fc -> 6. Unlike the tutorial's 28x28 MNIST net, the convs are zero-padded to keep
    their map size and the pools round up (``ceil_mode``), so any map down to 1x1 goes through.

    ``theta`` maps normalised output coordinates to input coordinates (x, y in [-1, 1], pixel
    corners at +-1: ``align_corners=False``): ``[x_in, y_in] = theta @ [x_out, y_out, 1]``, so a
    translation ``theta[:, 0, 2] = 2 * k / W`` makes output pixel j read input pixel j + k.
    Samples outside the input are 0 (``padding_mode='zeros'``).

    The last fc has zero weight and the identity as bias: at initialisation theta is the
    identity for every input and the module returns its input (up to float rounding).

    Args:
        in_channels: C.
        conv_channels: widths of the two localisation convs.
        pooled_size: side of the pooled map fed to the first fc.
        hidden_channels: width of the hidden fc.
    """

    def __init__(self, in_channels: int, conv_channels: tuple[int, int] = (8, 10),
                 pooled_size: int = 3, hidden_channels: int = 32):
        super().__init__()
        self.in_channels = in_channels
        self.localization = nn.Sequential(
            nn.Conv2d(in_channels, conv_channels[0], 7, padding=3),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.Conv2d(conv_channels[0], conv_channels[1], 5, padding=2),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(pooled_size),
            nn.Flatten(),
            nn.Linear(conv_channels[1] * pooled_size ** 2, hidden_channels),
            nn.ReLU(inplace=True))
        self.fc_theta = nn.Linear(hidden_channels, 6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Default init of the localisation net; ``fc_theta`` zero weight, identity bias."""
        for module in self.localization:
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.reset_parameters()
        nn.init.zeros_(self.fc_theta.weight)
        with torch.no_grad():
            self.fc_theta.bias.copy_(torch.tensor(IDENTITY_THETA))

    def predict_theta(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> affine theta (B, 2, 3)."""
        return self.fc_theta(self.localization(x)).view(-1, 2, 3)

    def warp(self, x: Tensor, theta: Tensor) -> Tensor:
        """Resample ``x`` (B, C, H, W) on the grid of ``theta`` (B, 2, 3) -> (B, C, H, W)."""
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return self.warp(x, self.predict_theta(x))
