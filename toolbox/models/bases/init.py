"""The toolbox's initialisation policy, shared by every base class.

* A module is fully initialised when it is *constructed* (its ``reset_parameters()`` runs at the
  end of ``__init__``), so a built model is usable and, under a seed, reproducible.
* ``init_weights()`` is mmengine's hook, called by the Runner when training starts. In the
  toolbox it applies the module's own ``init_cfg`` only: ``dict(type='Pretrained',
  checkpoint=PATH, prefix_map=None)`` through the weights-only loader
  (:func:`toolbox.engine.weights.load_weights`, which logs every key it did not load), and any
  other mmengine initialiser (``'Kaiming'``, ``'Xavier'``, ...) through
  ``mmengine.model.initialize``.

Unlike mmengine's default ``BaseModule.init_weights``, children are not re-initialised one by one:
mmcv's ``ConvModule.init_weights`` would otherwise replace a head's own initialisation (e.g.
RetinaNet's normal(std=0.01) convs) by Kaiming when the Runner starts.
"""
from __future__ import annotations

from mmengine.model import initialize
from torch import nn


def pretrained_to_init_cfg(pretrained: str | None, init_cfg):
    """Merge the shorthand ``pretrained=PATH`` into ``init_cfg`` (giving both is an error)."""
    if pretrained is None:
        return init_cfg
    if init_cfg is not None:
        raise ValueError('give either pretrained or init_cfg, not both')
    return dict(type='Pretrained', checkpoint=pretrained)


def split_init_cfg(init_cfg) -> tuple[list[dict], dict | None]:
    """``(other initialisers, the 'Pretrained' entry or None)`` of an ``init_cfg``."""
    cfgs = [] if init_cfg is None else [init_cfg] if isinstance(init_cfg, dict) else \
        list(init_cfg)
    pretrained = [c for c in cfgs if c.get('type') == 'Pretrained']
    if len(pretrained) > 1:
        raise ValueError(f'init_cfg has {len(pretrained)} Pretrained entries; give one')
    for cfg in pretrained:
        if 'checkpoint' not in cfg:
            raise ValueError(f"init_cfg {cfg} needs checkpoint=PATH (a file, or "
                             f"'torchvision://ARCH')")
    return [c for c in cfgs if c.get('type') != 'Pretrained'], \
        (pretrained[0] if pretrained else None)


def apply_init_cfg(module: nn.Module, load_pretrained=None) -> dict | None:
    """Apply ``module.init_cfg`` (see the module docstring); returns the load report, if any.

    Args:
        module: an mmengine ``BaseModule``.
        load_pretrained: ``callable(checkpoint, prefix_map) -> report`` that loads the
            ``'Pretrained'`` entry; by default :func:`load_weights` into ``module``. Backbones
            whose checkpoints need converting pass their own (see ``BaseBackbone``).
    """
    from toolbox.engine.weights import load_weights
    others, pretrained = split_init_cfg(module.init_cfg)
    if others:
        initialize(module, others)
    report = None
    if pretrained is not None:
        prefix_map = pretrained.get('prefix_map')
        if load_pretrained is None:
            report = load_weights(module, pretrained['checkpoint'], prefix_map=prefix_map)
        else:
            report = load_pretrained(pretrained['checkpoint'], prefix_map)
    module._is_init = True
    return report


def kaiming_init_conv_norm(modules, any_dim: bool = False) -> None:
    """torchvision's ResNet initialisation over ``modules`` (e.g. ``self.modules()``): every
    ``Conv2d`` Kaiming-normal (fan-out, ReLU gain) with a zero bias, every affine BatchNorm /
    GroupNorm weight 1 and bias 0. ``any_dim=True`` extends it to convs and transposed convs of
    any dimension and to instance norms (the 2D / 3D U-Net); the default keeps 2D-only, which
    the recorded runs of the other models were trained with."""
    conv_types = nn.modules.conv._ConvNd if any_dim else nn.Conv2d
    norm_types = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm) + \
        ((nn.modules.instancenorm._InstanceNorm,) if any_dim else ())
    for m in modules:
        if isinstance(m, conv_types):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, norm_types) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
