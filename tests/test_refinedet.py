"""RefineDet: VGG16 / ResNet-101 backbones, TCB, ARM + ODM head, SSD augmentation, configs.

Hand-checkable cases: anchor layout and counts (reference/ANCHORS.md 3.1), TCB shapes,
negative anchor filtering (theta 0.01), the 3:1 mining ratio, the two-step decoding, empty
images; parameter counts of the VGG16 recipes (34,440,884 / 36,100,484) and weight loading
from a torchvision VGG16 state dict.
"""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from mmcv.cnn import ConvModule
from mmengine.structures import InstanceData
from torch import nn
from torchvision.ops import box_iou

from toolbox.engine import load_config
from toolbox.models.detectors import SingleStageDetector, attach_predictions
from toolbox.models.utils import unpack_gt_instances
from toolbox.models.task_utils import AnchorGenerator, DeltaXYWHBoxCoder
from toolbox.registry import MODELS, TRANSFORMS
from toolbox.structures import DataSample
from toolbox_plugins.backbones.refinedet_resnet import RefineDetResNet
from toolbox_plugins.backbones.vgg import VGG, L2Norm
from toolbox_plugins.dense_heads.refinedet_head import (REFINEDET_ANCHORS, RefineDetHead,
                                                        cascade_decode, mine_hard_negatives)
from toolbox_plugins.necks.tcb import TCB

from .helpers import n_params

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
SSD_STDS = (0.1, 0.1, 0.2, 0.2)




def tiny_head(num_classes=3, channels=(8, 8, 16, 8), **kwargs) -> RefineDetHead:
    torch.manual_seed(0)
    return RefineDetHead(num_classes=num_classes, in_channels=channels, feat_channels=8,
                         **kwargs)


def tiny_feats(batch, channels=(8, 8, 16, 8), sizes=((8, 8), (4, 4), (2, 2), (1, 1))):
    """(backbone sources, TCB outputs): what the detector hands a RefineDet head."""
    sources = tuple(torch.randn(batch, c, h, w) for c, (h, w) in zip(channels, sizes))
    return sources, TCB(channels, out_channels=8)(sources)


def loss_of(head, outs, data):
    gts, ignores, metas = unpack_gt_instances(data)
    return head.loss_by_feat(*outs, gts, metas, ignores)


def predict_of(head, outs, data):
    return head.predict_by_feat(*outs, batch_img_metas=[s.metainfo for s in data])


def tiny_detector(num_classes=3) -> SingleStageDetector:
    torch.manual_seed(0)
    return SingleStageDetector(
        backbone=dict(type='VGG', stage_channels=(4, 4, 8, 8, 8), fc_channels=16,
                      extra_channels=(8, 8)),
        neck=dict(type='TCB', in_channels=(8, 8, 16, 8), out_channels=8),
        bbox_head=dict(type='RefineDetHead', num_classes=num_classes, in_channels=(8, 8, 16, 8),
                       feat_channels=8))


def sample(boxes, labels, img_shape=(64, 64), **meta) -> DataSample:
    data_sample = DataSample()
    gt = InstanceData()
    gt.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    gt.labels = torch.tensor(labels, dtype=torch.long)
    data_sample.gt_instances = gt
    data_sample.set_metainfo(dict(img_shape=img_shape, ori_shape=img_shape, **meta))
    return data_sample


# --------------------------------------------------------------------------- anchors
@pytest.mark.parametrize('size, cells, total', [(320, (40, 20, 10, 5), 6375),
                                               (512, (64, 32, 16, 8), 16320)])
def test_anchor_layout_counts(size, cells, total):
    generator = AnchorGenerator(**{k: v for k, v in REFINEDET_ANCHORS.items() if k != 'type'})
    per_level = generator.grid_anchors([(c, c) for c in cells])
    assert [len(a) for a in per_level] == [c * c * 3 for c in cells]
    assert sum(len(a) for a in per_level) == total
    # one size per level, 4x the stride; centres at (x + 0.5) * stride
    for anchors, stride, base in zip(per_level, (8, 16, 32, 64), (32, 64, 128, 256)):
        square = anchors[0]
        assert square.tolist() == [stride / 2 - base / 2, stride / 2 - base / 2,
                                   stride / 2 + base / 2, stride / 2 + base / 2]
        assert size // stride == int(math.sqrt(len(anchors) // 3))


def test_first_anchors_hand_numbers():
    generator = AnchorGenerator(**{k: v for k, v in REFINEDET_ANCHORS.items() if k != 'type'})
    first = generator.grid_anchors([(40, 40), (20, 20), (10, 10), (5, 5)])[0]
    r = 16 * math.sqrt(2)  # half the long side of a 2:1 anchor of area 32^2
    s = 16 / math.sqrt(2)
    expected = torch.tensor([
        [-12, -12, 20, 20],  # cell (0, 0), ratio 1: centre (4, 4), side 32
        [4 - r, 4 - s, 4 + r, 4 + s],  # h / w = 1/2 (SSD aspect ratio 2)
        [4 - s, 4 - r, 4 + s, 4 + r],  # h / w = 2
        [-4, -12, 28, 20],  # cell (0, 1): centre (12, 4)
    ])
    assert torch.allclose(first[:4], expected, atol=1e-5)
    # row (y * W + x) * A + a: cell (y=1, x=0) starts at row 40 * 3
    assert first[120].tolist() == [-12.0, -4.0, 20.0, 28.0]


# ---------------------------------------------------------------------------- VGG
def test_vgg_outputs_and_declared_contract():
    vgg = VGG()
    assert vgg.out_channels == (512, 512, 1024, 512)
    assert vgg.strides == (8, 16, 32, 64)
    # 14,714,688 (VGG16 convs) + fc6 4,719,616 + fc7 1,049,600 + extras 1,442,560 + L2Norm 1,024
    assert n_params(vgg) == 21_927_488
    small = VGG(stage_channels=(4, 4, 8, 8, 8), fc_channels=16, extra_channels=(8, 12))
    feats = small(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 8, 8, 8), (2, 8, 4, 4), (2, 16, 2, 2),
                                               (2, 12, 1, 1)]
    assert small.out_channels == (8, 8, 16, 12)


def test_vgg_out_indices_conv_modules_and_norm_eval():
    vgg = VGG(stage_channels=(4, 4, 8, 8, 8), fc_channels=16, extra_channels=(8, 12),
              norm_cfg=dict(type='BN'), out_indices=(2, 3), norm_eval=True)
    assert vgg.out_channels == (16, 12) and vgg.strides == (32, 64)
    assert isinstance(vgg.fc6, ConvModule) and vgg.fc6.conv.dilation == (3, 3)
    assert vgg.fc6.conv.bias is None and isinstance(vgg.fc6.bn, nn.BatchNorm2d)
    assert 'conv6_2.bn.running_var' in vgg.state_dict()
    vgg.train()
    assert all(not m.training for m in vgg.modules() if isinstance(m, nn.BatchNorm2d))
    feats = vgg(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 16, 2, 2), (2, 12, 1, 1)]
    with pytest.raises(ValueError, match='out_indices'):
        VGG(out_indices=(4,))


def test_l2norm_hand_case():
    norm = L2Norm(2, scale=10.0)
    x = torch.tensor([3.0, 4.0]).reshape(1, 2, 1, 1)
    assert torch.allclose(norm(x).flatten(), torch.tensor([6.0, 8.0]))


@pytest.mark.parametrize('batch_norm', [False, True])
def test_vgg_loads_torchvision_vgg16(tmp_path, batch_norm):
    """torchvision vgg16(_bn) weights load (report: only the 1000-class classifier unused) and
    the shared layers give exactly torchvision's conv4_3 / conv5_3 activations."""
    torch.manual_seed(0)
    reference = (torchvision.models.vgg16_bn if batch_norm else torchvision.models.vgg16)(
        weights=None).eval()
    if batch_norm:
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / 'vgg16.pth'
    torch.save(reference.state_dict(), path)

    ours = VGG(norm_cfg=dict(type='BN') if batch_norm else None, l2_norm_scales=None).eval()
    report = ours.load_pretrained(str(path))
    # with a norm, fc6 / fc7 (mmcv ConvModules) have no conv bias to take the fc biases
    unused_fc_bias = ['fc6.conv.bias', 'fc7.conv.bias'] if batch_norm else []
    assert report['unexpected'] == ['classifier.6.weight', 'classifier.6.bias'] + unused_fc_bias
    assert report['mismatched'] == []
    if batch_norm:  # the extras' convs and every norm after fc6..conv6_2 are new
        expected_missing = {'conv6_1.conv.weight', 'conv6_2.conv.weight'} | {
            f'{layer}.bn.{key}' for layer in ('fc6', 'fc7', 'conv6_1', 'conv6_2')
            for key in ('weight', 'bias', 'running_mean', 'running_var')}
    else:
        expected_missing = {'conv6_1.conv.weight', 'conv6_1.conv.bias', 'conv6_2.conv.weight',
                            'conv6_2.conv.bias'}
    assert set(report['missing']) == expected_missing
    # fc6 / fc7 are the decimated fully connected layers (SSD's reduced fc)
    fc6 = reference.classifier[0].weight.reshape(4096, 512, 7, 7)
    assert torch.equal(ours.fc6.conv.weight, fc6[::4, :, ::3, ::3])
    assert torch.equal(ours.fc7.conv.weight.flatten(1), reference.classifier[3].weight[::4, ::4])
    if not batch_norm:
        assert torch.equal(ours.fc6.conv.bias, reference.classifier[0].bias[::4])

    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        conv4_3, conv5_3, _, _ = ours(x)
        ends = [i + 1 for i, m in enumerate(reference.features) if isinstance(m, nn.ReLU)]
        ref4 = reference.features[:ends[9]](x)  # relu4_3 is the 10th ReLU
        ref5 = reference.features[:ends[12]](x)  # relu5_3 is the 13th
    assert torch.equal(conv4_3, ref4)
    assert torch.equal(conv5_3, ref5)


def test_pretrained_is_loaded_by_init_weights_not_at_build(tmp_path):
    """Building never reads the checkpoint (configs build offline); the detector's
    init_weights, which the Runner calls before training, loads it."""
    missing = VGG(stage_channels=(4, 4, 8, 8, 8), fc_channels=16, extra_channels=(8, 8),
                  pretrained=str(tmp_path / 'absent.pth'))
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        missing.init_weights()
    source = VGG(stage_channels=(4, 4, 8, 8, 8), fc_channels=16, extra_channels=(8, 8))
    torch.save(source.state_dict(), tmp_path / 'narrow.pth')
    det = SingleStageDetector(
        backbone=dict(type='VGG', stage_channels=(4, 4, 8, 8, 8), fc_channels=16,
                      extra_channels=(8, 8), pretrained=str(tmp_path / 'narrow.pth')),
        neck=dict(type='TCB', in_channels=(8, 8, 16, 8), out_channels=8),
        bbox_head=dict(type='RefineDetHead', num_classes=2, in_channels=(8, 8, 16, 8),
                       feat_channels=8))
    assert not torch.equal(det.backbone.fc6.conv.weight, source.fc6.conv.weight)
    det.init_weights()
    for name, tensor in source.state_dict().items():
        assert torch.equal(det.backbone.state_dict()[name], tensor), name


# ------------------------------------------------------------------------ ResNet
def test_refinedet_resnet_shapes_and_torchvision_keys(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / 'r18.pth'
    torch.save(reference.state_dict(), path)
    backbone = RefineDetResNet(depth=18, extra_planes=8, pretrained=str(path)).eval()
    # loading happens in init_weights (the Runner calls it through the detector)
    assert not torch.equal(backbone.resnet.layer3[0].conv1.weight,
                           reference.layer3[0].conv1.weight)
    report = backbone.init_weights()
    assert report == dict(missing=[], unexpected=['fc.weight', 'fc.bias'], mismatched=[])
    assert torch.equal(backbone.resnet.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert backbone.out_channels == (128, 256, 512, 32)
    assert backbone.strides == (8, 16, 32, 64)
    feats = backbone(torch.randn(1, 3, 128, 128))
    assert [tuple(f.shape[1:]) for f in feats] == [(128, 16, 16), (256, 8, 8), (512, 4, 4),
                                                   (32, 2, 2)]
    # the new block trains even though the ResNet's norms are frozen (norm_eval)
    backbone.train()
    assert not backbone.resnet.bn1.training and backbone.res6.bn1.training


def test_refinedet_resnet101_channels_and_params():
    backbone = RefineDetResNet(depth=101, norm_eval=False)
    assert backbone.out_channels == (512, 1024, 2048, 512)
    # 42,500,160 (torchvision R101 without fc) + res6: 2048*128 + 128*128*9 + 128*512
    # + 2048*512 convs, 2 * (128 + 128 + 512 + 512) BN
    assert n_params(backbone) == 42_500_160 + 262144 + 147456 + 65536 + 1048576 + 2560


def test_refinedet_resnet_feature_points_and_frozen_stages():
    backbone = RefineDetResNet(depth=18, extra_planes=8, norm_eval=False, out_indices=(0, 4),
                               frozen_stages=2)
    assert backbone.out_channels == (64, 32) and backbone.strides == (4, 64)
    with torch.no_grad():
        feats = backbone(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 16, 16), (2, 32, 1, 1)]
    resnet = backbone.resnet
    assert backbone.frozen_modules() == [resnet.conv1, resnet.bn1, resnet.layer1, resnet.layer2]
    assert not any(p.requires_grad for p in resnet.layer2.parameters())
    assert all(p.requires_grad for p in resnet.layer3.parameters())
    assert all(p.requires_grad for p in backbone.res6.parameters())
    with pytest.raises(ValueError, match='must include 4'):
        RefineDetResNet(depth=18, norm_eval=False, out_indices=(1, 2, 3))
    # a FrozenBN ResNet still gets a training BN in the new block
    frozen_bn = RefineDetResNet(depth=18, extra_planes=8, norm_eval=False,
                                norm_cfg=dict(type='FrozenBN'))
    assert isinstance(frozen_bn.resnet.bn1, torchvision.ops.FrozenBatchNorm2d)
    assert isinstance(frozen_bn.res6.bn1, nn.BatchNorm2d)
    assert frozen_bn.res6.bn1.weight.requires_grad


# --------------------------------------------------------------------------- TCB
def test_tcb_shapes_and_params():
    tcb = TCB(in_channels=(512, 512, 1024, 512), out_channels=256, in_strides=(8, 16, 32, 64))
    assert tcb.out_channels == (256,) * 4 and tcb.strides == (8, 16, 32, 64)
    # reference/ANCHORS.md 2.3: tcb0 8,259,584 + tcb1 787,200 + tcb2 2,360,320
    assert n_params(tcb) == 8_259_584 + 787_200 + 2_360_320
    feats = [torch.randn(1, c, s, s) for c, s in zip((512, 512, 1024, 512), (40, 20, 10, 5))]
    outs = tcb(feats)
    assert [tuple(o.shape) for o in outs] == [(1, 256, s, s) for s in (40, 20, 10, 5)]
    assert all((o >= 0).all() for o in outs)  # ends with a ReLU


def test_tcb_top_down_hand_case():
    """1 channel, identity-like weights: P_top = relu(2 * relu(x_top)), fine = x + up."""
    tcb = TCB(in_channels=(1, 1), out_channels=1)
    with torch.no_grad():
        for m in tcb.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
                m.weight[0, 0, 1, 1] = 1.0
                m.bias.zero_()
        tcb.upsamples[0].weight.fill_(1.0)  # 2x2 deconv of ones: nearest upsampling
        tcb.upsamples[0].bias.zero_()
    coarse = torch.tensor([[[[2.0]]]])
    fine = torch.full((1, 1, 2, 2), -1.0)
    fine[0, 0, 0, 0] = 3.0
    out_fine, out_coarse = tcb([fine, coarse])
    assert out_coarse.item() == 2.0
    # lateral: conv(relu(conv(x))) = relu(x) -> [3, 0, 0, 0]; + up(2) -> [5, 2, 2, 2]
    assert out_fine.flatten().tolist() == [5.0, 2.0, 2.0, 2.0]


def test_tcb_odd_sizes_are_padded():
    tcb = TCB(in_channels=(2, 2), out_channels=4)
    outs = tcb([torch.randn(1, 2, 5, 5), torch.randn(1, 2, 2, 2)])
    assert [tuple(o.shape[-2:]) for o in outs] == [(5, 5), (2, 2)]


# ------------------------------------------------------------------ cascade decode
def test_cascade_decode_hand_numbers():
    coder = DeltaXYWHBoxCoder(stds=SSD_STDS)
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # ARM: dx = 1 * 0.1 -> centre moves by 1 px; ODM: dw = log(2) -> width doubles
    arm = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    odm = torch.tensor([[0.0, 0.0, math.log(2) / 0.2, 0.0]])
    refined, boxes = cascade_decode(coder, anchors, arm, odm)
    assert torch.allclose(refined, torch.tensor([[1.0, 0.0, 11.0, 10.0]]))
    assert torch.allclose(boxes, torch.tensor([[-4.0, 0.0, 16.0, 10.0]]), atol=1e-5)
    _, clipped = cascade_decode(coder, anchors, arm, odm, max_shape=(8, 12))
    assert torch.allclose(clipped, torch.tensor([[0.0, 0.0, 12.0, 8.0]]))


# --------------------------------------------------------------- mining, filtering
def test_mining_ratio_exactly_three_to_one():
    labels = torch.full((2, 20), 3)  # 3 = background
    labels[0, [0, 5]] = torch.tensor([0, 2])  # image 0: 2 positives
    labels[0, 7] = -1  # ignored: never mined
    labels[1, :18] = 1  # image 1: 18 positives, only 2 negatives
    loss = torch.arange(20, dtype=torch.float32).expand(2, 20).clone()
    pos, neg = mine_hard_negatives(loss, labels, background=3, neg_pos_ratio=3)
    assert pos.sum(1).tolist() == [2, 18]
    assert neg.sum(1).tolist() == [6, 2]
    # the hardest negatives of image 0: losses 19..14 (index 7 is ignored, 5 positive)
    assert neg[0].nonzero().flatten().tolist() == [14, 15, 16, 17, 18, 19]
    assert not (neg & pos).any() and not neg[0, 7]


def test_mining_without_positives_takes_no_negatives():
    labels = torch.full((1, 10), 3)
    pos, neg = mine_hard_negatives(torch.rand(1, 10), labels, 3, 3)
    assert not pos.any() and not neg.any()


def constant_outputs(head, sizes, arm_obj_logit, arm_delta=0.0, odm_delta=0.0, odm_logits=None):
    """Head outputs with the same value at every anchor (batch 1)."""
    arm_cls, arm_reg, odm_cls, odm_reg = [], [], [], []
    a, c = head.num_anchors, head.num_classes + 1
    for h, w in sizes:
        logits = torch.zeros(1, a, 2, h, w)
        logits[:, :, 0] = arm_obj_logit
        arm_cls.append(logits.reshape(1, a * 2, h, w))
        arm_reg.append(torch.full((1, a * 4, h, w), arm_delta))
        cls = torch.zeros(1, a, c, h, w)
        if odm_logits is not None:
            cls += torch.tensor(odm_logits).reshape(1, 1, c, 1, 1)
        odm_cls.append(cls.reshape(1, a * c, h, w))
        odm_reg.append(torch.full((1, a * 4, h, w), odm_delta))
    return arm_cls, arm_reg, odm_cls, odm_reg


SIZES_64 = [(8, 8), (4, 4), (2, 2), (1, 1)]


def test_negative_anchor_filtering_in_training():
    """Objectness 0.005 <= 0.01 on every anchor: the ODM sees no anchor at all (zero ODM
    losses), the ARM loss is unaffected; at objectness 0.5 the ODM trains."""
    head = tiny_head()
    data = [sample([[8, 8, 40, 40]], [1])]
    p_obj = 0.005
    filtered = constant_outputs(head, SIZES_64, arm_obj_logit=math.log(p_obj / (1 - p_obj)))
    losses = loss_of(head, filtered, data)
    assert losses['loss_odm_cls'].item() == 0 and losses['loss_odm_bbox'].item() == 0
    assert losses['loss_arm_cls'].item() > 0
    kept = loss_of(head, constant_outputs(head, SIZES_64, arm_obj_logit=0.0), data)
    assert kept['loss_odm_cls'].item() > 0
    # with uniform ODM logits every kept anchor costs log(C + 1): positives + 3x negatives
    # over the positives -> 4 log 4 exactly when the image has enough negatives
    assert kept['loss_odm_cls'].item() == pytest.approx(4 * math.log(4), rel=1e-5)
    assert kept['loss_arm_cls'].item() == pytest.approx(4 * math.log(2), rel=1e-5)


def test_filtering_threshold_is_inclusive_at_theta():
    head = tiny_head()
    data = [sample([[8, 8, 40, 40]], [1])]
    just_above = constant_outputs(head, SIZES_64, arm_obj_logit=math.log(0.0101 / 0.9899))
    assert loss_of(head, just_above, data)['loss_odm_cls'].item() > 0
    at_theta = constant_outputs(head, SIZES_64, arm_obj_logit=math.log(0.0099 / 0.9901))
    assert loss_of(head, at_theta, data)['loss_odm_cls'].item() == 0
    assert predict_of(head, at_theta, data)[0].bboxes.shape == (0, 4)


def test_matching_best_anchor_and_iou_threshold():
    """A gt that overlaps no anchor at IoU >= 0.5 still gets its best anchor; the ODM
    matches against the refined anchors."""
    head = tiny_head()
    anchors = head.grid_priors([torch.zeros(1, 1, h, w) for h, w in SIZES_64])
    gt = torch.tensor([[0.0, 0.0, 6.0, 6.0]])  # far smaller than the 32 px anchors

    def targets_of(data_sample):
        gts, ignores, metas = unpack_gt_instances([data_sample])
        targets = head.get_targets(anchors, gts, metas, ignores)
        return targets.labels[0], targets.bbox_targets[0]

    labels, targets = targets_of(sample(gt.tolist(), [2]))
    best = box_iou(gt, anchors).argmax().item()
    assert box_iou(gt, anchors).max().item() < 0.5
    assert (labels != head.num_classes).nonzero().flatten().tolist() == [best]
    assert labels[best].item() == 2
    coder = DeltaXYWHBoxCoder(stds=SSD_STDS)
    assert torch.allclose(coder.decode(anchors[best], targets[best]), gt[0], atol=1e-4)
    # a gt equal to an anchor: that anchor and every anchor at IoU >= 0.5 are positive
    labels, _ = targets_of(sample([anchors[10].tolist()], [0]))
    ious = box_iou(anchors[10:11], anchors)[0]
    assert ((labels == 0) == (ious >= 0.5)).all()


def test_zero_positive_images():
    """Images without objects: zero box losses, finite (zero) classification losses; in a
    batch with one empty image, the empty image adds no negatives."""
    head = tiny_head()
    outs = head(tiny_feats(2))
    empty = [sample([], []), sample([], [])]
    losses = loss_of(head, outs, empty)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_arm_bbox'].item() == 0 and losses['loss_odm_bbox'].item() == 0
    assert losses['loss_arm_cls'].item() == 0 and losses['loss_odm_cls'].item() == 0
    sum(losses.values()).backward()  # the graph stays connected

    outs = constant_outputs(head, SIZES_64, arm_obj_logit=0.0)
    outs = tuple([torch.cat([m, m]) for m in maps] for maps in outs)
    mixed = loss_of(head, outs, [sample([[8, 8, 40, 40]], [1]), sample([], [])])
    assert mixed['loss_arm_cls'].item() == pytest.approx(4 * math.log(2), rel=1e-5)


def test_loss_normalised_by_positives_and_backward_finite():
    det = tiny_detector()
    x = torch.randn(2, 3, 64, 64)
    data = [sample([[4, 4, 30, 36], [20, 10, 60, 60]], [0, 2]), sample([[0, 0, 63, 63]], [1])]
    losses = det(x, data, mode='loss')
    assert set(losses) == {'loss_arm_cls', 'loss_arm_bbox', 'loss_odm_cls', 'loss_odm_bbox'}
    total = sum(losses.values())
    total.backward()
    grads = [p.grad for p in det.parameters() if p.grad is not None]
    assert len(grads) == len(list(det.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)
    # ODM gradients do not reach the ARM regression through the refined anchors
    head = det.bbox_head
    det.zero_grad(set_to_none=True)
    outs = head(det.extract_feat(x))
    loss_of(head, outs, data)['loss_odm_bbox'].backward()
    assert all(p.grad is None for p in head.arm_reg.parameters())


# -------------------------------------------------------------------------- predict
def test_predict_single_surviving_anchor_in_original_frame():
    """One anchor passes the filter; its cascade box is mapped back to the original image."""
    head = tiny_head(num_classes=2)
    # class 1 wins; class 0's probability stays below score_thr (0.01), class 0 is dropped
    outs = constant_outputs(head, SIZES_64, arm_obj_logit=-10.0, odm_logits=[-5.0, 3.0, 0.0])
    # anchor 0 of cell (y=2, x=3) of level 0 (stride 8, size 32): centre (28, 20)
    index = (2 * 8 + 3) * 3
    outs[0][0].view(1, 3, 2, 8, 8)[0, 0, 0, 2, 3] = 10.0
    outs[1][0].view(1, 3, 4, 8, 8)[0, 0, :, 2, 3] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    outs[3][0].view(1, 3, 4, 8, 8)[0, 0, :, 2, 3] = torch.tensor([0.0, 0.0, 0.0, -5.0])
    anchors = head.grid_priors(outs[0])
    assert anchors[index].tolist() == [12.0, 4.0, 44.0, 36.0]
    # ARM: centre x 28 + 0.1 * 32 = 31.2; ODM: h = 32 * exp(-1) = 11.77
    half_h = 16 * math.exp(-1)
    expected = torch.tensor([[15.2, 20 - half_h, 47.2, 20 + half_h]])
    data = [sample([[0, 0, 1, 1]], [0], img_shape=(64, 64), scale_factor=(0.5, 0.5))]
    data[0].set_metainfo(dict(ori_shape=(128, 128)))
    results = predict_of(head, outs, data)
    assert len(results[0]) == 1
    assert torch.allclose(results[0].bboxes, expected, atol=1e-4)
    assert results[0].labels.tolist() == [1]
    probability = math.exp(3) / (math.exp(-5) + math.exp(3) + 1)
    assert results[0].scores.item() == pytest.approx(probability, rel=1e-5)
    original = attach_predictions(data, results)[0].pred_instances
    assert torch.allclose(original.bboxes, expected * 2, atol=1e-4)


def test_predict_nms_and_keep_top_k():
    det = tiny_detector().eval()
    det.bbox_head.test_cfg.update(max_per_img=7, score_thr=0.0)
    data = [sample([[0, 0, 1, 1]], [0], img_shape=(64, 64), scale_factor=(0.5, 0.5))]
    data[0].set_metainfo(dict(ori_shape=(128, 128)))
    with torch.no_grad():
        pred = det(torch.randn(1, 3, 64, 64), data, mode='predict')[0].pred_instances
    assert len(pred) == 7
    assert (pred.scores[:-1] >= pred.scores[1:]).all()
    assert pred.bboxes.min() >= 0 and pred.bboxes.max() <= 128
    for label in pred.labels.unique():
        boxes = pred.bboxes[pred.labels == label]
        iou = box_iou(boxes, boxes).fill_diagonal_(0)
        assert (iou <= 0.45 + 1e-6).all()
    assert det.bbox_head.test_cfg['iou_threshold'] == 0.45


def test_predict_top_k_per_class_before_nms():
    head = tiny_head(num_classes=2, test_cfg=dict(nms_pre=5, score_thr=0.0, iou_threshold=1.0,
                                                  max_per_img=-1))
    outs = head(tiny_feats(1))
    result = predict_of(head, outs, [sample([], [])])[0]
    assert result.labels.bincount().tolist() == [5, 5]


# ---------------------------------------------------------------- SSD augmentation
def test_expand_moves_boxes_with_image():
    np.random.seed(0)
    expand = TRANSFORMS.build(dict(type='Expand', mean=(1, 2, 3), ratio_range=(2, 2), prob=1.0))
    img = np.full((10, 20, 3), 200, np.uint8)
    results = expand(dict(img=img, gt_bboxes=np.array([[0, 0, 20, 10]], np.float32),
                          gt_bboxes_labels=np.array([4]), gt_ignore_flags=np.array([False])))
    out = results['img']
    assert out.shape == (20, 40, 3) and results['img_shape'] == (20, 40)
    x1, y1, x2, y2 = results['gt_bboxes'][0].astype(int)
    assert (x2 - x1, y2 - y1) == (20, 10)
    assert (out[y1:y2, x1:x2] == 200).all()
    assert (out == 200).all(-1).sum() == 200  # exactly the original pixels
    assert (out[(out != 200).any(-1)] == [1, 2, 3]).all()


def test_min_iou_random_crop_keeps_boxes_in_sync():
    np.random.seed(1)
    crop = TRANSFORMS.build(dict(type='MinIoURandomCrop', min_ious=(0.5,), min_crop_size=0.3))
    # every pixel holds its own (y, x): a crop tells its offset
    yy, xx = np.meshgrid(np.arange(100), np.arange(100), indexing='ij')
    img = np.stack([yy, xx, np.zeros_like(yy)], axis=-1).astype(np.uint8)
    boxes = np.array([[10, 10, 30, 30], [60, 60, 90, 95], [0, 0, 100, 100]], np.float32)
    cropped = 0
    for _ in range(20):
        results = crop(dict(img=img.copy(), img_shape=(100, 100), gt_bboxes=boxes.copy(),
                            gt_bboxes_labels=np.array([0, 1, 2]),
                            gt_ignore_flags=np.array([False, True, False])))
        h, w = results['img'].shape[:2]
        assert results['img_shape'] == (h, w)
        y0, x0 = results['img'][0, 0, :2].astype(int)
        assert (results['img'] == img[y0:y0 + h, x0:x0 + w]).all()
        cropped += (h, w) != (100, 100)
        labels, flags = results['gt_bboxes_labels'], results['gt_ignore_flags']
        assert len(results['gt_bboxes']) == len(labels) == len(flags) >= 1
        assert (flags == (labels == 1)).all()  # box 1 is the only ignored one
        # label k is box k: clipped to the patch and shifted by its offset
        expected = boxes[labels].copy()
        expected[:, 0::2] = expected[:, 0::2].clip(x0, x0 + w) - x0
        expected[:, 1::2] = expected[:, 1::2].clip(y0, y0 + h) - y0
        assert np.array_equal(results['gt_bboxes'], expected)
        # every kept box has its centre inside the patch
        centres = (boxes[labels, :2] + boxes[labels, 2:]) / 2
        assert ((centres > [x0, y0]) & (centres < [x0 + w, y0 + h])).all()
    assert cropped > 5


def test_min_iou_random_crop_without_boxes():
    np.random.seed(2)
    crop = TRANSFORMS.build(dict(type='MinIoURandomCrop'))
    results = crop(dict(img=np.zeros((50, 40, 3), np.uint8),
                        gt_bboxes=np.zeros((0, 4), np.float32),
                        gt_bboxes_labels=np.zeros(0, np.int64),
                        gt_ignore_flags=np.zeros(0, bool)))
    assert results['gt_bboxes'].shape == (0, 4)
    assert results['img'].shape[0] <= 50 and results['img'].shape[1] <= 40


# ------------------------------------------------------------------------- configs
def build_model(config: str, **options):
    cfg = load_config(str(CONFIGS / config), options)
    return MODELS.build(cfg.model)


@pytest.mark.parametrize('config, expected', [
    ('refinedet_vgg16_320_voc0712.py', 34_440_884),
    ('refinedet_vgg16_512_voc0712.py', 34_440_884),
    ('refinedet_vgg16_320_coco.py', 36_100_484),
])
def test_vgg16_recipes_parameter_counts(config, expected):
    model = build_model(config, **{'model.backbone.pretrained': None})
    assert n_params(model) == expected


def test_refinedet_r101_alias_builds_and_runs():
    cfg = load_config(str(CONFIGS / 'refinedet_r101.py'), {'model.backbone.pretrained': None})
    assert cfg.model.backbone.type == 'RefineDetResNet' and cfg.model.backbone.depth == 101
    assert cfg.model.bbox_head.num_classes == 80
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (512, 512)
    # frozen BN statistics without ImageNet weights blow activations up: the user is told
    with pytest.warns(RuntimeWarning, match='norm_eval=True without pretrained'):
        model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert outs[2][0].shape == (1, 3 * 81, 8, 8)


def test_bccd_recipe_builds():
    model = build_model('refinedet_vgg16_320_bccd.py')
    assert model.bbox_head.num_classes == 3
    assert n_params(model) < 3_000_000

