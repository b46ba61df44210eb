"""Deformable convolution v1/v2, the ResNet / VoVNet options that use it (with HDC dilations),
and deformable RoI pooling: exact equalities with plain convs / RoIAlign at zero offsets, hand-set
offsets, gradients, parameter counts and checkpoint loading."""
import pytest
import torch
import torch.nn.functional as F
import torchvision
from mmengine.config import Config
from mmengine.structures import InstanceData
from torch import nn
from torchvision.ops import roi_align

from toolbox.engine.weights import load_weights
from toolbox.models.bases import MultiLevelRoIAlign
from toolbox.models.layers import (DeformConv2dPack, ModulatedDeformConv2dPack, build_conv,
                                   init_deform_convs)
from toolbox.registry import MODELS
from toolbox.structures import DataSample
from toolbox_plugins.roi_heads.deform_roi_pool import MultiLevelDeformRoIPool, deform_roi_pool

from .helpers import n_params, randomise_bn


def _pair(conv_type, in_ch=4, out_ch=6, k=3, stride=1, padding=1, dilation=1, groups=1,
          bias=False, deform_groups=1, seed=0):
    """A deformable conv and an nn.Conv2d with the same random weight (and bias)."""
    torch.manual_seed(seed)
    dcn = conv_type(in_ch, out_ch, k, stride=stride, padding=padding, dilation=dilation,
                    groups=groups, bias=bias, deform_groups=deform_groups)
    conv = nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(dcn.weight)
        if bias:
            dcn.bias.normal_()
            conv.bias.copy_(dcn.bias)
    return dcn, conv


# ------------------------------------------------------------------------- deformable convs

@pytest.mark.parametrize('stride, dilation, groups, bias', [
    (1, 1, 1, True), (2, 1, 1, False), (1, 2, 2, True), (2, 2, 1, False)])
def test_zero_offsets_give_the_plain_conv(stride, dilation, groups, bias):
    """At init (conv_offset zero) DCNv1 == conv and DCNv2 == 0.5 * conv (mask sigmoid(0)),
    same output shape as the conv for stride 2 / dilation 2 on an odd 11x13 input."""
    x = torch.randn(2, 4, 11, 13)
    v1, conv = _pair(DeformConv2dPack, stride=stride, padding=dilation, dilation=dilation,
                     groups=groups, bias=bias)
    v2, conv_nobias = _pair(ModulatedDeformConv2dPack, stride=stride, padding=dilation,
                            dilation=dilation, groups=groups)
    with torch.no_grad():
        expected = conv(x)
        assert v1(x).shape == expected.shape == (2, 6, (11 - 1) // stride + 1,
                                                 (13 - 1) // stride + 1)
        assert (v1(x) - expected).abs().max() < 1e-5
        assert (v2(x) - 0.5 * conv_nobias(x)).abs().max() < 1e-5
    assert v1.conv_offset.out_channels == 18 and v2.conv_offset.out_channels == 27
    assert v1.conv_offset.stride == v1.stride and v1.conv_offset.dilation == v1.dilation


def test_offset_layout_is_dy_dx_per_kernel_position():
    """torchvision reads channel 2p as dy and 2p + 1 as dx of kernel position p: a constant
    dx = +1 samples one column to the right, i.e. the conv output shifted left by one pixel
    (dy = +1: one row down). With 2 deform groups only the second group's channels move."""
    x = torch.randn(1, 4, 9, 10)
    dcn, conv = _pair(DeformConv2dPack)
    with torch.no_grad():
        dcn.conv_offset.bias[1::2] = 1.0  # every dx
        assert (dcn(x)[..., :-1] - conv(x)[..., 1:]).abs().max() < 1e-5
        dcn.conv_offset.bias.zero_()
        dcn.conv_offset.bias[0::2] = 1.0  # every dy
        assert (dcn(x)[..., :-1, :] - conv(x)[..., 1:, :]).abs().max() < 1e-5
        # mmcv order for v2: offsets first, then mask logits; a large logit -> mask 1
        v2, conv = _pair(ModulatedDeformConv2dPack)
        v2.conv_offset.bias[18:] = 30.0
        v2.conv_offset.bias[1:18:2] = 1.0
        assert (v2(x)[..., :-1] - conv(x)[..., 1:]).abs().max() < 1e-5

        grouped, conv = _pair(DeformConv2dPack, deform_groups=2)
        grouped.conv_offset.bias[18 + 1::2] = 1.0  # dx of group 1 (input channels 2, 3)
        shifted = x.clone()
        shifted[:, 2:, :, :-1] = x[:, 2:, :, 1:]
        shifted[:, 2:, :, -1] = 0
        # column 0 differs: the deformable conv reads x's column 0 where the conv pads
        assert (grouped(x)[..., 1:] - conv(shifted)[..., 1:]).abs().max() < 1e-5


@pytest.mark.parametrize('conv_type', [DeformConv2dPack, ModulatedDeformConv2dPack])
def test_gradient_reaches_conv_offset(conv_type):
    dcn, _ = _pair(conv_type)
    dcn(torch.randn(2, 4, 7, 8)).pow(2).sum().backward()
    assert dcn.conv_offset.weight.grad.abs().sum() > 0
    assert dcn.conv_offset.bias.grad.abs().sum() > 0
    assert dcn.weight.grad.abs().sum() > 0


def test_build_conv_and_mmcv_key_names():
    assert type(build_conv(None, 4, 8, 3, padding=1)) is nn.Conv2d
    v1 = build_conv(dict(type='DCN', deform_groups=2), 4, 8, 3, stride=2, padding=2, dilation=2)
    v2 = build_conv(dict(type='DCNv2'), 4, 8, 3, padding=1, bias=True)
    assert type(v1) is DeformConv2dPack and v1.conv_offset.out_channels == 2 * 2 * 9
    assert (v1.stride, v1.dilation, v1.padding) == ((2, 2), (2, 2), (2, 2))
    assert type(v2) is ModulatedDeformConv2dPack and v2.conv_offset.out_channels == 27
    # mmcv's (Modulated)DeformConv2dPack keys, so mmdet DCN checkpoints load by name
    assert set(v1.state_dict()) == {'weight', 'conv_offset.weight', 'conv_offset.bias'}
    assert set(v2.state_dict()) == {'weight', 'bias', 'conv_offset.weight', 'conv_offset.bias'}
    with pytest.raises(ValueError, match=r"\['DCN', 'DCNv2'\].*'DCNv3'"):
        build_conv(dict(type='DCNv3'), 4, 8, 3)
    with pytest.raises(ValueError, match='fallback_on_stride'):
        build_conv(dict(type='DCN', fallback_on_stride=False), 4, 8, 3)
    with pytest.raises(ValueError, match='deform_groups'):
        build_conv(dict(type='DCN', deform_groups=3), 4, 8, 3)


def test_init_deform_convs_kaiming_weight_and_zero_offsets():
    """After a conv-wide Kaiming pass has touched conv_offset (an nn.Conv2d), it is zero
    again and the deformable weight has the fan-out Kaiming std sqrt(2 / (64 * 9))."""
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2dPack(64, 64, 3, padding=1, bias=True)
    nn.init.normal_(dcn.conv_offset.weight)
    init_deform_convs([dcn])
    assert dcn.conv_offset.weight.abs().max() == 0 and dcn.conv_offset.bias.abs().max() == 0
    assert dcn.bias.abs().max() == 0
    assert abs(dcn.weight.std().item() / (2 / (64 * 9)) ** 0.5 - 1) < 0.05


# ---------------------------------------------------------------------------------- ResNet

def test_resnet50_dcnv2_parameter_count_and_torchvision_weights():
    """Parameter count of ResNet-50 (no fc) with DCNv2 in stages 2-4, deform_groups=1.

    Base ResNet-50 backbone: 23,508,032 parameters (torchvision's resnet50, 25,557,032, minus
    its fc 2048 * 1000 + 1000). Each deformable 3x3 conv adds conv_offset = Conv2d(planes,
    27, 3) = planes * 27 * 9 + 27 (weight + bias; 27 = 3 * 3x3: dy, dx and mask per kernel
    position). Stages 2-4 have planes 128 / 256 / 512 and 4 / 6 / 3 blocks:
    243 * (4 * 128 + 6 * 256 + 3 * 512) + 27 * 13 = 870,912 + 351 = 871,263;
    total 23,508,032 + 871,263 = 24,379,295.
    """
    plain = MODELS.build(dict(type='ResNet', depth=50))
    reference = torchvision.models.resnet50(weights=None)
    assert n_params(plain) == n_params(reference) - (2048 * 1000 + 1000) == 23_508_032
    model = MODELS.build(dict(type='ResNet', depth=50, dcn=dict(type='DCNv2', deform_groups=1),
                              stage_with_dcn=(False, True, True, True)))
    assert 243 * (4 * 128 + 6 * 256 + 3 * 512) + 27 * 13 == 871_263
    assert n_params(model) == 23_508_032 + 871_263 == 24_379_295
    deformable = [name for name, m in model.named_modules()
                  if isinstance(m, ModulatedDeformConv2dPack)]
    assert len(deformable) == 13 and all(name.endswith('.conv2') for name in deformable)
    assert model.layer2[0].conv2.stride == (2, 2)  # 'pytorch' style: the stride on the 3x3
    assert all(m.conv_offset.weight.abs().max() == 0 for m in model.modules()
               if isinstance(m, ModulatedDeformConv2dPack))  # not Kaiming-initialised

    report = load_weights(model, reference.state_dict())
    assert sorted(report['missing']) == sorted(
        f'{name}.conv_offset.{p}' for name in deformable for p in ('weight', 'bias'))
    assert report['unexpected'] == ['fc.weight', 'fc.bias'] and report['mismatched'] == []


def test_resnet18_dcnv1_at_init_equals_plain_resnet18():
    """Same weights (the plain state dict loaded), eval mode: identical C2..C5; the deformable
    conv2 of BasicBlock got the conv's Kaiming init (std sqrt(2 / (128 * 9)) in layer2)."""
    torch.manual_seed(0)
    plain = randomise_bn(MODELS.build(dict(type='ResNet', depth=18))).eval()
    model = MODELS.build(dict(type='ResNet', depth=18, dcn=dict(type='DCN'),
                              stage_with_dcn=(False, True, True, True),
                              zero_init_residual=True)).eval()
    assert isinstance(model.layer2[1].conv2, DeformConv2dPack)
    assert type(model.layer2[1].conv1) is nn.Conv2d and type(model.layer1[0].conv2) is nn.Conv2d
    assert abs(model.layer2[0].conv2.weight.std().item() / (2 / (128 * 9)) ** 0.5 - 1) < 0.05
    assert model.layer3[1].bn2.weight.abs().max() == 0  # zero_init_residual still applies
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert result.unexpected_keys == [] and len(result.missing_keys) == 2 * 6
    assert all('.conv2.conv_offset.' in k for k in result.missing_keys)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(model(x), plain(x)):
            assert (ours - theirs).abs().max() < 1e-5


def test_resnet_dcn_options_are_validated():
    with pytest.raises(ValueError, match='dcn and stage_with_dcn must agree'):
        MODELS.build(dict(type='ResNet', depth=18, stage_with_dcn=(False, True, True, True)))
    with pytest.raises(ValueError, match='dcn and stage_with_dcn must agree'):
        MODELS.build(dict(type='ResNet', depth=18, dcn=dict(type='DCN')))
    with pytest.raises(ValueError, match='stage_with_dcn needs 4 bools'):
        MODELS.build(dict(type='ResNet', depth=18, dcn=dict(type='DCN'),
                          stage_with_dcn=(True, True)))
    with pytest.raises(ValueError, match='dcn type must be one of'):
        MODELS.build(dict(type='ResNet', depth=18, dcn=dict(type='DCNv9'),
                          stage_with_dcn=(False, False, False, True)))


def test_hdc_block_dilations_resnet101():
    """block_dilations=(None, None, (1, 2, 5), (5, 9, 17)): layer3's 23 blocks cycle 1, 2, 5
    (block j: rate (1, 2, 5)[j % 3]; padding = rate keeps the size), layer4 gets 5, 9, 17,
    layers 1-2 keep 1; with strides (1, 2, 1, 1) the output stride is still 8 (a 64 px input
    gives 8x8 C5, as without HDC)."""
    hdc = dict(type='ResNet', depth=101, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
               out_indices=(1, 2, 3), block_dilations=(None, None, (1, 2, 5), (5, 9, 17)))
    model = MODELS.build(hdc).eval()
    rates = [block.conv2.dilation for block in model.layer3]
    assert len(rates) == 23
    assert rates == [((1, 2, 5)[j % 3],) * 2 for j in range(23)]
    assert [block.conv2.padding for block in model.layer3] == rates
    assert [block.conv2.dilation for block in model.layer4] == [(5, 5), (9, 9), (17, 17)]
    assert {block.conv2.dilation for block in (*model.layer1, *model.layer2)} == {(1, 1)}
    assert model.strides == (8, 8, 8)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 512, 8, 8), (1, 1024, 8, 8), (1, 2048, 8, 8)]

    with pytest.raises(ValueError, match='block_dilations needs 4 entries'):
        MODELS.build(dict(type='ResNet', depth=18, block_dilations=((1, 2), None)))
    with pytest.raises(ValueError, match='non-empty tuple of positive ints'):
        MODELS.build(dict(type='ResNet', depth=18, block_dilations=(None, (), None, None)))
    with pytest.raises(ValueError, match='multi_grid or block_dilations'):
        MODELS.build(dict(type='ResNet', depth=18, multi_grid=(1, 2),
                          block_dilations=(None, None, None, (1, 2))))


# ---------------------------------------------------------------------------------- VoVNet

def test_vovnet_dcn_keeps_keys_and_equals_plain_at_init():
    """V-19-slim with DCNv1 in stages 1-3: the 3x3 conv_mid convs of those stages (3 per OSA
    module) are deformable under the same ``conv_mid.{k}.conv.weight`` keys; the only new keys
    are their conv_offsets (weight + bias) and, at init, the output equals the plain VoVNet's."""
    plain = randomise_bn(MODELS.build(dict(type='VoVNet', arch='V-19-slim'))).eval()
    model = MODELS.build(dict(type='VoVNet', arch='V-19-slim', dcn=dict(type='DCN'),
                              stage_with_dcn=(False, True, True, True))).eval()
    stage_of = {name: int(name.split('.')[1]) for name, m in model.named_modules()
                if isinstance(m, DeformConv2dPack)}
    assert len(stage_of) == 3 * 3 and set(stage_of.values()) == {1, 2, 3}
    assert all(name.endswith('.conv') and '.conv_mid.' in name for name in stage_of)
    assert type(model.stages[0].blocks[0].conv_mid[0].conv) is nn.Conv2d
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra == {f'{name}.conv_offset.{p}' for name in stage_of for p in ('weight', 'bias')}
    assert all(m.conv_offset.weight.abs().max() == 0 for m in model.modules()
               if isinstance(m, DeformConv2dPack))
    model.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(model(x), plain(x)):
            assert (ours - theirs).abs().max() < 1e-5
    with pytest.raises(ValueError, match='dcn and stage_with_dcn must agree'):
        MODELS.build(dict(type='VoVNet', arch='V-19-slim', dcn=dict(type='DCNv2')))


# ------------------------------------------------------------------- deformable RoI pooling

ROIS = torch.tensor([[0, 1., 2., 30., 40.], [1, -8., -6., 20., 12.], [0, 40., 30., 75., 60.],
                     [1, 3., 3., 5.5, 9.], [1, 10., 50., 70., 66.]])


@pytest.mark.parametrize('sampling_ratio', [1, 2, 3])
def test_deform_roi_pool_zero_offset_is_roi_align(sampling_ratio):
    """Boxes inside, across the border and smaller than a bin; two images, stride 4."""
    feat = torch.randn(2, 3, 13, 17)
    out = deform_roi_pool(feat, ROIS, torch.zeros(5, 2, 7, 7), 0.25, (7, 7), sampling_ratio)
    expected = roi_align(feat, ROIS, (7, 7), 0.25, sampling_ratio, aligned=True)
    assert (out - expected).abs().max() < 1e-5


def test_deform_roi_pool_offsets_move_bins():
    """A constant normalised offset (0.5, -0.3) moves every bin by (0.1 * 0.5 * w, -0.1 * 0.3 *
    h): the RoIAlign of the translated RoI. Per-bin offsets: each bin is the 1x1 RoIAlign of its
    own shifted bin box."""
    feat = torch.randn(2, 3, 13, 17)
    w, h = ROIS[:, 3] - ROIS[:, 1], ROIS[:, 4] - ROIS[:, 2]
    offset = torch.zeros(5, 2, 7, 7)
    offset[:, 0], offset[:, 1] = 0.5, -0.3
    moved = ROIS.clone()
    moved[:, [1, 3]] += (0.1 * 0.5 * w)[:, None]
    moved[:, [2, 4]] -= (0.1 * 0.3 * h)[:, None]
    out = deform_roi_pool(feat, ROIS, offset, 0.25, (7, 7), 2)
    assert (out - roi_align(feat, moved, (7, 7), 0.25, 2, aligned=True)).abs().max() < 1e-5

    offset = torch.randn(5, 2, 7, 7, generator=torch.Generator().manual_seed(0))
    step = torch.arange(7.)
    x1 = ROIS[:, 1, None, None] + step * (w / 7)[:, None, None] + 0.1 * w[:, None, None] * \
        offset[:, 0]
    y1 = ROIS[:, 2, None, None] + step[:, None] * (h / 7)[:, None, None] + \
        0.1 * h[:, None, None] * offset[:, 1]
    bins = torch.stack([ROIS[:, 0, None, None].expand(5, 7, 7), x1, y1,
                        x1 + (w / 7)[:, None, None], y1 + (h / 7)[:, None, None]], -1)
    expected = roi_align(feat, bins.view(-1, 5), 1, 0.25, 2, aligned=True)
    expected = expected.view(5, 7, 7, 3).permute(0, 3, 1, 2)
    assert (deform_roi_pool(feat, ROIS, offset, 0.25, (7, 7), 2) - expected).abs().max() < 1e-5


@pytest.mark.parametrize('modulated', [False, True])
def test_multilevel_deform_roi_pool(modulated):
    """At init: MultiLevelRoIAlign (sampling 2, aligned) on the same levels, times 0.5 when
    modulated; the zero last layer of offset_fc (and mask_fc) gets a gradient."""
    torch.manual_seed(0)
    feats = [torch.randn(2, 4, 32, 32, requires_grad=True), torch.randn(2, 4, 16, 16)]
    rois = torch.cat([torch.tensor([[0.], [1.], [1.], [0.]]),
                      torch.tensor([[2., 3., 40., 50.], [10., 10., 120., 100.],
                                    [5., 60., 125., 127.], [0., 0., 20., 30.]])], 1)
    pool = MultiLevelDeformRoIPool(output_size=7, featmap_strides=(4, 8), in_channels=4,
                                   fc_channels=32, modulated=modulated, finest_scale=32)
    reference = MultiLevelRoIAlign(7, (4, 8), sampling_ratio=2, aligned=True, finest_scale=32)
    assert pool.map_levels(rois).tolist() == [0, 1, 1, 0]
    out = pool(feats, rois)
    scale = 0.5 if modulated else 1.0
    assert (out - scale * reference(feats, rois)).abs().max() < 1e-5
    out.pow(2).sum().backward()
    assert pool.offset_fc[-1].weight.grad.abs().sum() > 0
    assert pool.offset_fc[0].weight.grad.abs().sum() == 0  # behind the zero last layer
    if modulated:
        assert pool.mask_fc[-2].weight.grad.abs().sum() > 0
    assert pool(feats, torch.zeros(0, 5)).shape == (0, 4, 7, 7)
    with pytest.raises(ValueError, match='sampling_ratio >= 1'):
        MultiLevelDeformRoIPool(sampling_ratio=0)
    with pytest.raises(ValueError, match='aligned=False'):
        MultiLevelDeformRoIPool(aligned=False)


def test_offset_fc_parameter_count():
    """Linear(7*7*256, 1024) + Linear(1024, 1024) + Linear(1024, 98), biases included."""
    pool = MultiLevelDeformRoIPool(in_channels=256)
    assert n_params(pool.offset_fc) == (12544 * 1024 + 1024) + (1024 * 1024 + 1024) + \
        (1024 * 98 + 98) == 13_996_130
    assert pool.mask_fc is None


def _sample(boxes, labels, img_shape=(64, 64)):
    sample = DataSample(metainfo=dict(img_shape=img_shape, ori_shape=img_shape,
                                      scale_factor=(1.0, 1.0), batch_input_shape=img_shape))
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                       labels=torch.tensor(labels, dtype=torch.long))
    return sample


def test_faster_rcnn_with_deformable_roi_pooling_recipe():
    """The dpool recipe (narrowed for CPU): one training step with finite losses, a gradient on
    offset_fc's zero last layer, then predictions on a 64x64 image."""
    cfg = Config.fromfile('configs/faster_rcnn_r18_fpn_dpool_320_12e_bccd.py').model
    assert cfg.roi_head.roi_extractor.type == 'MultiLevelDeformRoIPool'
    cfg.backbone.frozen_stages = 4
    cfg.neck.out_channels = 16
    cfg.rpn_head.update(in_channels=16, feat_channels=16)
    cfg.roi_head.update(in_channels=16, fc_out_channels=32)
    cfg.roi_head.roi_extractor.update(in_channels=16, fc_channels=32)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    inputs = torch.randn(2, 3, 64, 64)
    samples = [_sample([[8, 8, 40, 40], [30, 10, 60, 30]], [0, 2]), _sample([[4, 20, 30, 60]], [1])]
    losses = model(inputs, samples, mode='loss')
    total = sum(losses.values())
    assert torch.isfinite(total)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    optimizer.zero_grad()
    total.backward()
    extractor = model.roi_head.roi_extractor
    assert extractor.offset_fc[-1].weight.grad.abs().sum() > 0
    optimizer.step()
    assert extractor.offset_fc[-1].weight.abs().sum() > 0  # offsets start to move
    model.eval()
    with torch.no_grad():
        pred = model(inputs[:1], [_sample([], [])], mode='predict')[0].pred_instances
    assert pred.bboxes.shape[1] == 4 and len(pred) == len(pred.scores) == len(pred.labels)
    assert torch.isfinite(pred.bboxes).all()


def test_roi_pool_uses_grid_sample_because_roi_align_has_no_box_gradient():
    """The reason deform_roi_pool does not call roi_align on shifted bins: roi_align gives no
    gradient to its boxes, grid_sample gives one to its sampling grid."""
    feat = torch.randn(1, 2, 8, 8, requires_grad=True)
    rois = torch.tensor([[0., 1., 1., 6., 6.]], requires_grad=True)
    roi_align(feat, rois, 2, 1.0, 2, aligned=True).sum().backward()
    assert rois.grad is None
    grid = torch.rand(1, 2, 2, 2, requires_grad=True)
    F.grid_sample(feat, grid, align_corners=True).sum().backward()
    assert grid.grad.abs().sum() > 0
