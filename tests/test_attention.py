"""Attention stage plugins (SE, SK, CBAM, GC block) and the spatial transformer: parity with
timm / mmcv under copied weights, hand-counted parameters, identity initialisations, and the
stage-plugin contract (registry name, ``in_channels`` first, shape kept down to 1x1 at batch 1
in training mode)."""
import pytest
import torch
from timm.layers.cbam import CbamModule
from timm.layers.selective_kernel import SelectiveKernel as TimmSelectiveKernel
from timm.layers.squeeze_excite import SEModule
from torch import nn

from toolbox.models.bases import kaiming_init_conv_norm
from toolbox.registry import MODELS
# Importing registers the components even before setup.py declares these modules as entry
# points (a module is imported once, so nothing registers twice).
from toolbox_plugins.layers.attention import (CBAM, BatchNorm2dFallbackToRunningStats,
                                              GlobalContextBlock, SelectiveKernel,
                                              SqueezeExcitation)
from toolbox_plugins.layers.stn import SpatialTransformer

from .helpers import n_params, randomise_bn

PLUGIN_NAMES = ('SE', 'SK', 'CBAM', 'ContextBlock', 'SpatialTransformer')


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def randomise_conv_biases(model: nn.Module, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.5)


# --- SE -------------------------------------------------------------------------------------

@pytest.mark.parametrize('channels', [64, 256])
def test_se_matches_timm(channels):
    ours = SqueezeExcitation(channels).eval()
    randomise_conv_biases(ours)
    ref = SEModule(channels).eval()
    ref.load_state_dict(ours.state_dict())  # same names: fc1.{weight,bias}, fc2.{weight,bias}
    x = randn(2, channels, 5, 7)
    assert (ours(x) - ref(x)).abs().max().item() < 1e-6


@pytest.mark.parametrize('channels, expected', [(64, 8), (256, 16), (2048, 128)])
def test_se_reduced_channels_match_timm(channels, expected):
    assert SqueezeExcitation(channels).fc1.out_channels == expected
    assert SEModule(channels).fc1.out_channels == expected
    assert SqueezeExcitation(channels, reduced_channels=5).fc1.out_channels == 5


# --- SK -------------------------------------------------------------------------------------

@pytest.mark.parametrize('channels, groups', [(32, 1), (64, 4)])
def test_sk_matches_timm(channels, groups):
    """timm with kernel_size=[3, 5], keep_3x3=True (the 5x5 becomes 3x3 dilation 2) and
    split_input=False is our default two-branch unit; timm's d = make_divisible(C / 16, 8) = 8
    is passed as ``reduced_channels``."""
    ref = TimmSelectiveKernel(channels, channels, kernel_size=[3, 5], groups=groups,
                              keep_3x3=True, split_input=False)
    d = ref.attn.fc_reduce.out_channels
    assert d == 8
    ours = SelectiveKernel(channels, groups=groups, reduced_channels=d)
    randomise_bn(ref, seed=1)
    ours.load_state_dict(ref.state_dict())  # identical parameter names, strict
    x = randn(2, channels, 6, 9)
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-5
    ours.train(), ref.train()  # batch statistics too
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-5


def test_sk_reduced_channels_rule_and_errors():
    """d = max(int(C / 16), 32): 64 -> 32, 1024 -> 64; groups must divide C."""
    assert SelectiveKernel(64).reduced_channels == 32
    assert SelectiveKernel(1024).reduced_channels == 64
    sk = SelectiveKernel(64, dilations=(1, 2, 3))
    assert [p.conv.dilation for p in sk.paths] == [(1, 1), (2, 2), (3, 3)]
    assert sk.attn.fc_select.out_channels == 3 * 64
    with pytest.raises(ValueError, match='groups=3 must divide in_channels=64'):
        SelectiveKernel(64, groups=3)
    with pytest.raises(ValueError, match='at least two'):
        SelectiveKernel(64, dilations=(1,))


# --- CBAM -----------------------------------------------------------------------------------

@pytest.mark.parametrize('channels', [32, 64])
def test_cbam_matches_timm(channels):
    ref = CbamModule(channels)  # mlp_bias=False, rd_divisor=1, 7x7 conv + BN
    randomise_bn(ref, seed=2)
    ours = CBAM(channels)
    assert ours.reduced_channels == ref.channel.fc1.out_channels == channels // 16
    key_map = {'channel.fc1.': 'fc1.', 'channel.fc2.': 'fc2.',
               'spatial.conv.conv.': 'spatial_conv.', 'spatial.conv.bn.': 'spatial_bn.'}
    state = {}
    for key, value in ref.state_dict().items():
        prefix = next(p for p in key_map if key.startswith(p))
        state[key_map[prefix] + key[len(prefix):]] = value
    ours.load_state_dict(state)
    ours.eval(), ref.eval()
    x = randn(2, channels, 7, 5)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-5


# --- GC block -------------------------------------------------------------------------------

def test_context_block_identity_at_init_then_not():
    block = MODELS.build(dict(type='ContextBlock', in_channels=64))
    assert isinstance(block, GlobalContextBlock) and block.planes == 4
    x = randn(2, 64, 5, 6)
    assert (block(x) - x).abs().max().item() < 1e-6
    with torch.no_grad():
        block.channel_add_conv[-1].weight.normal_()
    assert (block(x) - x).abs().max().item() > 1e-2


def test_context_block_parameter_count():
    """C=256, ratio 1/16 (planes 16): conv_mask 256 + 1; channel_add conv 256 * 16 + 16,
    LayerNorm([16, 1, 1]) 16 * 2, conv 16 * 256 + 256: 257 + 4112 + 32 + 4352 = 8753."""
    expected = (256 + 1) + (256 * 16 + 16) + 16 * 2 + (16 * 256 + 256)
    assert expected == 8753
    assert n_params(GlobalContextBlock(256, ratio=1 / 16)) == expected
    with pytest.raises(ValueError, match='no bottleneck channel'):
        GlobalContextBlock(8)


# --- spatial transformer --------------------------------------------------------------------

def test_stn_identity_at_init():
    stn = SpatialTransformer(3)
    x = randn(2, 3, 17, 23)
    assert torch.equal(stn.predict_theta(x), torch.tensor([[1., 0, 0], [0, 1, 0]]).expand(2, 2, 3))
    assert (stn(x) - x).abs().max().item() < 1e-5


def test_stn_translation_by_two_pixels():
    """theta = [[1, 0, 2 * 2 / W], [0, 1, 0]]: output column j reads input column j + 2, so
    the interior columns 0..W-3 equal the input's 2..W-1 and the last two columns read 0s."""
    stn = SpatialTransformer(3)
    height, width = 11, 16
    x = randn(1, 3, height, width)
    theta = torch.tensor([[[1.0, 0.0, 2 * 2 / width], [0.0, 1.0, 0.0]]])
    out = stn.warp(x, theta)
    assert (out[..., :width - 2] - x[..., 2:]).abs().max().item() < 1e-5
    assert out[..., width - 1].abs().max().item() < 1e-5


def test_stn_gradient_reaches_localisation_net():
    stn = SpatialTransformer(3)
    with torch.no_grad():
        stn.fc_theta.weight.normal_(std=0.1)
    x = randn(2, 3, 12, 10)
    stn(x).square().mean().backward()
    first_conv = stn.localization[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_reset_parameters_restores_identity_after_backbone_init():
    """A backbone that Kaiming-initialises every conv after building its plugins calls
    ``reset_parameters()`` to restore the GC block's zero last conv (and the STN's identity)."""
    x = randn(1, 64, 4, 5)
    for module in (GlobalContextBlock(64), SpatialTransformer(64)):
        kaiming_init_conv_norm(module.modules())
        with torch.no_grad():
            if isinstance(module, SpatialTransformer):
                module.fc_theta.weight.normal_()
        assert (module(x) - x).abs().max().item() > 1e-3
        module.reset_parameters()
        assert (module(x) - x).abs().max().item() < 1e-5


# --- shared contract ------------------------------------------------------------------------

def test_fallback_batchnorm_single_value():
    """Batch 1 at 1x1 in training: eval-mode normalisation, running statistics untouched;
    otherwise exactly nn.BatchNorm2d."""
    bn = randomise_bn(BatchNorm2dFallbackToRunningStats(4), seed=4).train()
    ref = randomise_bn(nn.BatchNorm2d(4), seed=4)
    single = randn(1, 4, 1, 1)
    mean_before = bn.running_mean.clone()
    assert torch.allclose(bn(single), ref.eval()(single), atol=1e-6)
    assert torch.equal(bn.running_mean, mean_before)
    batch = randn(2, 4, 3, 3)
    assert torch.allclose(bn(batch), ref.train()(batch), atol=1e-6)
    assert torch.allclose(bn.running_mean, ref.running_mean)


@pytest.mark.parametrize('name', PLUGIN_NAMES)
@pytest.mark.parametrize('shape', [(2, 64, 7, 9), (1, 64, 1, 1)])
def test_plugin_contract(name, shape):
    module = MODELS.build(dict(type=name, in_channels=64)).train()
    x = randn(*shape).requires_grad_()
    out = module(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
