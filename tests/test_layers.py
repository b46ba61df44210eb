"""Norm builder (toolbox.models.layers): every type in 2D and 3D, what each normalises, the
registered types mmcv's ConvModule finds, freezing and errors."""
import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.registry import DefaultScope
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from toolbox.models.layers import (ChannelsFirstLayerNorm, FrozenBatchNormNd, build_norm_layer,
                                   resolve_norm_cfg)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def randomise_affine(layer: nn.Module, seed: int = 1) -> None:
    """Non-trivial affine (and running statistics, when the layer has them)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in ('weight', 'bias', 'running_mean'):
            tensor = getattr(layer, name, None)
            if tensor is not None:
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
        if getattr(layer, 'running_var', None) is not None:
            layer.running_var.copy_(torch.rand(layer.running_var.shape, generator=gen) + 0.5)


@pytest.mark.parametrize('cfg, spatial_dims, cls, name', [
    (dict(type='BN'), 2, nn.BatchNorm2d, 'bn'),
    (dict(type='BN'), 3, nn.BatchNorm3d, 'bn'),
    (dict(type='SyncBN'), 2, nn.SyncBatchNorm, 'bn'),
    (dict(type='SyncBN'), 3, nn.SyncBatchNorm, 'bn'),
    (dict(type='FrozenBN'), 2, FrozenBatchNorm2d, 'bn'),
    (dict(type='FrozenBN'), 3, FrozenBatchNormNd, 'bn'),
    (dict(type='GN', num_groups=2), 2, nn.GroupNorm, 'gn'),
    (dict(type='GN', num_groups=2), 3, nn.GroupNorm, 'gn'),
    (dict(type='LN'), 2, ChannelsFirstLayerNorm, 'ln'),
    (dict(type='LN'), 3, ChannelsFirstLayerNorm, 'ln'),
    (dict(type='LN'), 0, nn.LayerNorm, 'ln'),
    (dict(type='IN'), 2, nn.InstanceNorm2d, 'in'),
    (dict(type='IN'), 3, nn.InstanceNorm3d, 'in'),
    (dict(type='BN3d'), 3, nn.BatchNorm3d, 'bn'),
    (dict(type='IN3d'), 3, nn.InstanceNorm3d, 'in'),
])
def test_every_type_builds_with_mmcv_name(cfg, spatial_dims, cls, name):
    got_name, layer = build_norm_layer(cfg, 4, spatial_dims=spatial_dims)
    assert got_name == name
    if cls is nn.SyncBatchNorm:
        assert isinstance(layer, cls)  # mmengine's subclass of it
    else:
        assert type(layer) is cls
    if spatial_dims == 0:  # token sequences: the plain LayerNorm over the last dim
        x = randn(2, 5, 4)
    else:
        x = randn(2, 4, *(3,) * spatial_dims)
    if cls is nn.SyncBatchNorm:
        layer.eval()  # a training-mode SyncBN needs a process group
    assert layer(x).shape == x.shape


def test_default_is_2d_and_input_cfg_is_not_modified():
    cfg = dict(type='BN', momentum=0.01, requires_grad=True)
    name, layer = build_norm_layer(cfg, 8)
    assert type(layer) is nn.BatchNorm2d and layer.momentum == 0.01
    assert cfg == dict(type='BN', momentum=0.01, requires_grad=True)
    assert resolve_norm_cfg(cfg, 3) == dict(type='BN3d', momentum=0.01, requires_grad=True)
    assert resolve_norm_cfg(dict(type='LN', eps=1e-6), 3) == dict(type='LN3d', eps=1e-6)
    assert resolve_norm_cfg(dict(type='LN'), 0) == dict(type='LN')
    assert resolve_norm_cfg(dict(type='FrozenBN'), 3) == dict(type='FrozenBN3d')
    assert resolve_norm_cfg(dict(type='GN', num_groups=4), 3) == dict(type='GN', num_groups=4)
    assert resolve_norm_cfg(dict(type='IN3d'), 3) == dict(type='IN3d')


@pytest.mark.parametrize('spatial_dims', [2, 3])
def test_batch_norm_normalises_over_batch_and_positions(spatial_dims):
    x = randn(3, 4, *(5,) * spatial_dims) * 3 + 2
    _, bn = build_norm_layer(dict(type='BN'), 4, spatial_dims)
    randomise_affine(bn)
    old_mean = bn.running_mean.clone()
    expected = F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=1e-5)
    assert torch.allclose(bn.train()(x), expected, atol=1e-6)
    dims = [0] + list(range(2, 2 + spatial_dims))
    assert torch.allclose(bn.running_mean, 0.9 * old_mean + 0.1 * x.mean(dims), atol=1e-6)


@pytest.mark.parametrize('spatial_dims', [2, 3])
def test_channels_first_layer_norm_equals_layer_norm_over_channels(spatial_dims):
    x = randn(2, 6, *(4,) * spatial_dims) * 2 + 1
    _, ln = build_norm_layer(dict(type='LN', eps=1e-6), 6, spatial_dims)
    randomise_affine(ln)
    assert ln.eps == 1e-6
    moved = x.movedim(1, -1)  # channels last
    expected = F.layer_norm(moved, (6,), ln.weight, ln.bias, 1e-6).movedim(-1, 1)
    assert torch.allclose(ln(x), expected, atol=1e-6)
    # hand case: channels (1, 3) at one position -> mean 2, variance 1 -> (-1, 1)
    _, plain = build_norm_layer(dict(type='LN', eps=0.0), 2, spatial_dims)
    one = torch.tensor([1.0, 3.0]).reshape(1, 2, *(1,) * spatial_dims)
    assert torch.equal(plain(one).flatten(), torch.tensor([-1.0, 1.0]))


def test_token_layer_norm_is_plain_layer_norm():
    tokens = randn(2, 7, 8)
    _, ln = build_norm_layer(dict(type='LN'), 8, spatial_dims=0)
    randomise_affine(ln)
    assert torch.equal(ln(tokens), F.layer_norm(tokens, (8,), ln.weight, ln.bias, 1e-5))


@pytest.mark.parametrize('spatial_dims', [2, 3])
def test_frozen_bn_equals_eval_batch_norm_with_the_same_buffers(spatial_dims):
    bn = (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(5)
    randomise_affine(bn)
    bn.eval()
    _, frozen = build_norm_layer(dict(type='FrozenBN'), 5, spatial_dims)
    assert list(frozen.parameters()) == []
    # BatchNorm's state-dict keys: a BN state dict loads strictly (num_batches_tracked dropped)
    frozen.load_state_dict(bn.state_dict(), strict=True)
    assert sorted(frozen.state_dict()) == ['bias', 'running_mean', 'running_var', 'weight']
    x = randn(2, 5, *(3,) * spatial_dims, seed=2)
    assert torch.allclose(frozen.train()(x), bn(x), atol=1e-6)  # training mode changes nothing
    # hand case: (5 - 1) / sqrt(4) * 2 + 0.5 = 4.5
    _, one = build_norm_layer(dict(type='FrozenBN', eps=0.0), 1, spatial_dims)
    one.running_mean.fill_(1.0), one.running_var.fill_(4.0)
    one.weight.fill_(2.0), one.bias.fill_(0.5)
    assert one(torch.full((1, 1) + (1,) * spatial_dims, 5.0)).item() == 4.5


@pytest.mark.parametrize('spatial_dims', [2, 3])
def test_instance_norm_equals_functional(spatial_dims):
    x = randn(2, 3, *(4,) * spatial_dims) * 2 - 1
    _, inorm = build_norm_layer(dict(type='IN', affine=True), 3, spatial_dims)
    randomise_affine(inorm)
    assert inorm.affine
    expected = F.instance_norm(x, weight=inorm.weight, bias=inorm.bias, eps=1e-5)
    assert torch.allclose(inorm(x), expected, atol=1e-6)
    # each (sample, channel) map is normalised on its own
    _, plain = build_norm_layer(dict(type='IN'), 3, spatial_dims)
    dims = tuple(range(2, 2 + spatial_dims))
    assert torch.allclose(plain(x).mean(dims), torch.zeros(2, 3), atol=1e-6)


def test_group_norm_3d_and_sync_bn_eval():
    x = randn(2, 6, 3, 4, 5)
    _, gn = build_norm_layer(dict(type='GN', num_groups=3), 6, spatial_dims=3)
    randomise_affine(gn)
    assert torch.allclose(gn(x), F.group_norm(x, 3, gn.weight, gn.bias, 1e-5), atol=1e-6)
    _, sync = build_norm_layer(dict(type='SyncBN', momentum=0.3), 6, spatial_dims=3)
    randomise_affine(sync)
    assert sync.momentum == 0.3
    expected = F.batch_norm(x, sync.running_mean, sync.running_var, sync.weight, sync.bias,
                            training=False, eps=1e-5)
    assert torch.allclose(sync.eval()(x), expected, atol=1e-6)


@pytest.mark.parametrize('cfg', [dict(type='BN', requires_grad=False),
                                 dict(type='GN', num_groups=2, requires_grad=False),
                                 dict(type='LN', requires_grad=False)])
def test_requires_grad_false_freezes_affine(cfg):
    _, layer = build_norm_layer(cfg, 4, spatial_dims=3)
    params = list(layer.parameters())
    assert len(params) == 2 and not any(p.requires_grad for p in params)
    _, trainable = build_norm_layer(dict(cfg, requires_grad=True), 4, spatial_dims=3)
    assert all(p.requires_grad for p in trainable.parameters())


def test_conv_module_finds_the_registered_types():
    torch.manual_seed(0)
    for scope in (None, 'toolbox'):  # mmcv looks in the default scope's registry, then root
        with DefaultScope.overwrite_default_scope(scope):
            block = ConvModule(3, 4, 3, padding=1, norm_cfg=dict(type='FrozenBN'))
        assert isinstance(block.bn, FrozenBatchNorm2d) and block.conv.bias is None
        randomise_affine(block.bn)
        x = randn(1, 3, 5, 5)
        expected = torch.relu(block.bn(F.conv2d(x, block.conv.weight, padding=1)))
        assert torch.equal(block(x), expected)

    norm_cfg = dict(type='BN')  # one config, resolved for a 3D block
    block3d = ConvModule(2, 4, 3, padding=1, conv_cfg=dict(type='Conv3d'),
                         norm_cfg=resolve_norm_cfg(norm_cfg, spatial_dims=3))
    assert isinstance(block3d.conv, nn.Conv3d) and isinstance(block3d.bn, nn.BatchNorm3d)
    assert block3d(randn(2, 2, 4, 4, 4)).shape == (2, 4, 4, 4, 4)
    for cfg, cls in ((dict(type='LN'), ChannelsFirstLayerNorm),
                     (dict(type='FrozenBN'), FrozenBatchNormNd)):
        block = ConvModule(2, 4, 1, conv_cfg=dict(type='Conv3d'), act_cfg=None,
                           norm_cfg=resolve_norm_cfg(cfg, 3))
        assert type(block.norm) is cls
        x = randn(1, 2, 3, 3, 3)
        assert torch.allclose(block(x), block.norm(block.conv(x)))
    assert 'ln.weight' in ConvModule(2, 4, 1, conv_cfg=dict(type='Conv3d'),
                                     norm_cfg=resolve_norm_cfg(dict(type='LN'), 3)).state_dict()


def test_clear_errors():
    with pytest.raises(ValueError, match=r"norm type 'BatchNorm2d' is not supported; use one "
                                         r"of \['BN', 'FrozenBN', 'GN', 'IN', 'LN', 'SyncBN'\]"):
        build_norm_layer(dict(type='BatchNorm2d'), 4)
    with pytest.raises(ValueError, match='is not supported'):
        build_norm_layer(dict(momentum=0.1), 4)  # no type
    with pytest.raises(ValueError, match="'GN' needs num_groups"):
        build_norm_layer(dict(type='GN'), 4, spatial_dims=3)
    with pytest.raises(ValueError, match="'BN' has no layer for spatial_dims=0"):
        build_norm_layer(dict(type='BN'), 4, spatial_dims=0)
    with pytest.raises(ValueError, match="'BN3d' is for spatial_dims=3, got spatial_dims=2"):
        build_norm_layer(dict(type='BN3d'), 4)
    with pytest.raises(ValueError, match='spatial_dims must be 2, 3 or 0'):
        build_norm_layer(dict(type='BN'), 4, spatial_dims=1)
    with pytest.raises(TypeError, match='must be a dict'):
        build_norm_layer('BN', 4)
    with pytest.raises(TypeError, match=r"built as FrozenBN3d\).*momentum"):
        build_norm_layer(dict(type='FrozenBN', momentum=0.1), 4, spatial_dims=3)
