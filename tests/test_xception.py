"""Chollet's original Xception (``toolbox_plugins.backbones.xception.Xception``).

Parity reference: timm ``legacy_xception`` with random weights and randomised BatchNorm
statistics, loaded into ours through our own checkpoint loading (``pretrained=`` /
``load_pretrained`` with :data:`TIMM_LEGACY_PREFIX_MAP`), fp32. Parameter counts:
reference/ANCHORS.md 1.5.
"""
import pytest
import torch
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from toolbox.engine.weights import load_weights
from toolbox.registry import MODELS
from toolbox_plugins.backbones.xception import (TIMM_LEGACY_PREFIX_MAP, TIMM_PREFIX_MAP,
                                                AlignedXception, Xception, rename_prefixes)

from .helpers import n_params, randomise_bn

ALL_POINTS = (0, 1, 2, 3, 4)
SIZES = ((96, 96), (99, 141))  # (H, W); the second is not a multiple of 32






@pytest.fixture(scope='module')
def timm_legacy(tmp_path_factory):
    """timm ``legacy_xception``: the classifier and a ``features_only`` model with the same
    weights, and the paths of both state dicts saved as checkpoint files."""
    import timm
    torch.manual_seed(0)
    classifier = timm.create_model('legacy_xception', pretrained=False).eval()
    randomise_bn(classifier)
    features = timm.create_model('legacy_xception', pretrained=False, features_only=True,
                                 out_indices=ALL_POINTS).eval()
    features.load_state_dict({f'body.{k}': v for k, v in classifier.state_dict().items()
                              if not k.startswith('fc.')})
    folder = tmp_path_factory.mktemp('legacy_xception')
    paths = dict(classifier=folder / 'classifier.pth', features=folder / 'features.pth')
    torch.save(classifier.state_dict(), paths['classifier'])
    torch.save(features.state_dict(), paths['features'])
    return dict(classifier=classifier, features=features, paths=paths)


def _load(path, **kwargs) -> Xception:
    model = Xception(out_indices=ALL_POINTS, pretrained=str(path), **kwargs)
    report = model.init_weights()
    return model, report


@pytest.mark.parametrize('size', SIZES)
def test_features_equal_timm_through_a_features_only_checkpoint(timm_legacy, size):
    ours, report = _load(timm_legacy['paths']['features'], stem_padding='valid')
    assert report == dict(missing=[], unexpected=[], mismatched=[])
    reference = timm_legacy['features']
    assert ours.out_channels == tuple(reference.feature_info.channels()) == \
        (64, 128, 256, 728, 2048)
    assert ours.strides == tuple(reference.feature_info.reduction()) == (2, 4, 8, 16, 32)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = reference(x), ours.eval()(x)
    assert len(got) == len(expected) == 5
    for k, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape, f'point {k}: {tuple(a.shape)} vs {tuple(b.shape)}'
        assert (a - b).abs().max().item() < 1e-5, f'point {k} differs'
        assert b.abs().max().item() > 0.1  # a non-trivial map


def test_classifier_checkpoint_and_parameter_counts(timm_legacy):
    """ANCHORS.md 1.5: legacy Xception 22,855,952 with the 1000-class fc; the backbone alone
    is that minus the fc (2048 * 1000 + 1000)."""
    classifier = timm_legacy['classifier']
    assert n_params(classifier) == 22_855_952
    ours, report = _load(timm_legacy['paths']['classifier'], stem_padding='valid')
    assert n_params(ours) == 20_806_952 == 22_855_952 - (2048 * 1000 + 1000)
    assert report == dict(missing=[], unexpected=['fc.weight', 'fc.bias'], mismatched=[])
    x = torch.randn(1, 3, 75, 83, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        final = ours.eval()(x)[-1]
        assert (final - classifier.forward_features(x)).abs().max().item() < 1e-5


def test_train_mode_outputs_and_gradients_equal_timm(timm_legacy):
    """Batch statistics and backward through the in-place ReLUs / skip sums."""
    import timm
    reference = timm.create_model('legacy_xception', pretrained=False, features_only=True,
                                  out_indices=ALL_POINTS)
    reference.load_state_dict(timm_legacy['features'].state_dict())
    ours, _ = _load(timm_legacy['paths']['features'], stem_padding='valid')
    reference.train(), ours.train()
    x = torch.randn(2, 3, 67, 71, generator=torch.Generator().manual_seed(3))
    weights = [torch.randn(1, c, 1, 1, generator=torch.Generator().manual_seed(c))
               for c in ours.out_channels]
    for model in (reference, ours):
        sum((out * w).mean() for out, w in zip(model(x), weights)).backward()
    pairs = [(ours.stem[0].conv.weight, reference.body.conv1.weight),
             (ours.blocks[0].rep[0].depthwise_conv.conv.weight,
              reference.body.block1.rep[0].conv1.weight),
             (ours.blocks[5].rep[2].pointwise_conv.bn.weight, reference.body.block6.rep[8].weight),
             (ours.blocks[11].shortcut.conv.weight, reference.body.block12.skip.weight),
             (ours.exit_convs[1].pointwise_conv.conv.weight, reference.body.conv4.pointwise.weight)]
    for a, b in pairs:
        assert a.grad.abs().max() > 0
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(ours.blocks[3].rep[1].pointwise_conv.bn.running_var,
                          reference.body.block4.rep[5].running_var, atol=1e-6)


def test_same_stem_padding_gives_exact_strides_and_equals_a_padded_timm(timm_legacy):
    """stem_padding='same' (default) only pads the two stem convs: timm with padding 1 there
    computes the same, and every map is ceil(size / stride)."""
    import copy
    reference = copy.deepcopy(timm_legacy['features'])
    reference.body.conv1.padding = reference.body.conv2.padding = (1, 1)
    ours, report = _load(timm_legacy['paths']['features'])
    assert report['missing'] == [] and ours.out_indices == ALL_POINTS
    h, w = 99, 141
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got, expected = ours.eval()(x), reference(x)
    for k, (a, b, s) in enumerate(zip(got, expected, ours.strides)):
        assert a.shape[2:] == (-(-h // s), -(-w // s)), f'point {k}: {tuple(a.shape)}'
        assert (a - b).abs().max().item() < 1e-5


def test_detection_defaults_and_selected_points():
    model = Xception().eval()
    assert model.out_indices == (1, 2, 3, 4)
    assert model.out_channels == (128, 256, 728, 2048) and model.strides == (4, 8, 16, 32)
    everything = Xception(out_indices=ALL_POINTS).eval()
    everything.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = everything(x)
        early = Xception(out_indices=(0, 2)).eval()
        early.load_state_dict(model.state_dict())
        got = early(x)
    assert [tuple(o.shape) for o in full] == [(1, 64, 32, 48), (1, 128, 16, 24),
                                              (1, 256, 8, 12), (1, 728, 4, 6), (1, 2048, 2, 3)]
    assert torch.equal(got[0], full[0]) and torch.equal(got[1], full[2])
    assert (full[1] >= 0).all() and (full[3] >= 0).all()  # taps are after the ReLU


def test_structure_follows_the_paper():
    model = Xception()
    assert len(model.blocks) == 12  # 3 entry, 8 middle, 1 exit
    widths = [(b.rep[0].depthwise_conv.conv.in_channels,
               b.rep[-1].pointwise_conv.conv.out_channels, len(b.rep)) for b in model.blocks]
    assert widths == [(64, 128, 2), (128, 256, 2), (256, 728, 2)] + [(728, 728, 3)] * 8 + \
        [(728, 1024, 2)]
    assert model.blocks[11].rep[0].pointwise_conv.conv.out_channels == 728  # grows last
    for conv in model.modules():
        if isinstance(conv, DepthwiseSeparableConvModule):
            # no norm between depthwise and pointwise, no conv bias
            assert not conv.depthwise_conv.with_norm and conv.pointwise_conv.with_norm
            assert conv.depthwise_conv.conv.bias is None and conv.pointwise_conv.conv.bias is None
    assert [b.shortcut is None for b in model.blocks] == [False] * 3 + [True] * 8 + [False]
    assert all(isinstance(b.shortcut, ConvModule) and b.shortcut.conv.kernel_size == (1, 1)
               and b.shortcut.conv.stride == (2, 2) for b in model.blocks if b.shortcut)
    # ReLU before every separable conv of a block except the very first one
    assert [c.depthwise_conv.with_activation for c in model.blocks[0].rep] == [False, True]
    assert all(c.depthwise_conv.with_activation for b in model.blocks[1:] for c in b.rep)
    assert all(c.pointwise_conv.with_activation for c in model.exit_convs)


def test_convert_state_dict_gives_exactly_our_keys(timm_legacy):
    ours = Xception()
    for which in ('classifier', 'features'):
        converted = Xception.convert_state_dict(timm_legacy[which].state_dict())
        extra = {'fc.weight', 'fc.bias'} if which == 'classifier' else set()
        assert set(converted) == set(ours.state_dict()) | extra
    assert list(TIMM_LEGACY_PREFIX_MAP)[0] == 'body.'
    with pytest.raises(ValueError, match=r"Xception converts checkpoints from \('timm',\), "
                                         r"got source='mmdet'"):
        Xception.convert_state_dict({}, 'mmdet')
    renamed = AlignedXception.convert_state_dict(
        {'stem_1.bn.bias': torch.zeros(1), 'blocks_12.stack.conv1.conv_dw.weight': torch.ones(1),
         'head.fc.bias': torch.zeros(2)})
    assert set(renamed) == {'stem.1.bn.bias', 'blocks.12.stack.conv1.conv_dw.weight',
                            'head.fc.bias'}


@pytest.mark.parametrize('frozen_stages, trainable_from', [(0, 0), (2, 2), (3, 11)])
def test_frozen_stages(frozen_stages, trainable_from):
    model = Xception(frozen_stages=frozen_stages).train()
    frozen = [model.stem] + list(model.blocks[:trainable_from])
    assert model.frozen_modules() == frozen
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in list(model.blocks[trainable_from:]) +
               [model.exit_convs] for p in m.parameters())
    assert not any(m.training for f in frozen for m in f.modules())
    assert model.blocks[trainable_from].training
    everything = Xception(frozen_stages=4)
    assert not any(p.requires_grad for p in everything.parameters())
    assert n_params(everything) == 20_806_952


def test_norm_eval_keeps_batch_norms_frozen():
    model = Xception(norm_eval=True, out_indices=(1,)).train()
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert len(norms) == 2 + 3 * 2 + 8 * 3 + 2 + 4 + 2  # stem, blocks, skips, exit
    assert not any(m.training for m in norms) and model.blocks[0].training
    before = model.stem[0].bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.stem[0].bn.running_mean, before)


def test_other_norms_and_in_channels():
    model = Xception(in_channels=1, norm_cfg=dict(type='GN', num_groups=8), out_indices=(4,))
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    assert model(torch.randn(1, 1, 40, 40))[0].shape == (1, 2048, 2, 2)
    assert isinstance(model.exit_convs[0].pointwise_conv.gn, nn.GroupNorm)


@pytest.mark.parametrize('kwargs, message', [
    (dict(out_indices=(1, 5)), r'out_indices must be ascending indices in 0\.\.4, got \(1, 5\)'),
    (dict(out_indices=(3, 1)), 'out_indices must be ascending'),
    (dict(frozen_stages=5), r'frozen_stages must be in -1\.\.4, got 5'),
    (dict(stem_padding='SAME'), "stem_padding must be 'same' or 'valid', got 'SAME'"),
    (dict(norm_cfg=dict(type='BatchNorm')), "norm type 'BatchNorm' is not supported"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Xception(**kwargs)


def test_unknown_argument_names_the_class():
    with pytest.raises(TypeError, match='Xception'):
        MODELS.build(dict(type='Xception', depth=65))


def test_aligned_xception65_train_mode_outputs_and_gradients_equal_timm():
    """The aligned Xception-65 (DeepLab v3+; feature parity in tests/test_segmentation.py):
    batch statistics and backward through the pre-activation ReLUs (the first of each block out
    of place, the others in place, as timm's) and the skip sums, for every parameter."""
    import timm
    torch.manual_seed(0)
    reference = timm.create_model('xception65', features_only=True, output_stride=32).train()
    ours = AlignedXception(output_stride=32, out_indices=ALL_POINTS).train()
    load_weights(ours, reference.state_dict(), prefix_map=TIMM_PREFIX_MAP)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    weights = [torch.randn(1, c, 1, 1, generator=torch.Generator().manual_seed(c))
               for c in ours.out_channels]
    outputs = {}
    for name, model in (('timm', reference), ('ours', ours)):
        outputs[name] = model(x)
        sum((out * w).mean() for out, w in zip(outputs[name], weights)).backward()
    for a, b in zip(outputs['ours'], outputs['timm']):
        assert torch.allclose(a, b, atol=1e-5)
    timm_grads = rename_prefixes({k: p.grad for k, p in reference.named_parameters()},
                                 TIMM_PREFIX_MAP)
    ours_grads = {k: p.grad for k, p in ours.named_parameters()}
    assert timm_grads.keys() == ours_grads.keys()
    for name, grad in ours_grads.items():
        assert torch.allclose(grad, timm_grads[name], rtol=1e-3, atol=1e-6), name
