"""Registry-wide contracts (in the spirit of timm's ``tests/test_models.py``).

* Every registered backbone (a ``BaseBackbone`` subclass, or a class defined in a ``.backbones.``
  module) builds from a small config, runs forward and backward on two input sizes, returns the
  maps its ``out_channels`` / ``strides`` declare, with finite values and gradients, and honours
  ``frozen_stages`` / ``norm_eval`` where its constructor takes them.
* Every first-party head and loss is built by the recipe that uses it: each model sub-config
  of ``configs/`` whose ``type`` names a head or a loss builds, and a head or loss that no
  recipe uses fails.

The lists are read from the registry when the tests are collected, so new components are
covered (or fail, asking for a test entry) without editing this file.
"""
from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable, Iterator

import pytest
import torch
from mmengine import Config
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from toolbox.models.bases import BaseBackbone
from toolbox.models.layers import fuse_conv_bn
from toolbox.models.layers.fuse import FUSABLE_NORMS
from toolbox.plugins import DISTRIBUTION, distribution_of
from toolbox.registry import MODELS

from .conftest import REPO_ROOT

# Keyword overrides for backbones that need arguments or are too big for 2 CPU cores. A backbone
# without an entry is built with its defaults.
BACKBONE_CONFIGS: dict[str, dict] = {
    'ResNet': dict(depth=18),
    'RefineDetResNet': dict(depth=18, extra_planes=16, norm_eval=False),
    'VGG': dict(stage_channels=(8, 8, 16, 16, 16), fc_channels=16, extra_channels=(8, 16)),
    'AlignedXception': dict(out_indices=(0, 1, 2, 3, 4)),  # every feature point
    'Xception': dict(out_indices=(0, 1, 2, 3, 4)),
    'VoVNet': dict(arch='V-19-slim', version=2, ese_blocks='all'),
    'SwinTransformer': dict(arch=dict(embed_dims=16, depths=(2, 2, 2, 2),
                                      num_heads=(1, 2, 2, 4))),
    'SpineNet': dict(arch=dict(endpoints_num_filters=16, filter_size_scale=0.25,
                               resample_alpha=0.5, block_repeats=1)),
    'ViT': dict(in_channels=3, img_size=64, spatial_dims=2, hidden_size=32, mlp_dim=64,
                num_layers=3, num_heads=2, out_indices=(1, 2, 3)),
}
# Input sizes (H, W) of backbones that take one fixed size (a learned position embedding per
# patch); the others run every size of INPUT_SIZES.
FIXED_INPUT_SIZES: dict[str, tuple[tuple[int, int], ...]] = {'ViT': ((64, 64),)}
# BatchNorms a backbone documents as training even under norm_eval=True (name prefixes):
# RefineDetResNet's extra block is new, so its norms always train.
NORM_EVAL_TRAINING: dict[str, tuple[str, ...]] = {
    'RefineDetResNet': ('res6.',),
}
# (H, W), rounded up to the backbone's size_divisor (only when it declares one, i.e. > 1); the
# second is not a multiple of 32, so odd map sizes (ceil vs floor) are exercised
INPUT_SIZES = ((64, 64), (100, 132))
FROZEN_STAGES = 1  # the value the frozen_stages contract is checked with


def registered_backbones() -> dict[str, type]:
    """Registered classes that subclass BaseBackbone or live in a ``.backbones.`` module."""
    return {name: cls for name, cls in sorted(MODELS.module_dict.items())
            if inspect.isclass(cls) and not inspect.isabstract(cls)
            and (issubclass(cls, BaseBackbone) or '.backbones.' in cls.__module__)}


def first_party_heads_and_losses() -> dict[str, type]:
    """Registered classes of the toolbox's own distribution (``DISTRIBUTION``) in a ``heads.``
    or ``.losses.`` module (abstract bases excluded)."""
    return {name: cls for name, cls in sorted(MODELS.module_dict.items())
            if inspect.isclass(cls) and not inspect.isabstract(cls)
            and _distribution(cls.__module__) == DISTRIBUTION
            and ('heads.' in cls.__module__ or '.losses.' in cls.__module__)}


@functools.lru_cache(maxsize=None)
def _distribution(module: str) -> str:
    return distribution_of(module)


# ----------------------------------------------------------------------------------- backbones

def _declares(cls: type, argument: str) -> bool:
    return argument in inspect.signature(cls).parameters


def _small_config(name: str, cls: type) -> dict:
    """Keyword arguments to build backbone ``name``, or fail asking for a test entry."""
    if name in BACKBONE_CONFIGS:
        return dict(BACKBONE_CONFIGS[name])
    required = [p.name for p in inspect.signature(cls).parameters.values()
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        pytest.fail(f'backbone {name} ({cls.__module__}) needs arguments {required} and has no '
                    f'entry in BACKBONE_CONFIGS of tests/test_contracts.py: add a small config '
                    f'(narrow and shallow enough for 2 CPU cores) so that it runs the contract')
    return {}


def _input(model: BaseBackbone, height: int, width: int) -> torch.Tensor:
    """(2, 3, H, W) normal noise, H and W rounded up to ``model.size_divisor``."""
    divisor = model.size_divisor
    height, width = (math.ceil(s / divisor) * divisor for s in (height, width))
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))


def _forward_backward(model: BaseBackbone, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    model.zero_grad(set_to_none=True)
    outs = model(x)
    loss = sum(out.float().mean() for out in outs)
    if loss.requires_grad:  # False when every parameter is frozen
        loss.backward()
    return outs


def _batch_norm_stats(modules: list[tuple[str, nn.Module]]) -> dict[str, torch.Tensor]:
    return {f'{name}.{stat}': getattr(m, stat).clone() for name, m in modules
            if isinstance(m, _BatchNorm) and m.track_running_stats
            for stat in ('running_mean', 'running_var')}


def check_feature_contract(model: BaseBackbone, name: str) -> None:
    """Forward (train mode) and backward on ``INPUT_SIZES``: declared channels and strides,
    finite outputs, a finite gradient for every trainable parameter."""
    assert isinstance(model, BaseBackbone), \
        f'{name} ({type(model).__module__}) must subclass toolbox.models.bases.BaseBackbone'
    channels, strides = tuple(model.out_channels), tuple(model.strides)
    assert len(channels) == len(strides) > 0, \
        f'{name}: out_channels {channels} and strides {strides} need one entry per output'
    assert model.size_divisor >= 1
    model.train()
    for height, width in FIXED_INPUT_SIZES.get(name, INPUT_SIZES):
        x = _input(model, height, width)
        h, w = x.shape[-2:]
        outs = _forward_backward(model, x)
        assert isinstance(outs, tuple) and len(outs) == len(channels), \
            f'{name}: returned {type(outs).__name__} of {len(outs)}, declares {len(channels)}'
        for k, (out, c, s) in enumerate(zip(outs, channels, strides)):
            assert out.shape[:2] == (2, c), \
                f'{name}: output {k} has shape {tuple(out.shape)}, declares {c} channels'
            assert out.shape[2] in (h // s, -(-h // s)) and out.shape[3] in (w // s, -(-w // s)), \
                f'{name}: output {k} is {tuple(out.shape[2:])} for input {(h, w)}, declares ' \
                f'stride {s}'
            assert torch.isfinite(out).all(), f'{name}: output {k} is not finite'
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        assert trainable, f'{name}: no trainable parameter'
        no_grad = [n for n, p in trainable if p.grad is None]
        assert no_grad == [], f'{name}: trainable parameters without a gradient: {no_grad[:8]}'
        not_finite = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
        assert not_finite == [], f'{name}: non-finite gradients: {not_finite[:8]}'


def check_frozen_stages(build: Callable[..., BaseBackbone], name: str) -> None:
    """``frozen_stages=FROZEN_STAGES`` freezes ``frozen_modules()`` (no gradient, eval mode,
    running statistics unchanged) and nothing else; ``frozen_stages=-1`` freezes nothing."""
    model = build(frozen_stages=FROZEN_STAGES)
    frozen = model.frozen_modules()
    assert frozen, f'{name}: frozen_stages={FROZEN_STAGES} froze no module'
    frozen_ids = {id(p) for m in frozen for p in m.parameters()}
    assert frozen_ids, f'{name}: the frozen modules have no parameters'
    trainable = [p for p in model.parameters() if id(p) not in frozen_ids]
    assert all(not p.requires_grad for m in frozen for p in m.parameters()), \
        f'{name}: a parameter of a frozen module still requires grad'
    assert all(p.requires_grad for p in trainable), \
        f'{name}: frozen_stages={FROZEN_STAGES} froze parameters outside frozen_modules()'
    model.train()
    training = [type(sub).__name__ for m in frozen for sub in m.modules() if sub.training]
    assert training == [], f'{name}: frozen modules in training mode after train(): {training}'
    frozen_named = [(f'{i}.{n}', sub) for i, m in enumerate(frozen)
                    for n, sub in m.named_modules()]
    stats = _batch_norm_stats(frozen_named)
    _forward_backward(model, _input(model, *INPUT_SIZES[0]))
    assert all(p.grad is None for m in frozen for p in m.parameters())
    for key, value in _batch_norm_stats(frozen_named).items():
        assert torch.equal(value, stats[key]), f'{name}: frozen running stat {key} changed'

    model = build(frozen_stages=-1)
    assert model.frozen_modules() == []
    assert all(p.requires_grad for p in model.parameters()), \
        f'{name}: frozen_stages=-1 left parameters frozen'


def check_norm_eval(build: Callable[..., BaseBackbone], name: str,
                    training_prefixes: tuple[str, ...] = (), unfreeze: bool = False) -> None:
    """``norm_eval=True``: every BatchNorm (except ``training_prefixes``) stays in eval mode
    after ``train()`` and keeps its running statistics; ``norm_eval=False``: they train.
    ``unfreeze``: build with ``frozen_stages=-1`` (frozen stages are in eval mode anyway)."""
    unfrozen = dict(frozen_stages=-1) if unfreeze else {}
    model = build(norm_eval=True, **unfrozen).train()
    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm)
             and not n.startswith(training_prefixes)]
    training = [n for n, m in norms if m.training]
    assert training == [], f'{name}: norm_eval=True but BatchNorms train: {training[:8]}'
    stats = _batch_norm_stats(norms)
    _forward_backward(model, _input(model, *INPUT_SIZES[0]))
    for key, value in _batch_norm_stats(norms).items():
        assert torch.equal(value, stats[key]), f'{name}: norm_eval=True but {key} changed'

    model = build(norm_eval=False, **unfrozen).train()
    assert all(m.training for m in model.modules() if isinstance(m, _BatchNorm))


def check_channels_last(model: BaseBackbone, name: str) -> None:
    """A channels-last input (``x.to(memory_format=torch.channels_last)``) gives the outputs of
    the contiguous one (eval mode) on every size of ``INPUT_SIZES``: within 1e-5 of the
    output's scale (max(1, max |output|)), since the two layouts run different conv kernels
    whose fp32 sums round differently (measured: 1.1e-5 on a ResNet-18 map of magnitude 10)."""
    model.eval()
    for height, width in FIXED_INPUT_SIZES.get(name, INPUT_SIZES):
        x = _input(model, height, width)
        with torch.no_grad():
            expected = model(x)
            got = model(x.to(memory_format=torch.channels_last))
        for k, (a, b) in enumerate(zip(got, expected)):
            assert a.shape == b.shape, f'{name}: output {k} is {tuple(a.shape)} for a ' \
                f'channels-last input, {tuple(b.shape)} for a contiguous one'
            error = (a.float() - b.float()).abs().max().item()
            scale = max(1.0, b.float().abs().max().item())
            assert error <= 1e-5 * scale, f'{name}: output {k} differs by {error:.3g} ' \
                f'(scale {scale:.3g}) for a channels-last input'


def randomise_norm_statistics(model: nn.Module, seed: int = 1) -> int:
    """Random running statistics and affine parameters for every foldable BatchNorm (at
    initialisation they are the identity, which folding would leave unchanged whatever it
    did); returns how many."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules()
             if type(m) in FUSABLE_NORMS and getattr(m, 'running_mean', None) is not None]
    with torch.no_grad():
        for norm in norms:
            channels = norm.running_mean.numel()
            norm.running_mean.copy_(torch.randn(channels, generator=gen) * 0.5)
            norm.running_var.copy_(torch.rand(channels, generator=gen) * 1.5 + 0.5)
            if norm.weight is not None:
                norm.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
                norm.bias.copy_(torch.randn(channels, generator=gen) * 0.2)
    return len(norms)


def check_fuse_conv_bn(model: BaseBackbone, name: str) -> None:
    """Folding the BatchNorms into the convolutions (:func:`fuse_conv_bn`, random statistics)
    leaves the eval-mode outputs unchanged to 1e-5 of their scale, and folds every BatchNorm of
    a backbone whose BatchNorms all follow a plain convolution."""
    model.eval()
    num_norms = randomise_norm_statistics(model)
    height, width = FIXED_INPUT_SIZES.get(name, INPUT_SIZES)[-1]
    x = _input(model, height, width)
    with torch.no_grad():
        expected = model(x)
        folded = fuse_conv_bn(model)
        got = model(x)
    assert folded == num_norms, f'{name}: folded {folded} of {num_norms} BatchNorms'
    for k, (a, b) in enumerate(zip(got, expected)):
        error = (a - b).abs().max().item()
        scale = max(1.0, b.abs().max().item())
        assert error <= 1e-5 * scale, f'{name}: output {k} differs by {error:.3g} ' \
            f'(scale {scale:.3g}) after fuse_conv_bn'


def _backbone_builder(name: str, cls: type) -> Callable[..., BaseBackbone]:
    kwargs = _small_config(name, cls)
    return lambda **overrides: MODELS.build(dict(type=name, **{**kwargs, **overrides}))


@pytest.mark.parametrize('name', list(registered_backbones()))
def test_backbone_feature_contract(name):
    cls = registered_backbones()[name]
    assert issubclass(cls, BaseBackbone), \
        f'{name} ({cls.__module__}) is a backbone but does not subclass ' \
        f'toolbox.models.bases.BaseBackbone'
    torch.manual_seed(0)
    check_feature_contract(_backbone_builder(name, cls)(), name)


@pytest.mark.parametrize('name', [n for n, c in registered_backbones().items()
                                  if _declares(c, 'frozen_stages')])
def test_backbone_frozen_stages(name):
    cls = registered_backbones()[name]
    assert issubclass(cls, BaseBackbone), f'{name} must subclass BaseBackbone'
    check_frozen_stages(_backbone_builder(name, cls), name)


@pytest.mark.parametrize('name', [n for n, c in registered_backbones().items()
                                  if _declares(c, 'norm_eval')])
def test_backbone_norm_eval(name):
    cls = registered_backbones()[name]
    assert issubclass(cls, BaseBackbone), f'{name} must subclass BaseBackbone'
    check_norm_eval(_backbone_builder(name, cls), name, NORM_EVAL_TRAINING.get(name, ()),
                    unfreeze=_declares(cls, 'frozen_stages'))


@pytest.mark.parametrize('name', list(registered_backbones()))
def test_backbone_accepts_channels_last_input(name):
    cls = registered_backbones()[name]
    torch.manual_seed(0)
    check_channels_last(_backbone_builder(name, cls)(), name)


@pytest.mark.parametrize('name', list(registered_backbones()))
def test_backbone_batch_norms_fold_into_convolutions(name):
    cls = registered_backbones()[name]
    torch.manual_seed(0)
    check_fuse_conv_bn(_backbone_builder(name, cls)(), name)


def test_every_registered_backbone_is_covered():
    names = registered_backbones()
    assert {'ResNet', 'VGG', 'AlignedXception'} <= set(names)
    stale = sorted(set(BACKBONE_CONFIGS) - set(names))
    assert stale == [], f'BACKBONE_CONFIGS has entries for unregistered backbones: {stale}'


# The contract checks must be able to fail: a tiny backbone that keeps them, and variants that
# each break one.

class _TinyBackbone(BaseBackbone):
    """conv(s2) + BN -> conv(s2) + BN: ((B, 4, H/2, W/2), (B, 8, H/4, W/4))."""

    def __init__(self, frozen_stages: int = -1, norm_eval: bool = False,
                 declared_strides=(2, 4), declared_channels=(4, 8), leak_frozen: bool = False):
        super().__init__(out_indices=(0, 1), frozen_stages=frozen_stages, norm_eval=norm_eval)
        self.stage1 = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.BatchNorm2d(4), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(4, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.unused = nn.Conv2d(8, 8, 1)
        self.out_channels, self.strides = tuple(declared_channels), tuple(declared_strides)
        self.leak_frozen = leak_frozen
        self.freeze_stages()

    def frozen_modules(self):
        return [self.stage1] if self.frozen_stages >= 1 else []

    def train(self, mode: bool = True):
        super().train(mode)
        if self.leak_frozen:  # forgets to keep the frozen stage in eval mode
            self.stage1.train(mode)
        return self

    def forward(self, x):
        c1 = self.stage1(x)
        return c1, self.stage2(c1)


def test_contract_checks_pass_a_conforming_backbone_and_catch_violations():
    class Used(_TinyBackbone):
        def forward(self, x):
            c1, c2 = super().forward(x)
            return c1, self.unused(c2)

    check_feature_contract(Used(), 'Used')
    check_frozen_stages(lambda **kw: Used(**kw), 'Used')
    check_norm_eval(lambda **kw: Used(**kw), 'Used', unfreeze=True)
    with pytest.raises(AssertionError, match='without a gradient'):
        check_feature_contract(_TinyBackbone(), 'Tiny')  # `unused` gets no gradient
    with pytest.raises(AssertionError, match='declares stride 8'):
        check_feature_contract(Used(declared_strides=(2, 8)), 'Tiny')
    with pytest.raises(AssertionError, match='declares 16 channels'):
        check_feature_contract(Used(declared_channels=(4, 16)), 'Tiny')
    with pytest.raises(AssertionError, match='one entry per output'):
        check_feature_contract(Used(declared_channels=(4,)), 'Tiny')
    with pytest.raises(AssertionError, match='training mode after train'):
        check_frozen_stages(lambda **kw: Used(leak_frozen=True, **kw), 'Tiny')

    class NoNormEval(Used):
        def train(self, mode: bool = True):
            return nn.Module.train(self, mode)  # ignores norm_eval

    with pytest.raises(AssertionError, match='norm_eval=True but BatchNorms train'):
        check_norm_eval(lambda **kw: NoNormEval(**kw), 'Tiny')
    check_norm_eval(lambda **kw: NoNormEval(**kw), 'Tiny', ('stage1.', 'stage2.'))

    check_channels_last(Used(), 'Used')

    class AssumesContiguous(Used):
        def forward(self, x):  # reads memory as if (B, C, H, W) were contiguous
            x = torch.as_strided(x, x.shape, torch.empty_like(x, memory_format=
                                                              torch.contiguous_format).stride())
            return super().forward(x)

    with pytest.raises(AssertionError, match='output 0 differs by .* for a channels-last'):
        check_channels_last(AssumesContiguous(), 'Tiny')


def test_a_backbone_without_entry_or_defaults_is_asked_for_one():
    class NeedsDepth(_TinyBackbone):
        def __init__(self, depth: int):
            super().__init__()

    with pytest.raises(pytest.fail.Exception, match='add a small config'):
        _small_config('NeedsDepth', NeedsDepth)
    assert _small_config('Tiny', _TinyBackbone) == {}
    assert _small_config('VGG', object) == BACKBONE_CONFIGS['VGG']


# ------------------------------------------------------------------------ heads and losses

CONFIG_DIR = REPO_ROOT / 'configs'


def _sub_configs(node, path: str, names: set[str]) -> Iterator[tuple[str, dict]]:
    """Every dict under ``node`` (nested dicts and lists) whose ``type`` is in ``names``."""
    if isinstance(node, dict):
        if isinstance(node.get('type'), str) and node['type'] in names:
            yield path, node
        for key, value in node.items():
            yield from _sub_configs(value, f'{path}.{key}', names)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _sub_configs(value, f'{path}[{i}]', names)


@functools.lru_cache(maxsize=None)
def recipe_builds() -> tuple[dict[str, list[tuple[str, str | None]]], list[str]]:
    """Build every head / loss sub-config of every config in ``configs/`` (once per session).

    Returns:
        ``uses``: component name -> ``[(where, error or None)]``, ``where`` being
        ``'configs/x.py: model.bbox_head'``; ``errors``: configs that failed to load.
    """
    names = set(first_party_heads_and_losses())
    uses: dict[str, list[tuple[str, str | None]]] = {name: [] for name in names}
    load_errors = []
    for path in sorted(CONFIG_DIR.rglob('*.py')):
        rel = path.relative_to(REPO_ROOT).as_posix()
        try:
            model = Config.fromfile(str(path)).to_dict().get('model')
        except Exception as exc:
            load_errors.append(f'{rel}: {type(exc).__name__}: {exc}')
            continue
        for where, cfg in _sub_configs(model, 'model', names):
            try:
                built = MODELS.build(copy.deepcopy(cfg))
                error = None if type(built).__name__ == cfg['type'] else \
                    f'built {type(built).__name__}'
            except Exception as exc:
                error = f'{type(exc).__name__}: {exc}'
            uses[cfg['type']].append((f'{rel}: {where}', error))
    return uses, load_errors


def test_every_config_loads_and_its_heads_and_losses_build():
    uses, load_errors = recipe_builds()
    assert load_errors == []
    failures = [f'{where} ({name}): {error}' for name, found in uses.items()
                for where, error in found if error is not None]
    assert failures == [], '\n'.join(failures)
    assert sum(len(found) for found in uses.values()) >= 10


@pytest.mark.parametrize('name', list(first_party_heads_and_losses()))
def test_head_or_loss_is_built_by_a_recipe(name):
    uses, _ = recipe_builds()
    cls = MODELS.module_dict[name]
    assert uses[name], (f'{name} ({cls.__module__}) is registered but no config in configs/ '
                        f'uses it: add a recipe (or a model sub-config of one) that builds it, '
                        f'so that every first-party head and loss is built by a test')
    built = [where for where, error in uses[name] if error is None]
    assert built, f'{name}: no recipe builds it: ' + '; '.join(
        f'{where}: {error}' for where, error in uses[name])


def test_head_and_loss_discovery_follows_the_registry():
    heads_and_losses = first_party_heads_and_losses()
    assert {'RetinaHead', 'ASPPHead', 'FocalLoss', 'CrossEntropyLoss'} <= set(heads_and_losses)
    assert 'ScaledL1Loss' not in heads_and_losses  # the example plugin is not first party
    assert not set(heads_and_losses) & set(registered_backbones())
    found = list(_sub_configs(
        dict(type='X', head=dict(type='RetinaHead', losses=[dict(type='FocalLoss')])),
        'model', {'RetinaHead', 'FocalLoss'}))
    assert found == [('model.head', dict(type='RetinaHead', losses=[dict(type='FocalLoss')])),
                     ('model.head.losses[0]', dict(type='FocalLoss'))]
