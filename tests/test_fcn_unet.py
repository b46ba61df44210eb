"""FCN-32s / 16s / 8s (``FCNSkipHead``) and U-Net (``UNetEncoder`` + ``UNetHead``, 2D and 3D):
bilinear initialisation, zero-initialised skips, odd input sizes through the segmentor, and
the papers' parameter counts derived by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from mmengine.structures import PixelData

from toolbox.engine import load_config
from toolbox.models.bases import fit_to
from toolbox.registry import MODELS
from toolbox.structures import DataSample, VolumeData
from toolbox_plugins.decode_heads.fcn_head import bilinear_upsampling_weight

from .conftest import REPO_ROOT

# ResNet-18 C3, C4, C5 (strides 8, 16, 32) for each FCN variant: (in_index, in_channels)
RESNET_TAPS = {'8s': ((1, 2, 3), (128, 256, 512)), '16s': ((2, 3), (256, 512)),
               '32s': ((3,), (512,))}


def num_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def fcn_segmentor(variant: str, num_classes: int = 5, **head):
    in_index, in_channels = RESNET_TAPS[variant]
    return MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='ResNet', depth=18, out_indices=(0, 1, 2, 3)),
        decode_head=dict(type='FCNSkipHead', variant=variant, in_index=in_index,
                         in_channels=in_channels, num_classes=num_classes,
                         **{'channels': 512, 'num_convs': 0, **head})))


def unet_segmentor(spatial_dims: int = 2, base: int = 4, num_stages: int = 5,
                   num_classes: int = 3, upsample: str = 'deconv', in_channels: int = 3):
    widths = tuple(base * 2 ** i for i in range(num_stages))
    return MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='UNetEncoder', in_channels=in_channels, base_channels=base,
                      num_stages=num_stages, spatial_dims=spatial_dims),
        decode_head=dict(type='UNetHead', in_channels=widths, channels=base,
                         num_classes=num_classes, upsample=upsample,
                         spatial_dims=spatial_dims)))


def labelled_samples(shape, num_classes: int, batch: int = 2):
    element = PixelData if len(shape) == 2 else VolumeData
    samples = []
    for _ in range(batch):
        sample = DataSample(metainfo=dict(img_shape=shape, ori_shape=shape,
                                          batch_input_shape=shape))
        sample.gt_sem_seg = element(data=torch.randint(0, num_classes, (1, *shape)))
        samples.append(sample)
    return samples


# ------------------------------------------------------------------------------------ FCN

def test_bilinear_transposed_conv_equals_interpolate_inside_the_border():
    """The 2x up-score (kernel 4, stride 2, padding 1) starts as bilinear interpolation: per
    axis taps [1/4, 3/4, 3/4, 1/4] on the diagonal, zero between classes. Its output equals
    ``F.interpolate(x2, bilinear, align_corners=False)`` everywhere but the first / last row
    and column (measured: 1.2e-7 inside, in float32); there the transposed conv misses the
    1/4 tap beyond the edge: 3/4 of interpolate's value on an edge, 9/16 in a corner."""
    weight = bilinear_upsampling_weight(3, 2)
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    assert weight.shape == (3, 3, 4, 4)
    assert torch.equal(weight[1, 1], taps[:, None] * taps[None, :])
    assert torch.equal(weight[0, 1], torch.zeros(4, 4))
    head = MODELS.build(dict(type='FCNSkipHead', variant='8s', in_channels=(4, 4, 4),
                             channels=4, num_classes=3))
    assert all(torch.equal(up.weight, weight) for up in head.up_scores)
    x = torch.randn(2, 3, 7, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        up = head.up_scores[0](x)
    ref = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
    assert up.shape == ref.shape == (2, 3, 14, 10)
    assert (up - ref)[..., 1:-1, 1:-1].abs().max() < 1e-6
    torch.testing.assert_close(up[..., 0, 1:-1], 0.75 * ref[..., 0, 1:-1], rtol=0, atol=1e-6)
    torch.testing.assert_close(up[..., 1:-1, -1], 0.75 * ref[..., 1:-1, -1], rtol=0, atol=1e-6)
    torch.testing.assert_close(up[..., 0, 0], 0.5625 * ref[..., 0, 0], rtol=0, atol=1e-6)
    # odd factors (the paper's fixed x8 / x16 / x32 are even; 3 for completeness)
    torch.testing.assert_close(bilinear_upsampling_weight(1, 3)[0, 0, 2],
                               torch.tensor([1., 2., 3., 2., 1.]) / 3)


def test_fit_to_crops_and_pads_at_the_end():
    x = torch.arange(12.).reshape(1, 1, 3, 4)
    assert torch.equal(fit_to(x, (2, 4)), x[..., :2, :])
    padded = fit_to(x, (4, 5))
    assert padded.shape == (1, 1, 4, 5) and torch.equal(padded[..., :3, :4], x)
    assert padded[..., 3, :].abs().sum() == 0 and padded[..., :, 4].abs().sum() == 0
    assert fit_to(x, (3, 4)) is x


def test_zero_initialised_skips_make_fcn8s_and_16s_score_like_fcn32s_at_init():
    """With the same backbone and score_fr (``conv_seg``), an untrained FCN-8s outputs FCN-32s's
    scores taken through its two up-scores (FCN-16s: one) and nothing else: the zero-initialised
    skip scores add exactly 0. They still learn: their gradient is not zero."""
    torch.manual_seed(0)
    fcn32 = fcn_segmentor('32s').eval()
    x = torch.randn(1, 3, 97, 75)
    with torch.no_grad():
        feats = fcn32.extract_feat(x)
        score32 = fcn32.decode_head(feats)
    assert score32.shape == (1, 5, 4, 3)
    for variant in ('16s', '8s'):
        model = fcn_segmentor(variant).eval()
        missing, unexpected = model.load_state_dict(fcn32.state_dict(), strict=False)
        assert unexpected == [] and all('up_scores' in k or 'score_skips' in k for k in missing)
        head = model.decode_head
        with torch.no_grad():
            got = model(x, mode='tensor')
            expected = score32
            for up, level in zip(head.up_scores, (2, 1)):
                expected = fit_to(up(expected), feats[level].shape[2:])
        assert got.shape == expected.shape == ((1, 5, 7, 5) if variant == '16s' else
                                               (1, 5, 13, 10))
        assert torch.equal(got, expected)
    model.train()
    losses = model(x, labelled_samples((97, 75), 5, batch=1), mode='loss')
    losses['loss_ce'].backward()
    for score in head.score_skips:
        assert score.weight.grad.abs().sum() > 0 and score.bias.grad.abs().sum() > 0


@pytest.mark.parametrize('variant', ['8s', '16s', '32s'])
def test_fcn_odd_input_comes_back_at_the_input_size(variant):
    """97 x 75 through ``EncoderDecoder.predict``: ResNet maps round up (13 x 10, 7 x 5, 4 x 3
    at strides 8, 16, 32), the up-scores are cropped to them, the scores at stride 8 / 16 / 32
    are resized to 97 x 75."""
    torch.manual_seed(0)
    model = fcn_segmentor(variant).eval()
    with torch.no_grad():
        out = model.predict(torch.randn(2, 3, 97, 75))
    assert [tuple(s.seg_logits.data.shape) for s in out] == [(5, 97, 75)] * 2
    assert tuple(out[0].pred_sem_seg.data.shape) == (1, 97, 75)
    stride = int(variant[:-1])
    assert tuple(model(torch.randn(1, 3, 97, 75), mode='tensor').shape[2:]) == \
        (-(-97 // stride), -(-75 // stride))


def test_fcn_on_a_floor_dividing_backbone_pads_the_up_scores():
    """Max-pooled maps (UNetEncoder stages 3, 4, 5: 12 x 9, 6 x 4, 3 x 2 for 97 x 75) are
    at least twice the coarser map: the up-scores are zero-padded at the end, and the loss
    trains every parameter."""
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='UNetEncoder', base_channels=2, num_stages=6, out_indices=(3, 4, 5)),
        decode_head=dict(type='FCNSkipHead', variant='8s', in_index=(0, 1, 2),
                         in_channels=(16, 32, 64), channels=8, num_convs=2, kernel_size=(3, 1),
                         num_classes=4)))
    x = torch.randn(2, 3, 97, 75)
    assert [tuple(f.shape[2:]) for f in model.extract_feat(x)] == [(12, 9), (6, 4), (3, 2)]
    losses = model(x, labelled_samples((97, 75), 4), mode='loss')
    assert torch.isfinite(losses['loss_ce'])
    losses['loss_ce'].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    with torch.no_grad():
        assert tuple(model.predict(x)[0].seg_logits.data.shape) == (4, 97, 75)


def test_fcn8s_vgg16_paper_parameter_count():
    """The paper's FCN-8s (VGG-16, 21 classes), by layer (weights + biases):

    * VGG-16 conv1_1 .. conv5_3: 14,714,688 (torchvision's ``vgg16().features``);
    * fc6, 7x7 conv 512 -> 4096: 512 * 49 * 4096 + 4096 = 102,760,448 + 4,096 = 102,764,544;
    * fc7, 1x1 conv 4096 -> 4096: 16,777,216 + 4,096 = 16,781,312;
    * score_fr 4096 -> 21: 86,016 + 21 = 86,037; score_pool4 512 -> 21: 10,752 + 21 = 10,773;
      score_pool3 256 -> 21: 5,376 + 21 = 5,397;
    * upscore2 and upscore_pool4, 4x4 21 -> 21, no bias: 2 x 7,056 = 14,112.

    Head 119,662,175, model 134,376,863 learned parameters. The published caffe FCN-8s also
    stores the fixed (learning rate 0) x8 bilinear ``upscore8``, 16x16 21 -> 21 = 112,896
    values, which the base's bilinear resize replaces: 134,376,863 + 112,896 = 134,489,759,
    the 134.5M of the published model."""
    with torch.device('meta'):
        head = MODELS.build(dict(
            type='FCNSkipHead', variant='8s', in_channels=(256, 512, 512), num_convs=2,
            kernel_size=(7, 1), channels=4096, norm_cfg=None, num_classes=21))
        vgg16 = torchvision.models.vgg16().features
    assert num_params(vgg16) == 14_714_688
    assert num_params(head.convs[0]) == 102_764_544 and num_params(head.convs[1]) == 16_781_312
    assert num_params(head.conv_seg) == 86_037
    assert [num_params(s) for s in head.score_skips] == [10_773, 5_397]
    assert [num_params(u) for u in head.up_scores] == [7_056, 7_056]
    assert num_params(head) == 119_662_175
    assert num_params(vgg16) + num_params(head) == 134_376_863
    assert num_params(vgg16) + num_params(head) + 21 * 21 * 16 * 16 == 134_489_759


def test_fcn_arguments_are_checked():
    with pytest.raises(ValueError, match="variant must be one of"):
        MODELS.build(dict(type='FCNSkipHead', variant='4s', in_channels=(4,), channels=4,
                          num_classes=2))
    with pytest.raises(ValueError, match='8s reads 3 maps'):
        MODELS.build(dict(type='FCNSkipHead', variant='8s', in_channels=(4, 4), channels=4,
                          num_classes=2))
    with pytest.raises(ValueError, match='channels must be its 8 channels'):
        MODELS.build(dict(type='FCNSkipHead', variant='32s', in_channels=(8,), channels=4,
                          num_classes=2))
    with pytest.raises(ValueError, match='one entry per conv'):
        MODELS.build(dict(type='FCNSkipHead', variant='32s', in_channels=(8,), channels=4,
                          num_convs=2, kernel_size=(7,), num_classes=2))


# ----------------------------------------------------------------------------------- U-Net

def test_unet_paper_parameter_count():
    """The paper's U-Net (1 input channel, 2 classes, base 64, 5 stages, 2x2 up-convs, biased
    convs, no norm). A k x k conv c -> d has k * k * c * d + d parameters:

    * encoder, two 3x3 convs per stage: 1 -> 64 -> 64: 640 + 36,928 = 37,568;
      64 -> 128 -> 128: 73,856 + 147,584 = 221,440; 128 -> 256 -> 256: 295,168 + 590,080 =
      885,248; 256 -> 512 -> 512: 1,180,160 + 2,359,808 = 3,539,968; 512 -> 1024 -> 1024:
      4,719,616 + 9,438,208 = 14,157,824; total 18,842,048;
    * decoder, per level a 2x2 up-conv c -> c/2 (bias) then two 3x3 convs c -> c/2 -> c/2:
      1024: 2,097,664 + 4,719,104 + 2,359,808 = 9,176,576; 512: 524,544 + 1,179,904 +
      590,080 = 2,294,528; 256: 131,200 + 295,040 + 147,584 = 573,824; 128: 32,832 + 73,792 +
      36,928 = 143,552; the 1x1 classifier 64 -> 2: 130; total 12,188,610.

    31,030,658 in all, the "31.0M" usually quoted for U-Net. (Our convs are padded: the count
    does not depend on it.)"""
    with torch.device('meta'):
        encoder = MODELS.build(dict(type='UNetEncoder', in_channels=1, base_channels=64,
                                    num_stages=5, norm_cfg=None))
        head = MODELS.build(dict(type='UNetHead', in_channels=(64, 128, 256, 512, 1024),
                                 channels=64, num_classes=2, norm_cfg=None,
                                 upsample='deconv'))
    assert [num_params(s) for s in encoder.stages] == [37_568, 221_440, 885_248, 3_539_968,
                                                       14_157_824]
    assert [num_params(u) + num_params(b) for u, b in zip(head.ups, head.blocks)] == \
        [143_552, 573_824, 2_294_528, 9_176_576]
    assert num_params(encoder) == 18_842_048 and num_params(head) == 12_188_610
    assert num_params(encoder) + num_params(head) == 31_030_658


def test_unet_encoder_declares_floor_divided_stages():
    encoder = MODELS.build(dict(type='UNetEncoder', base_channels=4, num_stages=5))
    assert encoder.out_channels == (4, 8, 16, 32, 64) and encoder.strides == (1, 2, 4, 8, 16)
    assert encoder.size_divisor == 1
    outs = encoder(torch.randn(1, 3, 97, 75))
    assert [tuple(o.shape[2:]) for o in outs] == [(97, 75), (48, 37), (24, 18), (12, 9), (6, 4)]
    sub = MODELS.build(dict(type='UNetEncoder', base_channels=4, num_stages=5,
                            out_indices=(1, 3)))
    assert sub.out_channels == (8, 32) and sub.strides == (2, 8)
    assert [o.shape[1] for o in sub(torch.randn(1, 3, 32, 32))] == [8, 32]


@pytest.mark.parametrize('upsample', ['deconv', 'bilinear'])
def test_unet_2d_odd_input_comes_back_at_the_input_size(upsample):
    """97 x 75: the max-pools floor (48 x 37 ... 6 x 4), each 2x upsampling is padded to the
    skip's size, so the head's own output ('tensor' mode) is already 97 x 75 and predict
    returns it unchanged; the loss trains every parameter."""
    torch.manual_seed(0)
    model = unet_segmentor(upsample=upsample)
    x = torch.randn(2, 3, 97, 75)
    losses = model(x, labelled_samples((97, 75), 3), mode='loss')
    assert torch.isfinite(losses['loss_ce'])
    losses['loss_ce'].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model.eval()
    with torch.no_grad():
        logits = model(x, mode='tensor')
        out = model.predict(x)
    assert logits.shape == (2, 3, 97, 75)
    assert [tuple(s.seg_logits.data.shape) for s in out] == [(3, 97, 75)] * 2
    assert torch.equal(out[0].seg_logits.data, logits[0])


def test_unet_3d_odd_volume_comes_back_at_the_input_size():
    """33 x 47 x 31 with instance norm in 3D: stages 33x47x31, 16x23x15, 8x11x7, 4x5x3; the
    decoder pads back to the input size."""
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='UNetEncoder', in_channels=1, base_channels=2, num_stages=4,
                      spatial_dims=3, norm_cfg=dict(type='IN')),
        decode_head=dict(type='UNetHead', in_channels=(2, 4, 8, 16), channels=2,
                         num_classes=3, norm_cfg=dict(type='IN'), spatial_dims=3)))
    assert isinstance(model.backbone.stages[1][0], torch.nn.MaxPool3d)
    assert isinstance(model.backbone.stages[0][0].norm, torch.nn.InstanceNorm3d)
    assert isinstance(model.decode_head.ups[0], torch.nn.ConvTranspose3d)
    x = torch.randn(1, 1, 33, 47, 31)
    assert [tuple(f.shape[2:]) for f in model.extract_feat(x)] == \
        [(33, 47, 31), (16, 23, 15), (8, 11, 7), (4, 5, 3)]
    model.eval()
    with torch.no_grad():
        out = model.predict(x)
    assert tuple(out[0].seg_logits.data.shape) == (3, 33, 47, 31)
    assert tuple(out[0].pred_sem_seg.data.shape) == (1, 33, 47, 31)


@pytest.mark.parametrize('spatial_dims', [2, 3])
def test_unet_classifier_init_depends_on_the_dimension(spatial_dims):
    """2D: the base's normal(0.01) classifier (the CamVid record); 3D: PyTorch's default
    (MONAI's), uniform within 1 / sqrt(fan_in), with which Hippocampus learns its foreground."""
    torch.manual_seed(0)
    head = unet_segmentor(spatial_dims=spatial_dims, base=16).decode_head
    weight = head.conv_seg.weight
    if spatial_dims == 2:
        assert weight.std().item() == pytest.approx(0.01, rel=0.3)
    else:
        bound = 1 / weight.shape[1] ** 0.5
        assert weight.abs().max() <= bound
        assert weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.3)


def test_unet_hippocampus_config_builds_and_trains_one_step_on_a_crop():
    """configs/unet_hippocampus.py: 3D U-Net, base 16, 5 stages, instance norm, Dice + CE;
    forward / backward on one (1, 1, 32, 48, 32) crop (its bottom map is 2 x 3 x 2).

    5,643,475 parameters: the 3x3x3 convs have no bias (instance norm follows, without affine
    parameters), 27 * c * d each; encoder 1 -> 16 -> 16, ..., 128 -> 256 -> 256: 7,344 +
    41,472 + 165,888 + 663,552 + 2,654,208 = 3,532,464; decoder levels (2x2x2 up-conv
    8 * c * c/2 + c/2, two convs): 256: 262,272 + 1,327,104; 128: 65,600 + 331,776; 64:
    16,416 + 82,944; 32: 4,112 + 20,736; classifier 16 * 3 + 3 = 51; total 2,111,011."""
    cfg = load_config(str(REPO_ROOT / 'configs/unet_hippocampus.py'))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    assert model.backbone.out_channels == (16, 32, 64, 128, 256)
    assert num_params(model.backbone) == 3_532_464
    assert num_params(model) == 5_643_475
    x = torch.randn(1, 1, 32, 48, 32)
    assert tuple(model.extract_feat(x)[-1].shape) == (1, 256, 2, 3, 2)
    losses = model(x, labelled_samples((32, 48, 32), 3, batch=1), mode='loss')
    assert set(losses) == {'loss_dice_ce', 'acc_seg'} and torch.isfinite(losses['loss_dice_ce'])
    losses['loss_dice_ce'].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_unet_arguments_are_checked():
    with pytest.raises(ValueError, match='spatial_dims must be 2 or 3'):
        MODELS.build(dict(type='UNetEncoder', spatial_dims=1))
    with pytest.raises(ValueError, match='num_stages must be >= 2'):
        MODELS.build(dict(type='UNetEncoder', num_stages=1))
    with pytest.raises(ValueError, match='same number'):
        MODELS.build(dict(type='UNetHead', in_channels=(4,), num_classes=2))
    with pytest.raises(ValueError, match='upsample must be one of'):
        MODELS.build(dict(type='UNetHead', in_channels=(4, 8), num_classes=2,
                          upsample='nearest'))


@pytest.mark.parametrize('config', ['fcn8s_r18_600it_camvid.py', 'unet_600it_camvid.py'])
def test_camvid_configs_change_only_the_model(config):
    """Same data, schedule, budget and seed as the DeepLab v3+ 600-iteration CamVid run."""
    reference = load_config(str(REPO_ROOT / 'configs/deeplabv3plus_r18-d16_600it_camvid.py'))
    cfg = load_config(str(REPO_ROOT / 'configs' / config))
    for key in ('train_dataloader', 'val_dataloader', 'train_cfg', 'optim_wrapper',
                'param_scheduler', 'randomness', 'default_hooks'):
        assert cfg[key] == reference[key], key
    assert cfg.model.data_preprocessor == reference.model.data_preprocessor
    model = MODELS.build(cfg.model)
    x = torch.randn(1, 3, 180, 240)
    assert tuple(model(x, mode='tensor').shape) == \
        ((1, 11, 23, 30) if 'fcn' in config else (1, 11, 180, 240))
