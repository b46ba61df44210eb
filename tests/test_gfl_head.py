"""GFL: the quality and distribution focal losses by hand, the distance coder and paired IoU,
GFLHead's three losses against their formulas written out from the assignment, empty images,
and the test path decoding the expected side distances."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torchvision.ops import generalized_box_iou

from toolbox.engine import load_config
from toolbox.models.task_utils import DistancePointBBoxCoder
from toolbox.registry import MODELS
from toolbox.structures import box_iou, paired_box_iou
from toolbox_plugins.dense_heads.gfl_head import distribution_expectation
from toolbox_plugins.losses.focal_loss import distribution_focal_loss, quality_focal_loss

from .conftest import REPO_ROOT

HEAD = dict(type='GFLHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                  scales_per_octave=1, ratios=[1.0], strides=[8, 16]))
METAS = [dict(img_shape=(64, 64), pad_shape=(64, 64))]


def _feats(batch=1):
    torch.manual_seed(0)
    return [torch.randn(batch, 8, 8, 8), torch.randn(batch, 8, 4, 4)]


def _bce(x, y):
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_quality_focal_loss_by_hand():
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    labels = torch.tensor([0, 2])  # prior 0: class 0 with IoU 0.6; prior 1: background
    quality = torch.tensor([0.6, 0.9])  # the background prior's value is not read
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [_bce(0.5, 0.6) * (0.6 - sig(0.5)) ** 2 + _bce(-1.0, 0) * sig(-1.0) ** 2,
                _bce(2.0, 0) * sig(2.0) ** 2 + _bce(0.0, 0) * sig(0.0) ** 2]
    loss = quality_focal_loss(logits, labels, quality, beta=2.0)
    assert loss.tolist() == pytest.approx(expected, rel=1e-6)
    # a perfect prediction of the soft target costs nothing on that class
    exact = torch.tensor([[math.log(0.6 / 0.4), -30.0]])
    assert quality_focal_loss(exact, labels[:1], quality[:1]).item() == pytest.approx(0, abs=1e-9)
    wrapped = MODELS.build(dict(type='QualityFocalLoss', loss_weight=2.0))
    value = wrapped(logits, (labels, quality), weight=torch.tensor([1.0, 0.0]), avg_factor=4.0)
    assert value.item() == pytest.approx(2.0 * expected[0] / 4.0, rel=1e-6)


def test_distribution_focal_loss_by_hand():
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.5], [3.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([1.3, 0.0])
    log_p = F.log_softmax(logits, dim=1)
    expected = [-(0.7 * log_p[0, 1] + 0.3 * log_p[0, 2]).item(), -log_p[1, 0].item()]
    assert distribution_focal_loss(logits, target).tolist() == pytest.approx(expected, rel=1e-6)
    wrapped = MODELS.build(dict(type='DistributionFocalLoss', loss_weight=0.25))
    assert wrapped(logits, target, avg_factor=2.0).item() == pytest.approx(
        0.25 * sum(expected) / 2, rel=1e-6)


def test_distribution_expectation():
    assert distribution_expectation(torch.zeros(17)).item() == pytest.approx(8.0)
    peaked = torch.full((2, 5), -50.0)
    peaked[0, 3] = 50.0
    peaked[1, 1] = peaked[1, 2] = 50.0
    assert distribution_expectation(peaked).tolist() == pytest.approx([3.0, 1.5])


def test_distance_coder_round_trip_and_priors():
    coder = DistancePointBBoxCoder()
    points = torch.tensor([[10.0, 20.0], [5.0, 5.0]])
    boxes = torch.tensor([[4.0, 12.0, 30.0, 21.0], [0.0, 0.0, 8.0, 6.0]])
    distances = coder.encode(points, boxes)
    assert distances.tolist() == [[6.0, 8.0, 20.0, 1.0], [5.0, 5.0, 3.0, 1.0]]
    assert torch.equal(coder.decode(points, distances), boxes)
    # xyxy priors stand for their centres; max_dis clamps to [0, max_dis - eps]
    priors = torch.tensor([[6.0, 16.0, 14.0, 24.0], [3.0, 3.0, 7.0, 7.0]])
    assert torch.equal(coder.encode(priors, boxes), distances)
    assert coder.encode(points, boxes, max_dis=4.0, eps=0.5).tolist() == [
        [3.5, 3.5, 3.5, 1.0], [3.5, 3.5, 3.0, 1.0]]
    assert coder.decode(points, distances, max_shape=(16, 25))[0].tolist() == [
        4.0, 12.0, 25.0, 16.0]


def test_paired_box_iou_is_the_diagonal_of_box_iou():
    torch.manual_seed(0)
    a = torch.rand(6, 2) * 20
    b = torch.rand(6, 2) * 20
    boxes1 = torch.cat([a, a + torch.rand(6, 2) * 10 + 1], 1)
    boxes2 = torch.cat([b, b + torch.rand(6, 2) * 10 + 1], 1)
    assert torch.allclose(paired_box_iou(boxes1, boxes2), box_iou(boxes1, boxes2).diagonal())
    assert np.allclose(paired_box_iou(boxes1.numpy(), boxes2.numpy()),
                       box_iou(boxes1, boxes2).diagonal().numpy())
    degenerate = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert paired_box_iou(degenerate, degenerate).tolist() == [0.0]
    assert paired_box_iou(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0,)


def test_losses_equal_their_formulas_on_the_positives():
    head = MODELS.build(HEAD)
    outs = head(_feats())
    gt = InstanceData(bboxes=torch.tensor([[4., 6, 30, 40], [28, 20, 60, 52]]),
                      labels=torch.tensor([0, 2]))
    losses = head.loss_by_feat(*outs, [gt], METAS)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_dfl'}

    # the same quantities written out from the assignment
    anchors = head.grid_priors(outs[0])
    targets = head.get_targets(anchors, [gt], METAS,
                               num_level_priors=head.num_priors_per_level(outs[0]))
    pos = targets.pos_mask[0]
    num_pos = int(pos.sum())
    assert num_pos > 0
    strides = torch.tensor([8.0] * 64 + [16.0] * 16)[pos][:, None]
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2)[pos]
    gt_boxes = targets.bbox_targets[0][pos]
    logits = head.flatten_levels(outs[1], 68)[0][pos].reshape(num_pos, 4, 17)
    sides = (F.softmax(logits, -1) * torch.arange(17.0)).sum(-1) * strides
    boxes = torch.cat([centres - sides[:, :2], centres + sides[:, 2:]], 1)
    iou = box_iou(boxes, gt_boxes).diagonal().detach()
    cls = head.flatten_levels(outs[0], 3)[0]
    quality = torch.zeros(len(cls), 3)
    quality[pos.nonzero()[:, 0], targets.labels[0][pos]] = iou
    prob = cls.sigmoid()
    is_target = quality > 0
    modulator = torch.where(is_target, (quality - prob).abs(), prob) ** 2
    expected_cls = (F.binary_cross_entropy_with_logits(cls, quality, reduction='none')
                    * modulator).sum() / num_pos
    weights = prob[pos].max(1).values.detach()
    giou = 1 - torch.diag(generalized_box_iou(boxes, gt_boxes))
    expected_bbox = 2.0 * (weights * giou).sum() / max(weights.sum().item(), 1.0)
    side_targets = torch.cat([centres - gt_boxes[:, :2], gt_boxes[:, 2:] - centres], 1)
    side_targets = (side_targets / strides).clamp(0, 16 - 0.01)
    low = side_targets.floor()
    log_p = F.log_softmax(logits, -1)
    dfl = -((low + 1 - side_targets) * log_p.gather(-1, low.long()[..., None])[..., 0]
            + (side_targets - low) * log_p.gather(-1, low.long()[..., None] + 1)[..., 0])
    expected_dfl = 0.25 * (weights[:, None] * dfl).sum() / (4 * max(weights.sum().item(), 1.0))
    assert losses['loss_cls'].item() == pytest.approx(expected_cls.item(), rel=1e-5)
    assert losses['loss_bbox'].item() == pytest.approx(expected_bbox.item(), rel=1e-5)
    assert losses['loss_dfl'].item() == pytest.approx(expected_dfl.item(), rel=1e-5)
    sum(losses.values()).backward()
    assert head.retina_reg.weight.grad.abs().sum() > 0
    assert all(scale.scale.grad is not None for scale in head.scales)


def test_image_without_objects_gives_zero_box_losses_with_gradients():
    head = MODELS.build(HEAD)
    outs = head(_feats())
    empty = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    losses = head.loss_by_feat(*outs, [empty], METAS)
    assert losses['loss_bbox'].item() == 0.0 and losses['loss_dfl'].item() == 0.0
    assert losses['loss_cls'].item() > 0
    sum(losses.values()).backward()
    assert head.retina_reg.weight.grad is not None  # connected (DDP)


def test_predict_decodes_the_expected_side_distances():
    head = MODELS.build(dict(HEAD, test_cfg=dict(score_thr=0.4, iou_threshold=0.5,
                                                 max_per_img=200, nms_pre=1000)))
    with torch.no_grad():
        for conv in (head.retina_cls, head.retina_reg):
            conv.weight.zero_()
        head.retina_cls.bias.copy_(torch.tensor([0.0, -5.0, -5.0]))  # class 0: p = 0.5
        bias = torch.full((4, 17), -30.0)
        bias[:, 2] = 30.0  # every side 2 strides
        head.retina_reg.bias.copy_(bias.reshape(-1))
    result = head.predict_by_feat(*head(_feats()), METAS, cfg=dict(iou_threshold=1.0))[0]
    assert torch.allclose(result.scores, torch.full_like(result.scores, 0.5))
    # stride 8 cell (3, 4): centre (32, 24) -> (16, 8, 48, 40); boxes are clipped to 64 x 64
    assert [16.0, 8.0, 48.0, 40.0] in result.bboxes.tolist()
    # stride 16 cell (1, 1): centre (16, 16) -> (-16, -16, 48, 48) clipped to (0, 0, 48, 48)
    assert [0.0, 0.0, 48.0, 48.0] in result.bboxes.tolist()


def test_gfl_config_and_its_parameter_count():
    cfg = load_config(str(REPO_ROOT / 'configs/gfl_r18_fpn_512_12e_bccd.py'))
    model = MODELS.build(cfg.model)
    assert type(model.bbox_head).__name__ == 'GFLHead'
    base = MODELS.build(load_config(
        str(REPO_ROOT / 'configs/retinanet_r18_fpn_512-atss_12e_bccd.py')).model)
    extra = sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in base.parameters())
    # box conv 128 -> 4 x 17 bins instead of 4 deltas (one anchor), plus 4 level scales
    assert extra == (128 * 9 * 68 + 68) - (128 * 9 * 4 + 4) + 4


def test_head_refuses_a_delta_coder():
    with pytest.raises(ValueError, match='DistancePointBBoxCoder'):
        MODELS.build(dict(HEAD, bbox_coder=dict(type='DeltaXYWHBoxCoder')))
