"""A third-party plugin: registers into the toolbox's registries, never a scope of its own."""
import torch
from torch import nn

from toolbox.registry import MODELS


@MODELS.register_module()
class TinyConvBackbone(nn.Module):
    """Two stride-2 conv stages: (B, C, H, W) -> ((B, 16, H/2, W/2), (B, 32, H/4, W/4))."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 2, 1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.out_channels = (16, 32)
        self.strides = (2, 4)

    def forward(self, x):
        c1 = self.stage1(x)
        return c1, self.stage2(c1)


@MODELS.register_module()
class ScaledL1Loss(nn.Module):
    """``loss_weight * mean(|pred - target|)``."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, pred, target):
        return self.loss_weight * torch.mean(torch.abs(pred - target))
