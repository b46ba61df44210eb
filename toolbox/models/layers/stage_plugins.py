"""Modules inserted into a backbone by config, in mmdet's ``plugins`` format.

::

    plugins=[dict(cfg=dict(type='SE', ratio=1 / 16), stages=(False, True, True, True),
                  position='after_conv2'),
             dict(cfg=dict(type='SpatialTransformer'), position='input')]

Each ``cfg`` is built from ``toolbox.registry.MODELS`` with ``in_channels`` set to the channels
at its position; the module must map (B, C, H, W) -> (B, C, H, W) (the attention plugins do).
Several plugins at one position run in list order, as one ``nn.Sequential``.

Positions (which a backbone supports is its own choice, checked by :func:`parse_plugins`):

* ``'after_conv1'``, ``'after_conv2'``, ``'after_conv3'``: inside every block of the selected
  stages, after that conv's norm (and activation, except for the block's last conv, where it
  runs before the residual add, as mmdet's ``Bottleneck``);
* ``'after_concat'``: VoVNet's OSA module, after the 1x1 aggregation conv;
* ``'after_stage'``: once on each selected stage's output;
* ``'input'``: once on the backbone's input image (``stages`` not allowed).

``stages`` (default: all) is one bool per stage.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from toolbox.registry import MODELS

PLUGIN_POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3', 'after_concat', 'after_stage',
                    'input')


def parse_plugins(plugins: Sequence[dict] | None, positions: Sequence[str],
                  num_stages: int = 4, owner: str = 'backbone') -> list[dict]:
    """Validate a ``plugins`` list; returns copies with ``stages`` filled in (a tuple of
    ``num_stages`` bools; ``None`` for ``'input'``).

    Args:
        plugins: the config list (``None``: no plugins).
        positions: the positions ``owner`` supports (a subset of :data:`PLUGIN_POSITIONS`).
        num_stages: stages of the backbone.
        owner: named in the errors (e.g. ``'ResNet-18 (BasicBlock)'``).

    Raises:
        ValueError: naming the entry and the option (``position``, ``stages``, ``cfg``,
            unknown keys) with the allowed values.
    """
    parsed = []
    for i, plugin in enumerate(plugins or ()):
        where = f'{owner} plugins[{i}]'
        if not isinstance(plugin, dict):
            raise ValueError(f'{where} must be a dict(cfg=..., position=..., stages=...), got '
                             f'{plugin!r}')
        unknown = set(plugin) - {'cfg', 'position', 'stages'}
        if unknown:
            raise ValueError(f'{where}: unknown keys {sorted(unknown)}; accepted: cfg, position, '
                             f'stages')
        cfg = plugin.get('cfg')
        if not isinstance(cfg, dict) or 'type' not in cfg:
            raise ValueError(f'{where}: cfg must be a module config with a type, got {cfg!r}')
        if 'in_channels' in cfg:
            raise ValueError(f'{where}: cfg sets in_channels; the backbone sets it to the '
                             f'channels at the position')
        position = plugin.get('position')
        if position not in PLUGIN_POSITIONS:
            raise ValueError(f'{where}: position must be one of {PLUGIN_POSITIONS}, got '
                             f'{position!r}')
        if position not in positions:
            raise ValueError(f'{where}: position {position!r} does not exist in {owner}; its '
                             f'positions are {tuple(positions)}')
        stages = plugin.get('stages')
        if position == 'input':
            if stages is not None:
                raise ValueError(f"{where}: position 'input' runs once on the image and takes "
                                 f"no stages, got stages={stages!r}")
        elif stages is None:
            stages = (True, ) * num_stages
        else:
            stages = tuple(stages)
            if len(stages) != num_stages or not all(isinstance(s, bool) for s in stages):
                raise ValueError(f'{where}: stages must be {num_stages} bools (one per stage), '
                                 f'got {stages!r}')
        parsed.append(dict(cfg=dict(cfg), position=position, stages=stages))
    return parsed


def select_stage_plugins(plugins: Sequence[dict], stage_index: int | None
                         ) -> dict[str, list[dict]]:
    """Position -> the ``cfg``\\ s of the parsed ``plugins`` active in stage ``stage_index``
    (``None``: the ``'input'`` plugins), in list order."""
    selected: dict[str, list[dict]] = {}
    for plugin in plugins:
        if stage_index is None:
            active = plugin['position'] == 'input'
        else:
            active = plugin['position'] != 'input' and plugin['stages'][stage_index]
        if active:
            selected.setdefault(plugin['position'], []).append(plugin['cfg'])
    return selected


def build_plugin_sequence(cfgs: Sequence[dict] | None, in_channels: int
                          ) -> nn.Sequential | None:
    """``nn.Sequential`` of ``MODELS.build(dict(cfg, in_channels=in_channels))`` for each cfg,
    or ``None`` when there is none (so the host's state dict gains no key)."""
    if not cfgs:
        return None
    return nn.Sequential(*[MODELS.build(dict(cfg, in_channels=in_channels)) for cfg in cfgs])
