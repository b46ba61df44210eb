"""VoVNet v1 / V2: parity with timm ``vovnet39a`` and ``ese_vovnet39b`` (random init, weights
copied through our checkpoint loader), parameter counts of reference/ANCHORS.md 1.2, eSE and OSA
details, the official key layout, freezing and argument errors."""
import re

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from toolbox.registry import MODELS
from toolbox_plugins.backbones.vovnet import (ARCH_SETTINGS, EffectiveSE, OSAModule, VoVNet,
                                              convert_official_keys)

from .helpers import n_params, randomise_bn

INPUT_SIZES = ((128, 128), (100, 148))  # the second is not a multiple of 32






def timm_model(name: str, **kwargs) -> nn.Module:
    import timm
    torch.manual_seed(0)
    return randomise_bn(timm.create_model(name, pretrained=False, **kwargs), conv_bias=True).eval()


# ------------------------------------------------------------------------------- timm parity

@pytest.fixture(scope='module')
def timm_vovnet39a():
    """The full classifier (``head.fc`` included), as a timm checkpoint file holds it."""
    return timm_model('vovnet39a')


@pytest.fixture(scope='module')
def timm_ese_vovnet39b():
    """The ``features_only`` model: keys ``stem_0.*`` / ``stages_0.*``, stages at index 1..4."""
    return timm_model('ese_vovnet39b', features_only=True, out_indices=(1, 2, 3, 4))


def assert_features_equal(ours: VoVNet, reference, size) -> None:
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[1]))
    with torch.no_grad():
        got, expected = ours(x), reference(x)
    h0, w0 = -(-size[0] // 4), -(-size[1] // 4)
    assert len(got) == len(expected) == 4
    for k, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape == (2, ours.out_channels[k], h0 // 2 ** k, w0 // 2 ** k)
        assert (a - b).abs().max().item() <= 1e-5, f'stage {k} differs at input {size}'


@pytest.mark.parametrize('size', INPUT_SIZES)
def test_v1_features_equal_timm_vovnet39a(timm_vovnet39a, tmp_path, size):
    path = tmp_path / 'vovnet39a.pth'
    torch.save(timm_vovnet39a.state_dict(), path)
    ours = VoVNet(arch='V-39', version=1, pretrained=str(path))
    report = ours.init_weights()
    assert report == dict(missing=[], unexpected=['head.fc.weight', 'head.fc.bias'],
                          mismatched=[])
    ours.eval()
    assert all(block.attn is None and not block.residual
               for stage in ours.stages for block in stage.blocks)
    features = timm_vovnet39a.forward_intermediates(torch.zeros(1, 3, 64, 64),
                                                    indices=(1, 2, 3, 4),
                                                    intermediates_only=True)
    assert ours.out_channels == tuple(f.shape[1] for f in features) == (256, 512, 768, 1024)
    assert ours.strides == (4, 8, 16, 32)

    def reference(x):
        return timm_vovnet39a.forward_intermediates(x, indices=(1, 2, 3, 4),
                                                    intermediates_only=True)
    assert_features_equal(ours, reference, size)


@pytest.mark.parametrize('size', INPUT_SIZES)
def test_v2_features_equal_timm_ese_vovnet39b(timm_ese_vovnet39b, tmp_path, size):
    path = tmp_path / 'features.pth'
    # wrapped as an mmengine checkpoint with a prefix: both are undone by the loader
    torch.save(dict(state_dict={f'backbone.{k}': v
                                for k, v in timm_ese_vovnet39b.state_dict().items()}), path)
    ours = VoVNet(arch='V-39', version=2, init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix_map={'backbone.': ''}))
    assert ours.init_weights() == dict(missing=[], unexpected=[], mismatched=[])
    ours.eval()
    assert ours.out_channels == tuple(timm_ese_vovnet39b.feature_info.channels())
    assert ours.strides == tuple(timm_ese_vovnet39b.feature_info.reduction())
    assert_features_equal(ours, timm_ese_vovnet39b, size)


def test_channels_last_input_and_out_indices(timm_ese_vovnet39b):
    ours = VoVNet(arch='V-39', out_indices=(1, 3)).eval()
    ours.load_pretrained(timm_ese_vovnet39b.state_dict())
    assert ours.out_channels == (512, 1024) and ours.strides == (8, 32)
    x = torch.randn(1, 3, 65, 97, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        c3, c5 = ours(x)
        c3_cl, c5_cl = ours(x.contiguous(memory_format=torch.channels_last))
        expected = timm_ese_vovnet39b(x)
    # 65 x 97: stem ceil -> 17 x 25, then floor halvings -> 8 x 12 (stride 8), 2 x 3 (stride 32)
    assert c3.shape == (1, 512, 8, 12) and c5.shape == (1, 1024, 2, 3)
    assert (c3 - expected[1]).abs().max().item() <= 1e-5
    assert (c5 - expected[3]).abs().max().item() <= 1e-5
    # channels-last convs take other kernels (other summation order): equal to fp32 rounding,
    # relative to the size of the features (they reach ~30 with the randomised norms)
    for cl, cf in ((c3_cl, c3), (c5_cl, c5)):
        assert (cl - cf).abs().max().item() <= 1e-5 * cf.abs().max().item()


# -------------------------------------------------------------------------- parameter counts

@pytest.mark.parametrize('kwargs, count, millions', [
    (dict(arch='V-39', version=1), 21_575_296, 21.58),   # VoVNet-39 backbone
    (dict(arch='V-57', version=1), 35_615_296, 35.62),   # VoVNet-57 backbone
    (dict(arch='V-39'), 23_543_936, 23.54),              # timm ese_vovnet39b backbone
    (dict(arch='V-19', ese_blocks='all'), 10_180_416, 10.18),  # vovnet-detectron2 V-19-eSE
    (dict(arch='V-39', ese_blocks='all'), 25_184_128, 25.18),  # vovnet-detectron2 V-39-eSE
    (dict(arch='V-57', ese_blocks='all'), 41_454_912, 41.45),  # vovnet-detectron2 V-57-eSE
])
def test_parameter_counts_match_anchors(kwargs, count, millions):
    model = VoVNet(**kwargs)
    assert n_params(model) == count
    assert round(count / 1e6, 2) == millions


def test_timm_backbone_counts_equal_ours():
    import timm
    for name, kwargs in [('vovnet39a', dict(arch='V-39', version=1)),
                         ('ese_vovnet39b', dict(arch='V-39')),
                         ('ese_vovnet19b_slim', dict(arch='V-19-slim'))]:
        reference = timm.create_model(name, pretrained=False)
        backbone = sum(p.numel() for n, p in reference.named_parameters()
                       if not n.startswith('head.'))
        assert n_params(VoVNet(**kwargs)) == backbone, name
    # ANCHORS.md: ese_vovnet39b with its 1000-class head is 24.57M
    assert n_params(timm.create_model('ese_vovnet39b')) == 24_568_936


# ------------------------------------------------------------------------------ eSE and OSA

def test_effective_se_hand_computed():
    """fc = identity, bias 0: the gate of channel c is hardsigmoid(mean of c)
    = clamp(mean / 6 + 1 / 2, 0, 1)."""
    ese = EffectiveSE(4)
    with torch.no_grad():
        ese.fc.weight.copy_(torch.eye(4).reshape(4, 4, 1, 1))
        ese.fc.bias.zero_()
    means = torch.tensor([-4.0, 0.0, 1.5, 3.5])
    x = means.reshape(1, 4, 1, 1).expand(2, 4, 3, 5).clone()
    x[:, :, 0, 0] += 1.0  # the mean moves by 1 / 15
    x[:, :, 0, 1] -= 1.0
    out = ese(x)
    gates = torch.tensor([0.0, 0.5, 0.75, 1.0])  # -4 -> 0 (clamped), 0 -> 1/2, 1.5 -> 3/4, 3.5 -> 1
    torch.testing.assert_close(out, x * gates.reshape(1, 4, 1, 1), rtol=0, atol=1e-7)
    # the bias shifts the gate: channel 1 (mean 0) with bias 1.5 -> 3/4
    with torch.no_grad():
        ese.fc.bias.copy_(torch.tensor([0.0, 1.5, 0.0, 0.0]))
    assert torch.allclose(ese(x)[:, 1], x[:, 1] * 0.75)


def test_osa_module_hand_computed():
    """Identity-like convs show the concatenation order [input, conv 1, conv 2] and the
    residual: with 1-channel input 1, every 3x3 conv = centre tap 1 (ReLU keeps positives), the
    1x1 aggregation sums with weights (1, 10, 100), so the output is 111 (+1 with residual)."""
    def build(residual):
        module = OSAModule(1, 1, 1, num_convs=2, residual=residual, ese=False,
                           norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU')).eval()
        with torch.no_grad():
            for conv in module.conv_mid:
                conv.conv.weight.zero_()
                conv.conv.weight[0, 0, 1, 1] = 1.0
            module.conv_concat.conv.weight.copy_(torch.tensor([1.0, 10.0, 100.0]).reshape(
                1, 3, 1, 1))
        return module
    x = torch.ones(1, 1, 4, 4)
    s = (1 + 1e-5) ** -0.5  # eval BN with running mean 0, var 1: y = x * s
    # conv 1 gives bn(1) = s, conv 2 bn(s) = s^2; the aggregation bn(1 + 10 s + 100 s^2)
    expected = (1 + 10 * s + 100 * s ** 2) * s
    torch.testing.assert_close(build(False)(x), torch.full((1, 1, 4, 4), expected))
    torch.testing.assert_close(build(True)(x), torch.full((1, 1, 4, 4), expected + 1))
    with pytest.raises(ValueError, match='identity mapping needs in_ch == out_ch'):
        OSAModule(8, 4, 16, 3, residual=True, ese=False, norm_cfg=dict(type='BN'),
                  act_cfg=dict(type='ReLU'))


@pytest.mark.parametrize('ese_blocks, expected', [
    ('last', [[True], [True], [False, True], [False, True]]),   # timm ese_vovnet39b
    ('all', [[True], [True], [True, True], [True, True]]),      # vovnet-detectron2
    ('none', [[False], [False], [False, False], [False, False]]),
])
def test_ese_placement_and_identity_mapping(ese_blocks, expected):
    model = VoVNet(arch='V-39', ese_blocks=ese_blocks)
    assert [[b.attn is not None for b in s.blocks] for s in model.stages] == expected
    assert [[b.residual for b in s.blocks] for s in model.stages] == \
        [[False], [False], [False, True], [False, True]]
    assert [s.pool is not None for s in model.stages] == [False, True, True, True]
    v1 = VoVNet(arch='V-39', version=1, identity_mapping=True)  # stigma0617 HEAD's v1
    assert [[b.residual for b in s.blocks] for s in v1.stages][3] == [False, True]
    assert n_params(v1) == 21_575_296  # the identity mapping has no parameters


def test_every_arch_builds_with_its_table_channels():
    for version, archs in ARCH_SETTINGS.items():
        for arch, spec in archs.items():
            model = MODELS.build(dict(type='VoVNet', arch=arch, version=version))
            assert model.out_channels == spec['out']
            assert [len(s.blocks) for s in model.stages] == list(spec['num_blocks'])
            assert all(len(b.conv_mid) == spec['num_convs']
                       for s in model.stages for b in s.blocks)
    assert ARCH_SETTINGS[2]['V-99']['num_blocks'] == (1, 3, 9, 3)
    assert ARCH_SETTINGS[1]['V-27-slim']['out'] == (128, 256, 384, 512)


# --------------------------------------------------------------------- official key layout

def official_keys(spec: dict, ese: bool) -> list[str]:
    """State-dict keys of the official code (stigma0617 ``vovnet.py`` v1 and vovnet-detectron2
    V2), in its module registration order, written from its naming scheme: ``{name}_{postfix}/
    conv`` and ``/norm`` inside OrderedDict Sequentials, stages ``stage2..5``, modules
    ``OSA{s}_{b}`` with ``layers`` (ModuleList), ``concat`` and (detectron2) ``ese.fc``."""
    bn = ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked']

    def conv_norm(name):
        return [f'{name}/conv.weight'] + [f'{name}/norm.{p}' for p in bn]
    keys = []
    for k in range(1, 4):
        keys += [f'stem.{key}' for key in conv_norm(f'stem_{k}')]
    for s, num_blocks in zip(range(2, 6), spec['num_blocks']):
        for b in range(1, num_blocks + 1):
            module = f'stage{s}.OSA{s}_{b}'
            for k in range(spec['num_convs']):
                keys += [f'{module}.layers.{k}.{key}'
                         for key in conv_norm(f'OSA{s}_{b}_{k}')]
            keys += [f'{module}.concat.{key}' for key in conv_norm(f'OSA{s}_{b}_concat')]
            if ese:
                keys += [f'{module}.ese.fc.weight', f'{module}.ese.fc.bias']
    return keys


def test_official_keys_convert_to_ours():
    assert list(convert_official_keys({
        'stem.stem_3/norm.running_var': 0,
        'stage4.OSA4_2.layers.4.OSA4_2_4/conv.weight': 1,
        'stage5.OSA5_1.concat.OSA5_1_concat/norm.bias': 2,
        'stage2.OSA2_1.ese.fc.weight': 3,
        'classifier.weight': 4,
        'stages.0.blocks.0.attn.fc.bias': 5,
    })) == ['stem.2.bn.running_var',
            'stages.2.blocks.1.conv_mid.4.conv.weight',
            'stages.3.blocks.0.conv_concat.bn.bias',
            'stages.0.blocks.0.attn.fc.weight',
            'classifier.weight',                    # unknown: passed on, reported unexpected
            'stages.0.blocks.0.attn.fc.bias']       # already ours: unchanged
    assert list(convert_official_keys({'stem.stem_1/norm.weight': 0}, norm_name='gn')) == \
        ['stem.0.gn.weight']
    # every key of a whole official checkpoint maps onto ours, in the same order
    for version, arch, ese_blocks in [(1, 'V-39', 'none'), (2, 'V-39', 'all'),
                                      (2, 'V-19-slim', 'all')]:
        model = VoVNet(arch=arch, version=version, ese_blocks=ese_blocks)
        keys = official_keys(ARCH_SETTINGS[version][arch], ese=ese_blocks == 'all')
        assert list(convert_official_keys(dict.fromkeys(keys))) == list(model.state_dict())


def test_official_detectron2_checkpoint_loads(tmp_path):
    """A detectron2 detector checkpoint ({'model': {'backbone.bottom_up.stage2...': ...}}) gives
    the same network as our weights it was made from."""
    source = randomise_bn(VoVNet(arch='V-19-slim', ese_blocks='all'), seed=3, conv_bias=True).eval()
    keys = official_keys(ARCH_SETTINGS[2]['V-19-slim'], ese=True)
    official = {f'backbone.bottom_up.{k}': v for k, v in zip(keys, source.state_dict().values())}
    official['backbone.fpn_lateral2.weight'] = torch.zeros(1)
    path = tmp_path / 'model_final.pth'
    torch.save(dict(model=official), path)
    ours = VoVNet(arch='V-19-slim', ese_blocks='all').eval()
    report = ours.load_pretrained(str(path), prefix_map={'backbone.bottom_up.': ''})
    assert report == dict(missing=[], unexpected=['backbone.fpn_lateral2.weight'],
                          mismatched=[])
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for a, b in zip(ours(x), source(x)):
            assert torch.equal(a, b)


def test_shape_mismatch_is_reported_not_loaded(timm_ese_vovnet39b):
    ours = VoVNet(arch='V-19', version=2)  # 3 convs per module: conv_concat widths differ
    before = ours.stages[0].blocks[0].conv_concat.conv.weight.clone()
    report = ours.load_pretrained(timm_ese_vovnet39b.state_dict())
    assert 'stages.0.blocks.0.conv_concat.conv.weight' in report['mismatched']
    assert any(re.fullmatch(r'stages\.\d\.blocks\.\d\.conv_mid\.[34]\..+', k)
               for k in report['unexpected'])
    assert torch.equal(ours.stages[0].blocks[0].conv_concat.conv.weight, before)


# ------------------------------------------------------------- frozen stages, norm_eval, errors

def test_frozen_stages_freeze_stem_and_first_stages():
    model = VoVNet(arch='V-19-slim', frozen_stages=2).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters()
                      if n.startswith(('stem.', 'stages.0.', 'stages.1.'))}
    assert all(not m.training for m in [model.stem, model.stages[0], model.stages[1]]
               for m in m.modules())
    assert model.stages[2].training and model.stages[3].blocks[0].conv_mid[0].bn.training
    bn = model.stages[1].blocks[0].conv_concat.bn
    stats = bn.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(bn.running_mean, stats)
    zero = VoVNet(arch='V-19-slim', frozen_stages=0)
    assert zero.frozen_modules() == [zero.stem]
    every = VoVNet(arch='V-19-slim', frozen_stages=4)
    assert not any(p.requires_grad for p in every.parameters())


def test_norm_eval_keeps_every_batch_norm_in_eval_mode():
    model = VoVNet(arch='V-19-slim', norm_eval=True).train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert len(norms) == 3 + 4 * 4  # stem 3, per stage 3 conv_mid + conv_concat
    assert not any(m.training for m in norms)
    assert model.stages[0].training  # the rest trains
    assert all(m.training for m in VoVNet(arch='V-19-slim').train().modules()
               if isinstance(m, _BatchNorm))


V2_ARCHS = r"\['V-19-slim', 'V-19', 'V-39', 'V-57', 'V-99'\]"


@pytest.mark.parametrize('kwargs, message', [
    (dict(arch='V-27-slim'),
     (rf"version 2 arch must be one of {V2_ARCHS}, got 'V-27-slim' \(V-27-slim exists in "
      r"version 1\)")),
    (dict(arch='V-99', version=1),
     (r"version 1 arch must be one of \['V-27-slim', 'V-39', 'V-57'\], got 'V-99' \(V-99 "
      r"exists in version 2\)")),
    (dict(arch='V-42'), rf"version 2 arch must be one of {V2_ARCHS}, got 'V-42'$"),
    (dict(version=3), 'version must be 1 or 2, got 3'),
    (dict(ese_blocks='first'),
     r"ese_blocks must be one of \('last', 'all', 'none'\) or None, got 'first'"),
    (dict(frozen_stages=5), r'frozen_stages must be in -1\.\.4, got 5'),
    (dict(out_indices=(0, 4)), r'out_indices must be ascending indices in 0\.\.3'),
    (dict(out_indices=(2, 1)), r'out_indices must be ascending'),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VoVNet(**kwargs)
