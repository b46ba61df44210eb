"""ATSSHead: centre-ness targets by hand, the centre-ness-weighted box loss and the BCE
centre-ness loss against their formulas, empty images, and the test score
``class probability x centre-ness probability`` with the threshold read on the class alone."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torchvision.ops import generalized_box_iou

from toolbox.engine import load_config
from toolbox.registry import MODELS
from toolbox_plugins.dense_heads.atss_head import centerness_targets

from .conftest import REPO_ROOT

HEAD = dict(type='ATSSHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                  scales_per_octave=1, ratios=[1.0], strides=[8, 16]),
            loss_bbox=dict(type='GIoULoss', loss_weight=2.0), reg_decoded_bbox=True)
METAS = [dict(img_shape=(64, 64), pad_shape=(64, 64))]


def _feats(batch=1):
    torch.manual_seed(0)
    return [torch.randn(batch, 8, 8, 8), torch.randn(batch, 8, 4, 4)]


def test_centerness_targets_by_hand():
    # prior centres (30, 40), (35, 45), (10, 45) in the box (10, 20, 60, 70):
    # l, t, r, b = 20, 20, 30, 30 -> sqrt(2/3 * 2/3) = 2/3; the centre -> 1; the left side -> 0
    priors = torch.tensor([[26., 36, 34, 44], [31, 41, 39, 49], [6, 41, 14, 49]])
    gt = torch.tensor([[10., 20, 60, 70]]).expand(3, 4)
    assert torch.allclose(centerness_targets(priors, gt), torch.tensor([2 / 3, 1.0, 0.0]))
    # l, t, r, b = 5, 10, 45, 40 -> sqrt(5/45 * 10/40)
    value = centerness_targets(torch.tensor([[13., 28, 17, 32]]), gt[:1])
    assert value.item() == pytest.approx(math.sqrt(5 / 45 * 10 / 40), rel=1e-6)


def test_losses_equal_their_formulas_on_the_positives():
    head = MODELS.build(HEAD)
    outs = head(_feats())
    gt = InstanceData(bboxes=torch.tensor([[4., 6, 30, 40], [28, 20, 60, 52]]),
                      labels=torch.tensor([0, 2]))
    losses = head.loss_by_feat(*outs, [gt], METAS)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_centerness'}

    # the same quantities written out from the assignment
    anchors = head.grid_priors(outs[0])
    targets = head.get_targets(anchors, [gt], METAS,
                               num_level_priors=head.num_priors_per_level(outs[0]))
    pos = targets.pos_mask[0]
    num_pos = int(pos.sum())
    assert num_pos > 0
    gt_boxes = targets.bbox_targets[0][pos]
    pos_anchors = anchors[pos]
    ctr = centerness_targets(pos_anchors, gt_boxes)
    deltas = head.flatten_levels(outs[1], 4)[0][pos]
    boxes = head.bbox_coder.decode(pos_anchors, deltas)
    giou = 1 - torch.diag(generalized_box_iou(boxes, gt_boxes))
    expected_bbox = 2.0 * (ctr * giou).sum() / max(ctr.sum().item(), 1.0)
    logits = head.flatten_levels(outs[2], 1)[0, :, 0][pos]
    expected_ctr = F.binary_cross_entropy_with_logits(logits, ctr, reduction='sum') / num_pos
    assert losses['loss_bbox'].item() == pytest.approx(expected_bbox.item(), rel=1e-5)
    assert losses['loss_centerness'].item() == pytest.approx(expected_ctr.item(), rel=1e-5)
    sum(losses.values()).backward()
    assert head.atss_centerness.weight.grad.abs().sum() > 0
    assert all(scale.scale.grad is not None for scale in head.scales)


def test_image_without_objects_gives_zero_box_and_centerness_losses_with_gradients():
    head = MODELS.build(HEAD)
    outs = head(_feats())
    empty = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    losses = head.loss_by_feat(*outs, [empty], METAS)
    assert losses['loss_bbox'].item() == 0.0 and losses['loss_centerness'].item() == 0.0
    assert losses['loss_cls'].item() > 0
    sum(losses.values()).backward()
    assert head.atss_centerness.weight.grad is not None  # connected (DDP)


def test_test_score_is_class_times_centerness_with_threshold_on_class():
    head = MODELS.build(dict(HEAD, test_cfg=dict(score_thr=0.4, iou_threshold=0.5)))
    with torch.no_grad():
        for conv in (head.retina_cls, head.retina_reg, head.atss_centerness):
            conv.weight.zero_()
        head.retina_cls.bias.copy_(torch.tensor([0.0, -5.0, -5.0]))  # class 0: p = 0.5
        head.atss_centerness.bias.fill_(math.log(0.25 / 0.75))  # centre-ness 0.25
    result = head.predict_by_feat(*head(_feats()), METAS)[0]
    # 0.5 passes the 0.4 threshold; the product 0.125 would not
    assert len(result) > 0
    assert torch.allclose(result.scores, torch.full_like(result.scores, 0.125))
    assert (result.labels == 0).all()


def test_atss_config_builds_the_full_head():
    cfg = load_config(str(REPO_ROOT / 'configs/atss_r18_fpn_512_12e_bccd.py'))
    model = MODELS.build(cfg.model)
    head = model.bbox_head
    assert type(head).__name__ == 'ATSSHead'
    assert type(head.assigner).__name__ == 'ATSSAssigner'
    # RetinaNet R18 512 px ATSS head + one 3x3 conv (128 -> 1 anchor) + 4 level scales
    base = MODELS.build(load_config(
        str(REPO_ROOT / 'configs/retinanet_r18_fpn_512-atss_12e_bccd.py')).model)
    extra = sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in base.parameters())
    assert extra == 128 * 9 + 1 + 4


def test_forward_names_a_level_count_mismatch():
    head = MODELS.build(HEAD)
    with pytest.raises(ValueError, match='scales for 2 levels, got 1 maps'):
        head(_feats()[:1])
