"""Base of every backbone: the feature contract, freezing, ``norm_eval`` and pretrained weights."""
from __future__ import annotations

import abc

from collections.abc import Sequence

from mmengine.model import BaseModule
from torch import Tensor, nn

from .init import apply_init_cfg, pretrained_to_init_cfg


class BaseBackbone(BaseModule):
    """A feature extractor with a declared output contract (like timm's ``feature_info``).

    Contract (checked for every registered backbone by ``tests/test_contracts.py``):

    * ``forward(x)`` takes (B, in_channels, H, W) and returns a tuple with one map per entry of
      ``out_indices``: map ``k`` is (B, ``out_channels[k]``, ~H / ``strides[k]``,
      ~W / ``strides[k]``) (ceil or floor division, depending on the padding of the layers).
    * ``size_divisor``: H and W must be multiples of it (1 = any size; window and patch models
      set it, and the data preprocessor's ``pad_size_divisor`` must be a multiple of it).
    * ``frozen_stages``: the modules returned by :meth:`frozen_modules` get
      ``requires_grad=False`` and stay in eval mode; ``-1`` freezes nothing.
    * ``norm_eval``: every BatchNorm stays in eval mode (running statistics frozen) in training.
    * Pretrained weights: ``pretrained=PATH`` (or ``'torchvision://ARCH'``) is shorthand for
      ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``. They are loaded by
      :meth:`init_weights`, which the Runner calls when training starts (never at build time,
      so configs build offline), with ``torch.load(weights_only=True)`` and a logged report of
      missing / unexpected / mismatched keys. Override :meth:`load_pretrained` when the
      checkpoint needs converting (key renames, decimated layers).

    Subclasses build their layers, set ``out_channels`` and ``strides`` (tuples, one entry per
    output), initialise their parameters, then call ``self.freeze_stages()``.

    Args:
        out_indices: which stages / feature points to return, ascending.
        frozen_stages: see above.
        norm_eval: see above.
        size_divisor: see above.
        pretrained: checkpoint shorthand, see above.
        init_cfg: mmengine ``init_cfg`` (a ``'Pretrained'`` entry may add ``prefix_map``, key
            renames applied before matching).
    """

    def __init__(self, out_indices: Sequence[int], frozen_stages: int = -1,
                 norm_eval: bool = False, size_divisor: int = 1, pretrained: str | None = None,
                 init_cfg: dict | list | None = None):
        super().__init__(init_cfg=pretrained_to_init_cfg(pretrained, init_cfg))
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.size_divisor = size_divisor
        self.out_channels: tuple[int, ...] = ()
        self.strides: tuple[int, ...] = ()

    @property
    def pretrained(self) -> str | None:
        """The checkpoint that :meth:`init_weights` will load, or ``None``."""
        from .init import split_init_cfg
        entry = split_init_cfg(self.init_cfg)[1]
        return None if entry is None else entry['checkpoint']

    def check_out_indices(self, num_points: int) -> None:
        """Raise unless ``out_indices`` is ascending, unique and inside ``0..num_points - 1``."""
        idx = self.out_indices
        if not idx or list(idx) != sorted(set(idx)) or not all(0 <= i < num_points for i in idx):
            raise ValueError(f'{type(self).__name__}: out_indices must be ascending indices in '
                             f'0..{num_points - 1}, got {idx}')

    def frozen_modules(self) -> list[nn.Module]:
        """Modules frozen by ``frozen_stages`` (none by default)."""
        if self.frozen_stages >= 0:
            raise ValueError(f'{type(self).__name__} does not support frozen_stages='
                             f'{self.frozen_stages}; use -1')
        return []

    def freeze_stages(self) -> None:
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        """Switch mode, keeping frozen stages (and every BatchNorm if ``norm_eval``) in eval."""
        super().train(mode)
        if mode:
            for module in self.frozen_modules():
                module.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def load_pretrained(self, checkpoint: str, prefix_map=None) -> dict[str, list[str]]:
        """Load a checkpoint into this backbone; returns the :func:`load_weights` report."""
        from toolbox.engine.weights import load_weights
        return load_weights(self, checkpoint, prefix_map=prefix_map)

    def init_weights(self) -> dict[str, list[str]] | None:
        """Apply ``init_cfg`` (pretrained weights included), then re-freeze; returns the load
        report (``None`` without pretrained weights)."""
        report = apply_init_cfg(self, self.load_pretrained)
        self.freeze_stages()
        return report

    @abc.abstractmethod
    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, in_channels, H, W) -> tuple of the maps selected by ``out_indices``."""
