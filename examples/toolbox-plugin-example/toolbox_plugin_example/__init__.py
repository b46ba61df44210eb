"""A third-party plugin: registers into the toolbox's registries, never a scope of its own."""
import torch
from torch import nn

from toolbox.models.bases import BaseBackbone
from toolbox.registry import MODELS


@MODELS.register_module()
class TinyConvBackbone(BaseBackbone):
    """Two stride-2 conv stages: (B, C, H, W) -> ((B, 16, H/2, W/2), (B, 32, H/4, W/4)).

    Built on the toolbox's ``BaseBackbone``, which gives it the feature contract
    (``out_indices``, ``out_channels``, ``strides``), ``frozen_stages``, ``norm_eval`` and
    ``pretrained`` / ``init_cfg`` loading in ``init_weights()``.

    Args:
        in_channels: channels of the input image.
        out_indices: stages to return (0: stride 2, 1: stride 4), ascending.
        frozen_stages: -1 freezes nothing, k the stages 0..k (numbered as ``out_indices``).
        pretrained, init_cfg: see ``BaseBackbone``.
    """

    def __init__(self, in_channels: int = 3, out_indices=(0, 1), frozen_stages: int = -1,
                 pretrained=None, init_cfg=None):
        super().__init__(out_indices=out_indices, frozen_stages=frozen_stages,
                         pretrained=pretrained, init_cfg=init_cfg)
        self.check_out_indices(2)
        if not -1 <= frozen_stages <= 1:
            raise ValueError(f'frozen_stages must be in -1..1, got {frozen_stages}')
        self.stage1 = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 2, 1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.out_channels = tuple((16, 32)[i] for i in self.out_indices)
        self.strides = tuple((2, 4)[i] for i in self.out_indices)
        self.freeze_stages()  # the convs keep PyTorch's default initialisation

    def frozen_modules(self):
        return [self.stage1, self.stage2][:self.frozen_stages + 1]

    def forward(self, x):
        c1 = self.stage1(x)
        feats = (c1, self.stage2(c1))
        return tuple(feats[i] for i in self.out_indices)


@MODELS.register_module()
class ScaledL1Loss(nn.Module):
    """``loss_weight * mean(|pred - target|)``."""

    def __init__(self, loss_weight: float = 1.0):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, pred, target):
        return self.loss_weight * torch.mean(torch.abs(pred - target))
