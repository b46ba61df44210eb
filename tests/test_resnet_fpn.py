"""ResNet backbone, FPN neck and load_weights: parity with torchvision, parameter counts
(reference/ANCHORS.md 1.1 and 2.1), freezing, dilation and the weight-loading report."""
import argparse
import logging
import math
import re

import pytest
import torch
import torchvision
from mmcv.cnn import ConvModule
from torch import nn
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d

from toolbox.engine.weights import load_weights
from toolbox.models.bases import BaseBackbone
from toolbox.models.layers import ChannelsFirstLayerNorm
from toolbox_plugins.backbones.resnet import ResNet
from toolbox_plugins.necks.fpn import FPN
from .helpers import n_params, randomise_bn




def torchvision_features(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """C2..C5 of a torchvision ResNet (outputs of layer1..layer4)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    feats = []
    for name in ('layer1', 'layer2', 'layer3', 'layer4'):
        x = getattr(model, name)(x)
        feats.append(x)
    return feats




def saved_torchvision_resnet(tmp_path, depth: int, **kwargs):
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f'resnet{depth}')(weights=None, **kwargs).eval()
    with torch.no_grad():
        randomise_bn(reference)
    path = tmp_path / f'resnet{depth}.pth'
    torch.save(reference.state_dict(), path)
    return reference, path


@pytest.mark.parametrize('depth', [18, 50])
def test_resnet_parity_with_torchvision(tmp_path, depth):
    reference, path = saved_torchvision_resnet(tmp_path, depth)
    ours = ResNet(depth=depth).eval()
    report = load_weights(ours, path)
    assert report == dict(missing=[], unexpected=['fc.weight', 'fc.bias'], mismatched=[])

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torchvision_features(reference, x)
        got = ours(x)
    expansion = 1 if depth == 18 else 4
    assert ours.out_channels == tuple(64 * 2 ** i * expansion for i in range(4))
    assert ours.strides == (4, 8, 16, 32)
    assert len(got) == 4
    for level, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape == (1, ours.out_channels[level], 64 // ours.strides[level],
                                      64 // ours.strides[level])
        assert (a - b).abs().max().item() == 0.0, f'C{level + 2} differs'


def test_resnet_pretrained_argument_loads_torchvision_checkpoint(tmp_path):
    reference, path = saved_torchvision_resnet(tmp_path, 18)
    ours = ResNet(depth=18, out_indices=(3,), pretrained=str(path))
    assert not torch.equal(ours.conv1.weight, reference.conv1.weight)  # loaded at init_weights
    ours.init_weights()
    assert torch.equal(ours.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(ours.bn1.running_var, reference.bn1.running_var)
    same = ResNet(depth=18, out_indices=(3,), init_cfg=dict(type='Pretrained', checkpoint=path))
    same.init_weights()
    assert torch.equal(same.conv1.weight, reference.conv1.weight)
    with pytest.raises(ValueError, match='either pretrained or init_cfg'):
        ResNet(depth=18, pretrained=str(path), init_cfg=dict(type='Pretrained', checkpoint=path))


def test_resnet_frozen_bn_parity(tmp_path):
    """FrozenBN (DETR's choice) loads torchvision BN statistics and matches BN in eval mode."""
    reference, path = saved_torchvision_resnet(tmp_path, 18)
    ours = ResNet(depth=18, norm_cfg=dict(type='FrozenBN'), pretrained=str(path))
    ours.init_weights()
    assert isinstance(ours.layer2[0].downsample[1], FrozenBatchNorm2d)
    assert n_params(ours) == n_params(reference) - n_params(reference.fc) - sum(
        m.weight.numel() * 2 for m in reference.modules() if isinstance(m, nn.BatchNorm2d))
    ours.train()  # FrozenBN ignores the mode
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff = (ours(x)[3] - torchvision_features(reference, x)[3]).abs().max().item()
    assert diff < 1e-4


def test_resnet_parameter_counts():
    # ANCHORS.md 1.1: torchvision resnet50 25,557,032 / resnet101 44,549,160 with fc
    # (2048 * 1000 + 1000 = 2,049,000), so 23,508,032 / 42,500,160 without.
    assert n_params(ResNet(depth=50)) == 23_508_032
    assert n_params(ResNet(depth=101)) == 42_500_160
    reference = torchvision.models.resnet101(weights=None)
    assert n_params(reference) - n_params(reference.fc) == 42_500_160
    assert n_params(ResNet(depth=18)) == 11_689_512 - (512 * 1000 + 1000)
    # the stride position does not change the count
    assert n_params(ResNet(depth=50, style='caffe')) == 23_508_032


def test_resnet_caffe_style_puts_stride_on_first_conv():
    pytorch = ResNet(depth=50, style='pytorch')
    caffe = ResNet(depth=50, style='caffe')
    assert pytorch.layer2[0].conv1.stride == (1, 1) and pytorch.layer2[0].conv2.stride == (2, 2)
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)
    with torch.no_grad():
        shapes = [f.shape[-2:] for f in caffe.eval()(torch.randn(1, 3, 64, 64))]
    assert shapes == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_resnet_frozen_stages_and_norm_eval():
    model = ResNet(depth=18, frozen_stages=1)
    model.train()
    frozen = [model.conv1, model.bn1, model.layer1]
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    for module in (model.layer2, model.layer3, model.layer4):
        assert all(p.requires_grad for p in module.parameters())
        assert all(m.training for m in module.modules())
    # frozen BN statistics do not move in a training forward pass
    before = model.bn1.running_mean.clone(), model.layer2[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.bn1.running_mean, before[0])
    assert not torch.equal(model.layer2[0].bn1.running_mean, before[1])
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_trainable == n_params(model) - sum(n_params(m) for m in frozen)

    norm_eval = ResNet(depth=18, norm_eval=True).train()
    bns = [m for m in norm_eval.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 20 and all(not m.training for m in bns)
    assert norm_eval.layer3[0].conv1.training and norm_eval.training
    assert all(p.requires_grad for p in norm_eval.parameters())

    no_grad_bn = ResNet(depth=18, norm_cfg=dict(type='BN', requires_grad=False))
    assert all(not m.weight.requires_grad for m in no_grad_bn.modules()
               if isinstance(m, nn.BatchNorm2d))
    assert no_grad_bn.conv1.weight.requires_grad


def test_resnet_dilated_output_stride_8_parity(tmp_path):
    reference, path = saved_torchvision_resnet(
        tmp_path, 50, replace_stride_with_dilation=[False, True, True])
    ours = ResNet(depth=50, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)).eval()
    assert ours.strides == (4, 8, 8, 8)
    assert load_weights(ours, path)['unexpected'] == ['fc.weight', 'fc.bias']
    # torchvision: the first block of a dilated stage keeps the previous stage's dilation
    assert [b.conv2.dilation[0] for b in ours.layer3] == [1] + [2] * 5
    assert [b.conv2.dilation[0] for b in ours.layer4] == [2, 4, 4]
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, expected = ours(x), torchvision_features(reference, x)
    assert [tuple(f.shape[-2:]) for f in got] == [(16, 16), (8, 8), (8, 8), (8, 8)]
    for a, b in zip(got, expected):
        assert (a - b).abs().max().item() == 0.0


def test_resnet_multi_grid_and_argument_checks():
    model = ResNet(depth=50, strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2), multi_grid=(1, 2, 4),
                   out_indices=(1, 3))
    assert [b.conv2.dilation[0] for b in model.layer4] == [2, 4, 8]
    assert [b.conv2.padding[0] for b in model.layer4] == [2, 4, 8]
    assert model.strides == (8, 16) and model.out_channels == (512, 2048)
    with torch.no_grad():
        outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in outs] == [(1, 512, 8, 8), (1, 2048, 4, 4)]
    with pytest.raises(ValueError, match='depth'):
        ResNet(depth=42)
    with pytest.raises(ValueError, match='multi_grid'):
        ResNet(depth=50, multi_grid=(1, 2))
    with pytest.raises(ValueError, match='out_indices'):
        ResNet(depth=18, out_indices=(3, 1))
    with pytest.raises(ValueError, match="norm type 'BatchNorm' is not supported"):
        ResNet(depth=18, norm_cfg=dict(type='BatchNorm'))
    with pytest.raises(ValueError, match='frozen_stages'):
        ResNet(depth=18, frozen_stages=5)


def test_resnet_zero_init_residual_and_in_channels():
    model = ResNet(depth=50, zero_init_residual=True, in_channels=1)
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    assert all(b.bn3.weight.abs().sum() == 0 for layer in (model.layer1, model.layer4)
               for b in layer)
    assert model.layer1[0].bn2.weight.abs().sum() == 64
    # with zeroed residual branches, a block is relu(downsample(x)) or relu(x)
    block = model.layer2[1].eval()
    x = torch.randn(1, 512, 4, 4)
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))


def test_resnet_is_a_base_backbone_and_keeps_torchvision_keys_with_any_norm():
    gn = ResNet(depth=18, out_indices=(1, 3), norm_cfg=dict(type='GN', num_groups=8))
    assert isinstance(gn, BaseBackbone)
    assert isinstance(gn.layer1[0].bn1, nn.GroupNorm) and gn.layer1[0].bn1.num_groups == 8
    assert 'layer2.0.downsample.1.weight' in gn.state_dict()
    ln = ResNet(depth=18, out_indices=(3,), norm_cfg=dict(type='LN'))
    assert isinstance(ln.bn1, ChannelsFirstLayerNorm) and ln.bn1.normalized_shape == (64,)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert [tuple(f.shape) for f in gn(x)] == [(2, 128, 4, 4), (2, 512, 1, 1)]
        assert ln(x)[0].shape == (2, 512, 1, 1) and torch.isfinite(ln(x)[0]).all()
    # GN and LN have no running statistics: norm_eval has nothing to freeze
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gn.modules())


def retina_fpn(**kwargs):
    return FPN(in_channels=[256, 512, 1024, 2048], out_channels=256, start_level=1,
               add_extra_convs='on_input', num_outs=5, **kwargs)


def test_fpn_parameter_counts_and_shapes():
    retina = retina_fpn(in_strides=(4, 8, 16, 32), relu_before_extra_convs=True)
    faster = FPN(in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5,
                 in_strides=(4, 8, 16, 32))
    assert n_params(retina) == 7_997_440  # ANCHORS.md 2.1
    assert n_params(faster) == 3_344_384
    assert retina.out_channels == faster.out_channels == (256,) * 5
    assert retina.strides == (8, 16, 32, 64, 128)
    assert faster.strides == (4, 8, 16, 32, 64)
    # P6 of RetinaNet reads C5 (2048 channels), P7 reads P6
    assert retina.fpn_convs[3].conv.in_channels == 2048
    assert retina.fpn_convs[4].conv.in_channels == 256 and retina.fpn_convs[4].conv.stride == (2, 2)

    feats = [torch.randn(1, c, 64 // s, 64 // s) for c, s in zip([256, 512, 1024, 2048],
                                                                  (4, 8, 16, 32))]
    with torch.no_grad():
        p_retina, p_faster = retina(feats), faster(feats)
    assert [tuple(p.shape[-2:]) for p in p_retina] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    assert [tuple(p.shape[-2:]) for p in p_faster] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    assert all(p.shape[1] == 256 for p in p_retina + p_faster)
    # without extra convs the extra level is a stride-2 subsampling of the last output
    assert torch.equal(p_faster[4], p_faster[3][:, :, ::2, ::2])


def test_fpn_extra_conv_sources():
    torch.manual_seed(0)
    feats = [torch.randn(1, c, 32 // 2 ** i, 32 // 2 ** i) for i, c in enumerate([8, 16, 32])]
    for source in ('on_input', 'on_lateral', 'on_output'):
        fpn = FPN([8, 16, 32], 4, num_outs=5, add_extra_convs=source,
                  relu_before_extra_convs=True)
        with torch.no_grad():
            outs = fpn(feats)
            last_lateral = fpn.lateral_convs[2](feats[2])
            src = {'on_input': feats[2], 'on_lateral': last_lateral, 'on_output': outs[2]}[source]
            p4 = fpn.fpn_convs[3](src)
            assert torch.allclose(outs[3], p4)
            assert torch.allclose(outs[4], fpn.fpn_convs[4](torch.relu(p4)))
        assert fpn.fpn_convs[3].conv.in_channels == (32 if source == 'on_input' else 4)
    assert FPN([8, 16, 32], 4, num_outs=4, add_extra_convs=True).fpn_convs[3].conv.in_channels == 32
    # end_level restricts the used inputs; norm_cfg drops the conv bias and names the norm 'gn'
    fpn = FPN([8, 16, 32], 4, num_outs=2, end_level=1, norm_cfg=dict(type='GN', num_groups=2))
    assert len(fpn.lateral_convs) == 2 and fpn.lateral_convs[0].conv.bias is None
    assert 'lateral_convs.0.gn.weight' in fpn.state_dict()
    assert [tuple(o.shape) for o in fpn(feats)] == [(1, 4, 32, 32), (1, 4, 16, 16)]
    with pytest.raises(ValueError, match='num_outs'):
        FPN([8, 16, 32], 4, num_outs=2)
    with pytest.raises(ValueError, match='add_extra_convs'):
        FPN([8, 16, 32], 4, num_outs=4, add_extra_convs='on_top')


def test_fpn_convs_are_conv_modules_with_xavier_init_and_any_norm():
    torch.manual_seed(0)
    fpn = retina_fpn()
    convs = list(fpn.lateral_convs) + list(fpn.fpn_convs)
    assert len(convs) == 8 and all(isinstance(m, ConvModule) and not m.with_activation
                                   for m in convs)
    for m in convs:
        # Xavier-uniform replaced ConvModule's own Kaiming-normal init (whose tails exceed
        # the uniform bound sqrt(6 / (fan_in + fan_out)))
        k = m.conv.kernel_size[0] * m.conv.kernel_size[1]
        bound = math.sqrt(6 / (k * (m.conv.in_channels + m.conv.out_channels)))
        assert m.conv.weight.abs().max().item() <= bound
        assert m.conv.weight.abs().max().item() > 0.99 * bound
        assert torch.equal(m.conv.bias, torch.zeros(256))
    frozen = FPN([8, 16], 4, num_outs=2, norm_cfg=dict(type='FrozenBN'))
    assert isinstance(frozen.fpn_convs[1].bn, FrozenBatchNorm2d)
    assert frozen.fpn_convs[1].conv.bias is None
    assert n_params(frozen) == 8 * 4 + 16 * 4 + 2 * 4 * 4 * 9  # conv weights only
    feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
    with torch.no_grad():
        assert [tuple(o.shape) for o in frozen(feats)] == [(1, 4, 8, 8), (1, 4, 4, 4)]


def test_fpn_parity_with_torchvision():
    torch.manual_seed(0)
    in_channels = [256, 512, 1024, 2048]
    reference = FeaturePyramidNetwork(in_channels, 256).eval()
    ours = FPN(in_channels, 256, num_outs=4).eval()
    key_map = {'inner_blocks': 'lateral_convs', 'layer_blocks': 'fpn_convs'}
    converted = {re.sub(r'^(\w+)\.(\d+)\.0\.', lambda m: f'{key_map[m[1]]}.{m[2]}.conv.', k): v
                 for k, v in reference.state_dict().items()}
    assert load_weights(ours, converted, strict=True) == dict(missing=[], unexpected=[],
                                                              mismatched=[])
    # odd sizes check that the top-down path resizes to the finer map (not a fixed x2)
    sizes = (17, 9, 5, 3)
    feats = [torch.randn(1, c, s, s) for c, s in zip(in_channels, sizes)]
    with torch.no_grad():
        got = ours(feats)
        expected = list(reference({str(i): f for i, f in enumerate(feats)}).values())
    assert len(got) == 4
    for a, b, s in zip(got, expected, sizes):
        assert a.shape == b.shape == (1, 256, s, s)
        assert (a - b).abs().max().item() < 1e-5


def test_load_weights_reports_mismatch_and_extra_keys(tmp_path, caplog):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    original_bias = model[0].bias.detach().clone()
    state['0.weight'] = torch.zeros(5, 3, 3, 3)  # wrong shape
    state['0.bias'] = torch.full((4,), 7.0)
    state['head.weight'] = torch.ones(2)  # extra key
    del state['1.running_var']  # missing key
    path = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': state, 'meta': {'epoch': 3}}, path)

    logger = logging.getLogger('test_load_weights')
    with caplog.at_level(logging.INFO, logger='test_load_weights'):
        report = load_weights(model, path, logger=logger)
    assert report == dict(missing=['1.running_var'], unexpected=['head.weight'],
                          mismatched=['0.weight'])
    assert torch.equal(model[0].bias, torch.full((4,), 7.0))  # the rest was loaded
    assert not torch.equal(model[0].bias, original_bias)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert str(path) in record.message
    assert 'missing 1, unexpected 1, mismatched 1' in record.message
    assert '0.weight (5, 3, 3, 3) vs (4, 3, 3, 3)' in record.message

    with pytest.raises(RuntimeError, match='1 mismatched: 0.weight'):
        load_weights(model, path, strict=True, logger=logger)


def test_load_weights_prefix_map_and_wrappers(tmp_path, caplog):
    model = nn.Sequential(nn.Linear(2, 3))
    source = nn.Sequential(nn.Linear(2, 3))
    wrapped = {'model': {f'module.backbone.{k}': v for k, v in source.state_dict().items()}}
    path = tmp_path / 'wrapped.pth'
    torch.save(wrapped, path)
    logger = logging.getLogger('test_load_weights')
    with caplog.at_level(logging.INFO, logger='test_load_weights'):
        report = load_weights(model, path, prefix_map={'module.': '', 'backbone.': ''},
                              logger=logger)
    assert report == dict(missing=[], unexpected=[], mismatched=[])
    assert caplog.records[-1].levelno == logging.INFO
    assert torch.equal(model[0].weight, source[0].weight)
    # without renaming nothing matches, and all of it is reported
    report = load_weights(model, path, logger=logger)
    assert report['missing'] == ['0.weight', '0.bias'] and len(report['unexpected']) == 2
    assert caplog.records[-1].levelno == logging.WARNING

    pickled = tmp_path / 'pickled.pth'
    torch.save({'state_dict': {'0.weight': torch.zeros(3, 2)}, 'args': argparse.Namespace(lr=0.1)},
               pickled)
    with pytest.raises(RuntimeError, match='weights_only=True'):
        load_weights(model, pickled)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_weights(model, tmp_path / 'missing.pth')


def test_torchvision_scheme_resolves_from_hub_cache(tmp_path, monkeypatch):
    """'torchvision://resnet18' reads the torch hub cache (no download when the file is there)."""
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path / 'hub'))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = tmp_path / 'hub' / 'checkpoints' / url.rsplit('/', 1)[1]
    cached.parent.mkdir(parents=True)
    reference, path = saved_torchvision_resnet(tmp_path, 18)
    cached.write_bytes(path.read_bytes())
    ours = ResNet(depth=18, pretrained='torchvision://resnet18')
    ours.init_weights()
    assert torch.equal(ours.layer3[0].downsample[0].weight,
                       reference.layer3[0].downsample[0].weight)
    with pytest.raises(ValueError, match='no IMAGENET1K_V1 weights'):
        load_weights(ours, 'torchvision://not_a_model')
