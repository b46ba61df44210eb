"""ASFF neck: the resampling paths (shapes and hand-computed numbers), the reference's layer
layout and parameter count (ruinmessi/ASFF, reference/ANCHORS.md 2.2), fusion weights that sum
to 1 per pixel and are returned for visualisation, ASFF after FPN (the BCCD recipe) and on raw
backbone features."""
import pytest
import torch
from mmcv.cnn import ConvModule
from torch import nn

from toolbox.engine import load_config
from toolbox.registry import MODELS
from toolbox_plugins.necks.asff import ASFF, ASFFLevel

from .conftest import REPO_ROOT
from .helpers import n_params

BN = dict(type='BN')
LEAKY = dict(type='LeakyReLU', negative_slope=0.1)


def feats_for(channels, sizes, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=g) for c, (h, w) in zip(channels, sizes)]


def add_conv(c_in, c_out, k):
    """The reference's ``add_conv``: conv (no bias) + BN."""
    return c_in * c_out * k * k + 2 * c_out


def test_yolov3_layout_and_parameter_count_equal_the_reference():
    """YOLOv3-ASFF: levels (stride 8, 16, 32) of 256, 256, 512 channels; inter 256 / 256 / 512,
    expand to 256 / 512 / 1024 (the reference's levels 2, 1, 0)."""
    neck = ASFF(in_channels=(256, 256, 512), out_channels=(256, 512, 1024))
    fine, mid, coarse = neck.levels
    # our level 0 = reference level 2: level-1 input goes up with no compress, level-2 input
    # is compressed 512 -> 256 then goes up
    assert isinstance(fine.resample[0], nn.Identity) and isinstance(fine.resample[1], nn.Identity)
    assert fine.resample[2].conv.kernel_size == (1, 1) and fine.resample[2].conv.in_channels == 512
    # our level 1 = reference level 1: 3x3 s2 from level 0, compress from level 2
    assert mid.resample[0].conv.stride == (2, 2) and mid.resample[0].conv.kernel_size == (3, 3)
    assert mid.resample[2].conv.out_channels == 256
    # our level 2 = reference level 0: max-pool + 3x3 s2 from level 0, 3x3 s2 from level 1
    assert isinstance(coarse.resample[0][0], nn.MaxPool2d)
    assert coarse.resample[0][1].conv.stride == (2, 2) and coarse.resample[1].conv.stride == (2, 2)
    assert coarse.resample[1].conv.out_channels == 512
    assert fine.weight_fuse.bias is not None and fine.weight_fuse.in_channels == 48
    weights = lambda inter: 3 * add_conv(inter, 16, 1) + 48 * 3 + 3  # noqa: E731
    reference_level0 = (add_conv(256, 512, 3) + add_conv(256, 512, 3) + add_conv(512, 1024, 3)
                        + weights(512))
    reference_level1 = add_conv(512, 256, 1) + add_conv(256, 256, 3) + add_conv(256, 512, 3) \
        + weights(256)
    reference_level2 = add_conv(512, 256, 1) + add_conv(256, 256, 3) + weights(256)
    assert n_params(coarse) == reference_level0
    assert n_params(mid) == reference_level1
    assert n_params(fine) == reference_level2
    assert neck.out_channels == (256, 512, 1024)


@pytest.mark.parametrize('sizes', [((32, 40), (16, 20), (8, 10)), ((25, 33), (13, 17), (7, 9))])
def test_every_resampling_path_reaches_the_target_size(sizes):
    neck = ASFF(in_channels=(8, 16, 32), inter_channels=(8, 12, 16), out_channels=4).eval()
    feats = feats_for((8, 16, 32), sizes)
    for level, module in enumerate(neck.levels):
        resized = module.resize(feats)
        assert [tuple(r.shape) for r in resized] == [(2, (8, 12, 16)[level], *sizes[level])] * 3
    with torch.no_grad():
        outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 4, *s) for s in sizes]


def _identity_conv(module: ConvModule) -> None:
    """Centre tap 1 on the diagonal, BN at identity statistics (eval), so the conv+BN+LeakyReLU
    of a positive input is a copy (a stride-2 conv keeps the even pixels)."""
    with torch.no_grad():
        w = module.conv.weight
        w.zero_()
        k = w.shape[-1] // 2
        for c in range(min(w.shape[:2])):
            w[c, c, k, k] = 1.0


def test_resampling_numbers_hand_computed():
    """One channel, ramp inputs: up-sampling repeats pixels; down by 2 keeps x[2i, 2j]; down by
    4 (max-pool 3 s2 pad 1, then the stride-2 conv) keeps pool(x)[2i, 2j] = x[4i + 1, 4j + 1]."""
    level = ASFFLevel(0, (1, 1, 1), 1, 1, 2, BN, LEAKY).eval()
    x0 = torch.arange(64.).view(1, 1, 8, 8)
    x1 = torch.arange(16.).view(1, 1, 4, 4)
    x2 = torch.arange(4.).view(1, 1, 2, 2)
    up = level.resize([x0, x1, x2])
    assert torch.equal(up[0], x0)
    assert torch.equal(up[1], x1.repeat_interleave(2, 2).repeat_interleave(2, 3))
    assert torch.equal(up[2], x2.repeat_interleave(4, 2).repeat_interleave(4, 3))

    level = ASFFLevel(2, (1, 1, 1), 1, 1, 2, BN, LEAKY).eval()
    _identity_conv(level.resample[0][1])
    _identity_conv(level.resample[1])
    with torch.no_grad():
        down = level.resize([x0, x1, x2])
    eps = 1 / (1 + 1e-5) ** 0.5  # eval BN with unit statistics
    torch.testing.assert_close(down[1], torch.tensor([[[[0., 2.], [8., 10.]]]]) * eps)
    torch.testing.assert_close(down[0], torch.tensor([[[[9., 13.], [41., 45.]]]]) * eps)
    assert torch.equal(down[2], x2)


def test_fusion_weights_sum_to_one_and_weigh_the_resized_maps():
    torch.manual_seed(0)
    neck = ASFF(in_channels=(8, 8, 8), out_channels=8, return_weights=True).eval()
    for module in neck.levels:  # trained-like logits: not the neutral start
        nn.init.normal_(module.weight_fuse.weight, std=0.5)
    feats = feats_for((8, 8, 8), ((12, 16), (6, 8), (3, 4)))
    with torch.no_grad():
        outs, weights = neck(feats)
        assert len(outs) == len(weights) == 3
        for level, (module, w, out) in enumerate(zip(neck.levels, weights, outs)):
            assert w.shape == (2, 3, *feats[level].shape[-2:])
            assert (w >= 0).all()
            torch.testing.assert_close(w.sum(1), torch.ones_like(w[:, 0]))
            resized = module.resize(feats)
            fused = w[:, 0:1] * resized[0] + w[:, 1:2] * resized[1] + w[:, 2:3] * resized[2]
            torch.testing.assert_close(out, module.expand(fused))
        # not every pixel weighs the levels equally (the weights are spatial)
        assert weights[0].std(dim=(2, 3)).min() > 0
    neck.return_weights = False
    with torch.no_grad():
        plain = neck(feats)
    assert isinstance(plain, tuple) and all(torch.equal(a, b) for a, b in zip(plain, outs))


def test_fusion_starts_as_the_average_of_the_three_levels():
    """``weight_fuse`` starts at zero: weights exactly 1/3 everywhere (not a random, nearly
    one-hot choice of level per pixel), and it still receives a gradient."""
    neck = ASFF(in_channels=(4, 4, 4)).eval()
    feats = feats_for((4, 4, 4), ((8, 8), (4, 4), (2, 2)))
    with torch.no_grad():
        _, weights = neck.fuse_with_weights(feats)
    assert all(torch.equal(w, torch.full_like(w, 1 / 3)) for w in weights)
    neck.train()
    sum(o.square().mean() for o in neck(feats)).backward()
    assert all(m.weight_fuse.weight.grad.abs().sum() > 0 for m in neck.levels)


def test_asff_directly_on_backbone_features():
    """ResNet-18 C3..C5 (128, 256, 512 channels) into ASFF with the per-level widths."""
    torch.manual_seed(0)
    backbone = MODELS.build(dict(type='ResNet', depth=18, out_indices=(1, 2, 3)))
    neck = ASFF(in_channels=backbone.out_channels, in_strides=backbone.strides)
    assert neck.out_channels == (128, 256, 512) and neck.strides == (8, 16, 32)
    x = torch.randn(2, 3, 96, 128)
    outs = neck(backbone(x))
    assert [tuple(o.shape) for o in outs] == [(2, 128, 12, 16), (2, 256, 6, 8), (2, 512, 3, 4)]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())


def test_asff_after_fpn_in_the_bccd_recipe_keeps_p6():
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn-asff_320_12e_bccd.py'))
    base = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_320_12e_bccd.py'))
    assert {k: v for k, v in cfg.items() if k != 'model'} == \
        {k: v for k, v in base.items() if k != 'model'}  # same budget, data and seed
    assert cfg.model.bbox_head == base.model.bbox_head
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    neck = model.neck
    assert type(neck.pre_neck).__name__ == 'FPN' and neck.strides == (8, 16, 32, 64)
    feats = model.backbone(torch.randn(2, 3, 64, 96))
    with torch.no_grad():
        fpn = neck.pre_neck(feats)
        outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [tuple(f.shape) for f in fpn]
    assert torch.equal(outs[3], fpn[3])  # P6 passes through
    assert not torch.equal(outs[0], fpn[0])
    # ASFF adds 3 levels x (3 weight convs 128 -> 16 + BN, 48 -> 3 with bias, 3x3 128 -> 128 + BN)
    per_level = 3 * (128 * 16 + 32) + (48 * 3 + 3) + (128 * 128 * 9 + 256)
    # level 1 and 2 downsample the finer inputs with 3x3 s2 convs (1 and 2 of them)
    assert n_params(neck) - n_params(neck.pre_neck) == 3 * per_level + 3 * (128 * 128 * 9 + 256)


def test_argument_errors():
    with pytest.raises(ValueError, match='start_level'):
        ASFF(in_channels=(8, 8, 8), start_level=1)
    with pytest.raises(ValueError, match='out_channels needs 3'):
        ASFF(in_channels=(8, 8, 8), out_channels=(8, 8))
    neck = ASFF(in_channels=(8, 8, 8, 8))
    with pytest.raises(ValueError, match='expects 4 maps'):
        neck(feats_for((8, 8, 8), ((8, 8), (4, 4), (2, 2))))
    with pytest.raises(ValueError, match='differ from the pre_neck'):
        ASFF(in_channels=(8, 8, 8), pre_neck=dict(type='FPN', in_channels=[8, 16, 32],
                                                   out_channels=4, num_outs=3))
