"""Assigners, match costs and samplers: hand cases, brute force and transformers parity."""
import itertools
import math
import statistics

import pytest
import torch
from mmengine.structures import InstanceData
from torchvision.ops import box_convert, box_iou, sigmoid_focal_loss

from toolbox.models.task_utils import (ApproxMaxIoUAssigner, AssignResult, ATSSAssigner,
                                       BBoxL1Cost,
                                       ClassificationCost, FocalLossCost, HungarianAssigner,
                                       IoUCost, MaxIoUAssigner, PseudoSampler, RandomSampler)
from toolbox.registry import MODELS, TASK_UTILS


def gts(bboxes, labels):
    return InstanceData(bboxes=torch.as_tensor(bboxes, dtype=torch.float32).reshape(-1, 4),
                        labels=torch.as_tensor(labels, dtype=torch.long))


def random_boxes(n, size=100.0, generator=None):
    """(n, 4) valid xyxy boxes inside a size x size image."""
    xy = torch.rand(n, 2, generator=generator) * size * 0.7
    wh = torch.rand(n, 2, generator=generator) * size * 0.3 + 1
    return torch.cat([xy, xy + wh], dim=1)


# ---------------------------------------------------------------- MaxIoUAssigner

def test_assign_wrt_overlaps_thresholds_and_low_quality():
    overlaps = torch.tensor([[0.6, 0.2, 0.25, 0.0],
                             [0.1, 0.2, 0.25, 0.4]])
    result = MaxIoUAssigner(0.5, 0.3).assign_wrt_overlaps(overlaps, torch.tensor([5, 9]))
    # pred 3 (0.4) is between the thresholds but is gt 1's best prior -> positive
    assert result.gt_inds.tolist() == [1, 0, 0, 2]
    assert result.labels.tolist() == [5, -1, -1, 9]
    torch.testing.assert_close(result.max_overlaps, torch.tensor([0.6, 0.2, 0.25, 0.4]))
    no_lq = MaxIoUAssigner(0.5, 0.3, match_low_quality=False)
    assert no_lq.assign_wrt_overlaps(overlaps, torch.tensor([5, 9])).gt_inds.tolist() == \
        [1, 0, 0, -1]


def test_low_quality_ties_later_gt_wins():
    overlaps = torch.tensor([[0.2, 0.2, 0.0],
                             [0.2, 0.1, 0.0]])
    labels = torch.tensor([1, 2])
    # both priors tie for gt 0's best; prior 0 is also gt 1's best and the later gt wins it
    all_ties = MaxIoUAssigner(0.5, 0.1, min_pos_iou=0.1)
    assert all_ties.assign_wrt_overlaps(overlaps, labels).gt_inds.tolist() == [2, 1, 0]
    first_only = MaxIoUAssigner(0.5, 0.1, min_pos_iou=0.1, gt_max_assign_all=False)
    assert first_only.assign_wrt_overlaps(overlaps, labels).gt_inds.tolist() == [2, -1, 0]
    too_low = MaxIoUAssigner(0.5, 0.1, min_pos_iou=0.3)
    assert too_low.assign_wrt_overlaps(overlaps, labels).gt_inds.tolist() == [-1, -1, 0]


def test_gt_without_overlap_claims_nothing():
    overlaps = torch.tensor([[0.0, 0.0], [0.7, 0.0]])
    result = MaxIoUAssigner(0.5, 0.4).assign_wrt_overlaps(overlaps, torch.tensor([0, 1]))
    assert result.gt_inds.tolist() == [2, 0]


def test_negative_iou_range():
    overlaps = torch.tensor([[0.0, 0.05, 0.2, 0.35, 0.8]])
    result = MaxIoUAssigner(0.5, (0.1, 0.3), match_low_quality=False).assign_wrt_overlaps(
        overlaps, torch.tensor([0]))
    assert result.gt_inds.tolist() == [-1, -1, 0, -1, 1]
    # a list (as configs give it) is the same range
    result = MaxIoUAssigner(0.5, [0.1, 0.3], match_low_quality=False).assign_wrt_overlaps(
        overlaps, torch.tensor([0]))
    assert result.gt_inds.tolist() == [-1, -1, 0, -1, 1]


def test_max_iou_no_priors():
    result = MaxIoUAssigner(0.5, 0.4).assign(InstanceData(priors=torch.zeros(0, 4)),
                                             gts([[0, 0, 10, 10]], [3]))
    assert result.num_gts == 1 and result.num_preds == 0
    assert result.gt_inds.shape == result.labels.shape == result.max_overlaps.shape == (0,)


def test_ignore_regions_keep_positives_and_apply_without_gt():
    priors = torch.tensor([[0., 0., 10., 10.],     # positive, inside the ignored region
                           [20., 20., 30., 30.],   # negative, inside -> ignored
                           [20., 20., 60., 60.],   # IoF 0.0625 with the region -> negative
                           [80., 80., 90., 90.]])  # negative
    ignore = InstanceData(bboxes=torch.tensor([[0., 0., 30., 30.]]))
    assigner = MaxIoUAssigner(0.5, 0.4, ignore_iof_thr=0.5)
    result = assigner.assign(InstanceData(priors=priors), gts([[0, 0, 10, 10]], [4]), ignore)
    assert result.gt_inds.tolist() == [1, -1, 0, 0]
    assert result.labels.tolist() == [4, -1, -1, -1]
    empty = assigner.assign(InstanceData(priors=priors), gts(torch.zeros(0, 4), []), ignore)
    assert empty.gt_inds.tolist() == [-1, -1, 0, 0]
    # ignore_iof_thr <= 0 switches ignoring off
    off = MaxIoUAssigner(0.5, 0.4).assign(InstanceData(priors=priors), gts(torch.zeros(0, 4), []),
                                          ignore)
    assert off.gt_inds.tolist() == [0, 0, 0, 0]


def test_assigners_build_from_registry():
    assigner = TASK_UTILS.build(dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4))
    assert isinstance(assigner, MaxIoUAssigner)
    approx = TASK_UTILS.build(dict(type='ApproxMaxIoUAssigner', pos_iou_thr=0.5,
                                   neg_iou_thr=0.4))
    assert isinstance(approx, ApproxMaxIoUAssigner)


# ---------------------------------------------------------------- ATSSAssigner

def atss_by_hand(priors, level_ids, gt_boxes, topk):
    """The ATSS rule written the slow way, one gt and one level at a time (Python floats)."""
    iou = box_iou(priors, gt_boxes)
    centres = ((priors[:, :2] + priors[:, 2:]) / 2).tolist()
    positive_for = [[] for _ in range(len(priors))]
    for g, (x1, y1, x2, y2) in enumerate(gt_boxes.tolist()):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        candidates = []
        for level in sorted(set(level_ids.tolist())):
            members = [i for i in range(len(priors)) if level_ids[i] == level]
            members.sort(key=lambda i: math.hypot(centres[i][0] - cx, centres[i][1] - cy))
            candidates += members[:topk]
        values = [iou[i, g].item() for i in candidates]
        threshold = statistics.mean(values) + statistics.stdev(values)
        for i in candidates:
            px, py = centres[i]
            if iou[i, g].item() >= threshold and \
                    min(px - x1, py - y1, x2 - px, y2 - py) > 0.01:
                positive_for[i].append(g)
    return [0 if not gs else 1 + max(gs, key=lambda g: (iou[i, g].item(), -g))
            for i, gs in enumerate(positive_for)]


def test_atss_hand_case_adaptive_threshold():
    # level 0: A, B nearest the gt (C is third, out of topk 2); level 1: E (the gt itself), F
    priors = torch.tensor([[0., 0., 10., 10.], [0., 0., 20., 20.], [10., 10., 20., 20.],
                           [0., 0., 12., 12.], [40., 40., 80., 80.]])
    level_ids = torch.tensor([0, 0, 0, 1, 1])
    gt = gts([[0, 0, 12, 12]], [4])
    result = ATSSAssigner(topk=2).assign(InstanceData(priors=priors, level_ids=level_ids), gt)
    # candidate IoUs A 100/144, B 144/400, E 1, F 0: threshold = mean + std = 0.9444, so only E
    threshold = statistics.mean([100 / 144, 0.36, 1.0, 0.0]) + \
        statistics.stdev([100 / 144, 0.36, 1.0, 0.0])
    assert threshold == pytest.approx(0.94437, abs=1e-5)
    assert result.gt_inds.tolist() == [0, 0, 0, 1, 0]
    assert result.labels.tolist() == [-1, -1, -1, 4, -1]
    torch.testing.assert_close(result.max_overlaps,
                               torch.tensor([100 / 144, 0.36, 4 / 240, 1.0, 0.0]))


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_atss_equals_the_rule_computed_by_hand(seed):
    g = torch.Generator().manual_seed(seed)
    priors = random_boxes(120, generator=g)
    level_ids = torch.randint(0, 3, (120,), generator=g)
    gt_boxes = random_boxes(6, generator=g)
    gt = gts(gt_boxes, torch.arange(6))
    result = ATSSAssigner(topk=5).assign(InstanceData(priors=priors, level_ids=level_ids), gt)
    expected = atss_by_hand(priors, level_ids, gt_boxes, topk=5)
    assert result.gt_inds.tolist() == expected
    assert sum(e > 0 for e in expected) >= 6  # the case exercises positives
    positive = result.gt_inds > 0
    assert result.labels[positive].tolist() == (result.gt_inds[positive] - 1).tolist()


def test_atss_empty_inputs_ignore_regions_and_missing_levels():
    priors = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.]])
    levels = torch.tensor([0, 0])
    ignore = InstanceData(bboxes=torch.tensor([[18., 18., 32., 32.]]))
    assigner = ATSSAssigner(topk=9, ignore_iof_thr=0.5)
    no_gt = assigner.assign(InstanceData(priors=priors, level_ids=levels), gts([], []), ignore)
    assert no_gt.gt_inds.tolist() == [0, -1] and no_gt.labels.tolist() == [-1, -1]
    with_gt = assigner.assign(InstanceData(priors=priors, level_ids=levels),
                              gts([[0, 0, 10, 10]], [2]), ignore)
    assert with_gt.gt_inds.tolist() == [1, -1]
    no_priors = assigner.assign(
        InstanceData(priors=torch.zeros(0, 4), level_ids=torch.zeros(0, dtype=torch.long)),
        gts([[0, 0, 10, 10]], [2]))
    assert no_priors.num_preds == 0
    with pytest.raises(ValueError, match='level_ids'):
        assigner.assign(InstanceData(priors=priors), gts([[0, 0, 10, 10]], [2]))


def test_retina_head_trains_with_the_atss_assigner():
    head = MODELS.build(dict(
        type='RetinaHead', num_classes=3, in_channels=8, feat_channels=8, stacked_convs=1,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                              ratios=[1.0], strides=[8, 16]),
        assigner=dict(type='ATSSAssigner', topk=9),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0), reg_decoded_bbox=True))
    feats = (torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4))
    gt = [gts([[4, 4, 30, 30], [30, 20, 60, 60]], [0, 2]), gts([], [])]
    losses = head.loss_by_feat(*head(feats), gt, [dict(img_shape=(64, 64))] * 2)
    assert torch.isfinite(losses['loss_cls']) and losses['loss_bbox'] > 0
    anchors = head.grid_priors(feats)
    targets = head.get_targets(anchors, gt, [dict(img_shape=(64, 64))] * 2,
                               num_level_priors=head.num_priors_per_level(feats))
    assert targets.pos_mask[0].sum() > 0 and targets.pos_mask[1].sum() == 0


# ---------------------------------------------------------------- ApproxMaxIoUAssigner

@pytest.mark.parametrize('seed', [0, 1, 2])
def test_approx_with_one_approx_equals_max_iou(seed):
    g = torch.Generator().manual_seed(seed)
    priors = random_boxes(40, generator=g)
    gt = gts(random_boxes(4, generator=g), torch.randint(0, 5, (4,), generator=g))
    ignore = InstanceData(bboxes=random_boxes(2, generator=g))
    kwargs = dict(pos_iou_thr=0.5, neg_iou_thr=0.3, min_pos_iou=0.1, ignore_iof_thr=0.4)
    expected = MaxIoUAssigner(**kwargs).assign(InstanceData(priors=priors), gt, ignore)
    got = ApproxMaxIoUAssigner(**kwargs).assign(InstanceData(priors=priors, approxs=priors), gt,
                                                ignore)
    assert got.gt_inds.tolist() == expected.gt_inds.tolist()
    assert got.labels.tolist() == expected.labels.tolist()
    torch.testing.assert_close(got.max_overlaps, expected.max_overlaps)


def test_best_approx_decides_not_the_square():
    squares = torch.tensor([[0., 0., 10., 10.], [30., 30., 40., 40.]])
    approxs = torch.tensor([[[0., 0., 10., 10.], [0., 0., 20., 10.]],     # 2nd matches the gt
                            [[30., 30., 40., 40.], [30., 30., 35., 35.]]])
    gt = gts([[0, 0, 20, 10]], [6])
    kwargs = dict(pos_iou_thr=0.7, neg_iou_thr=0.3, match_low_quality=False)
    # the square alone has IoU 0.5 with the gt: between the thresholds, ignored
    by_square = MaxIoUAssigner(**kwargs).assign(InstanceData(priors=squares), gt)
    assert by_square.gt_inds.tolist() == [-1, 0]
    assigner = ApproxMaxIoUAssigner(**kwargs)
    result = assigner.assign(InstanceData(priors=squares, approxs=approxs), gt)
    assert result.gt_inds.tolist() == [1, 0] and result.labels.tolist() == [6, -1]
    torch.testing.assert_close(result.max_overlaps, torch.tensor([1.0, 0.0]))
    # the flat location-major (N * k, 4) layout gives the same answer
    flat = assigner.assign(InstanceData(priors=squares, metainfo=dict(approxs=approxs.view(4, 4))),
                           gt)
    assert flat.gt_inds.tolist() == [1, 0]
    # ignore regions act on the squares: covering square 1 ignores it; covering only its 2nd
    # approx (a quarter of the square, IoF 0.25 < 0.5) does not
    ignoring = ApproxMaxIoUAssigner(ignore_iof_thr=0.5, **kwargs)
    pred = InstanceData(priors=squares, approxs=approxs)
    square_region = InstanceData(bboxes=torch.tensor([[30., 30., 40., 40.]]))
    assert ignoring.assign(pred, gt, square_region).gt_inds.tolist() == [1, -1]
    approx_region = InstanceData(bboxes=torch.tensor([[30., 30., 35., 35.]]))
    assert ignoring.assign(pred, gt, approx_region).gt_inds.tolist() == [1, 0]


def test_approx_empty_and_bad_shapes():
    assigner = ApproxMaxIoUAssigner(0.5, 0.4)
    squares = torch.tensor([[0., 0., 10., 10.], [30., 30., 40., 40.]])
    approxs = torch.cat([squares, squares + 1])  # k = 2, but not location-major: shape only
    no_gt = assigner.assign(InstanceData(priors=squares, metainfo=dict(approxs=approxs)),
                            gts(torch.zeros(0, 4), []))
    assert no_gt.gt_inds.tolist() == [0, 0]
    none = assigner.assign(InstanceData(priors=torch.zeros(0, 4),
                                        metainfo=dict(approxs=torch.zeros(0, 4))),
                           gts([[0, 0, 10, 10]], [1]))
    assert none.num_preds == 0
    with pytest.raises(ValueError, match='approxs'):
        assigner.assign(InstanceData(priors=squares, metainfo=dict(approxs=torch.zeros(3, 4))),
                        gts([[0, 0, 10, 10]], [1]))


# ---------------------------------------------------------------- match costs

def test_classification_cost_hand_case():
    preds = InstanceData(scores=torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]))
    cost = ClassificationCost(weight=2.0)(preds, gts(torch.zeros(2, 4), [1, 0]))
    torch.testing.assert_close(cost, -2 * torch.tensor([[0.5, 0.5], [0.25, 0.75]]))


def test_focal_loss_cost_hand_case_and_formula():
    preds = InstanceData(scores=torch.tensor([[0.0, math.log(3.0)], [math.log(3.0), 0.0]]))
    cost = FocalLossCost()(preds, gts(torch.zeros(2, 4), [0, 1]))

    def hand(p):
        return (-0.25 * (1 - p) ** 2 * math.log(p)) - (-0.75 * p ** 2 * math.log(1 - p))
    expected = torch.tensor([[hand(0.5), hand(0.75)], [hand(0.75), hand(0.5)]])
    torch.testing.assert_close(cost, expected)
    # random logits: positive minus negative sigmoid focal loss of torchvision
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=g) * 3
    labels = torch.tensor([4, 0, 0, 2])
    cost = FocalLossCost(weight=0.5, alpha=0.3, gamma=1.5)(InstanceData(scores=logits),
                                                            gts(torch.zeros(4, 4), labels))
    x = logits[:, labels]
    ref = (sigmoid_focal_loss(x, torch.ones_like(x), alpha=0.3, gamma=1.5)
           - sigmoid_focal_loss(x, torch.zeros_like(x), alpha=0.3, gamma=1.5))
    torch.testing.assert_close(cost, 0.5 * ref, atol=1e-5, rtol=1e-5)


def test_bbox_l1_cost_hand_case():
    preds = InstanceData(bboxes=torch.tensor([[0., 0., 100., 50.], [100., 50., 200., 100.]]))
    gt = gts([[0, 0, 100, 50], [0, 0, 200, 100]], [0, 0])
    meta = dict(img_shape=(100, 200))
    torch.testing.assert_close(BBoxL1Cost()(preds, gt, meta),
                               torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
    torch.testing.assert_close(BBoxL1Cost(weight=5.0, box_format='xywh')(preds, gt, meta),
                               5 * torch.tensor([[0.0, 1.5], [1.0, 1.5]]))
    with pytest.raises(ValueError, match='img_shape'):
        BBoxL1Cost()(preds, gt)


def test_iou_cost_hand_case():
    preds = InstanceData(bboxes=torch.tensor([[0., 0., 10., 10.], [20., 0., 30., 10.]]))
    gt = gts([[0, 0, 10, 10], [5, 0, 15, 10]], [0, 0])
    torch.testing.assert_close(IoUCost(iou_mode='iou')(preds, gt),
                               -torch.tensor([[1.0, 1 / 3], [0.0, 0.0]]))
    torch.testing.assert_close(IoUCost(weight=2.0)(preds, gt),
                               -2 * torch.tensor([[1.0, 1 / 3], [-1 / 3, -0.2]]))


# ---------------------------------------------------------------- HungarianAssigner

DETR_COSTS = [dict(type='ClassificationCost', weight=1.0),
              dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
              dict(type='IoUCost', iou_mode='giou', weight=2.0)]


def random_problem(num_preds, num_gts, num_classes, seed, img_shape=(60, 90)):
    g = torch.Generator().manual_seed(seed)
    h, w = img_shape
    scale = torch.tensor([w, h, w, h], dtype=torch.float32) / 100
    preds = InstanceData(scores=torch.randn(num_preds, num_classes + 1, generator=g),
                         bboxes=random_boxes(num_preds, generator=g) * scale)
    gt = gts(random_boxes(num_gts, generator=g) * scale,
             torch.randint(0, num_classes, (num_gts,), generator=g))
    return preds, gt, dict(img_shape=img_shape)


@pytest.mark.parametrize('num_preds,num_gts,seed', [(5, 3, 0), (5, 3, 1), (5, 3, 2), (4, 4, 3),
                                                    (3, 5, 4), (2, 4, 5)])
def test_hungarian_equals_brute_force(num_preds, num_gts, seed):
    preds, gt, meta = random_problem(num_preds, num_gts, 4, seed)
    assigner = HungarianAssigner(DETR_COSTS)
    cost = sum(c(preds, gt, meta) for c in assigner.match_costs)  # (N, G)
    # every injective matching of the smaller side into the larger one
    best, best_pairs = math.inf, None
    if num_gts <= num_preds:
        for perm in itertools.permutations(range(num_preds), num_gts):
            total = sum(cost[p, g].item() for g, p in enumerate(perm))
            if total < best:
                best, best_pairs = total, {(p, g) for g, p in enumerate(perm)}
    else:
        for perm in itertools.permutations(range(num_gts), num_preds):
            total = sum(cost[p, g].item() for p, g in enumerate(perm))
            if total < best:
                best, best_pairs = total, set(enumerate(perm))
    result = assigner.assign(preds, gt, img_meta=meta)
    pos = result.gt_inds > 0
    pairs = set(zip(pos.nonzero().flatten().tolist(), (result.gt_inds[pos] - 1).tolist()))
    assert pairs == best_pairs
    assert int(pos.sum()) == min(num_preds, num_gts)
    assert result.gt_inds[~pos].eq(0).all()  # unmatched predictions are negative, none ignored
    assert result.labels[pos].tolist() == gt.labels[result.gt_inds[pos] - 1].tolist()
    assert result.labels[~pos].eq(-1).all() and result.max_overlaps.eq(0).all()


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_hungarian_parity_with_transformers_detr_matcher(seed):
    from transformers.loss.loss_for_object_detection import HungarianMatcher
    num_preds, num_gts, img_shape = 30, 9, (480, 640)
    preds, gt, meta = random_problem(num_preds, num_gts, 6, seed, img_shape)
    h, w = img_shape
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    outputs = dict(logits=preds.scores[None],
                   pred_boxes=box_convert(preds.bboxes / scale, 'xyxy', 'cxcywh')[None])
    targets = [dict(class_labels=gt.labels, boxes=box_convert(gt.bboxes / scale, 'xyxy',
                                                              'cxcywh'))]
    (ref_pred, ref_gt), = HungarianMatcher(class_cost=1, bbox_cost=5, giou_cost=2)(outputs,
                                                                                    targets)
    result = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=DETR_COSTS)).assign(
        preds, gt, img_meta=meta)
    pos = result.gt_inds > 0
    pairs = set(zip(pos.nonzero().flatten().tolist(), (result.gt_inds[pos] - 1).tolist()))
    assert pairs == set(zip(ref_pred.tolist(), ref_gt.tolist()))
    assert len(pairs) == num_gts


def test_hungarian_focal_cost_config():
    preds, gt, meta = random_problem(6, 2, 3, seed=7)
    preds.scores = preds.scores[:, :3]  # sigmoid classifiers have no background column
    assigner = HungarianAssigner([dict(type='FocalLossCost', weight=2.0),
                                  dict(type='BBoxL1Cost', weight=5.0),
                                  dict(type='IoUCost', weight=2.0)])
    cost = (FocalLossCost(weight=2.0)(preds, gt) + BBoxL1Cost(weight=5.0)(preds, gt, meta)
            + IoUCost(weight=2.0)(preds, gt))
    pairs = min(itertools.permutations(range(6), 2),
                key=lambda perm: cost[perm[0], 0] + cost[perm[1], 1])
    result = assigner.assign(preds, gt, img_meta=meta)
    assert [result.gt_inds[p].item() for p in pairs] == [1, 2]
    assert int((result.gt_inds > 0).sum()) == 2


def test_hungarian_empty_inputs():
    assigner = HungarianAssigner(DETR_COSTS)
    preds, _, meta = random_problem(4, 1, 3, seed=0)
    no_gt = assigner.assign(preds, gts(torch.zeros(0, 4), []), img_meta=meta)
    assert no_gt.num_gts == 0 and no_gt.gt_inds.tolist() == [0, 0, 0, 0]
    assert no_gt.labels.tolist() == [-1, -1, -1, -1]
    no_pred = assigner.assign(InstanceData(scores=torch.zeros(0, 4), bboxes=torch.zeros(0, 4)),
                              gts([[0, 0, 10, 10]], [1]), img_meta=meta)
    assert no_pred.num_gts == 1 and no_pred.num_preds == 0


def test_hungarian_non_finite_prediction_is_matched_last():
    preds, gt, meta = random_problem(3, 2, 3, seed=1)
    preds.bboxes[0] = float('nan')
    result = HungarianAssigner(DETR_COSTS).assign(preds, gt, img_meta=meta)
    assert result.gt_inds[0].item() == 0 and sorted(result.gt_inds[1:].tolist()) == [1, 2]


# ---------------------------------------------------------------- samplers

def assignment(gt_inds, gt_labels):
    gt_inds = torch.as_tensor(gt_inds, dtype=torch.long)
    labels = torch.full_like(gt_inds, -1)
    labels[gt_inds > 0] = torch.as_tensor(gt_labels)[gt_inds[gt_inds > 0] - 1]
    return AssignResult(len(gt_labels), gt_inds, (gt_inds > 0).float() * 0.6, labels)


def test_pseudo_sampler_takes_everything():
    priors = torch.arange(20, dtype=torch.float32).view(5, 4)
    gt = gts([[0, 0, 4, 4], [1, 1, 5, 5]], [3, 8])
    result = PseudoSampler().sample(assignment([1, 0, -1, 2, 0], [3, 8]),
                                    InstanceData(priors=priors), gt)
    assert result.pos_inds.tolist() == [0, 3] and result.neg_inds.tolist() == [1, 4]
    assert result.num_pos == 2 and result.num_neg == 2 and result.num_gts == 2
    assert result.pos_assigned_gt_inds.tolist() == [0, 1]
    assert result.pos_gt_labels.tolist() == [3, 8]
    torch.testing.assert_close(result.pos_gt_bboxes, gt.bboxes)
    torch.testing.assert_close(result.pos_priors, priors[[0, 3]])
    torch.testing.assert_close(result.neg_priors, priors[[1, 4]])
    assert result.priors is priors and not result.pos_is_gt.any()


def big_assignment(num_pos, num_neg, num_ignored, num_gts=3):
    """num_pos positives (gts cycled), num_neg negatives, num_ignored ignored, shuffled."""
    gt_inds = torch.cat([torch.arange(num_pos) % num_gts + 1,
                         torch.zeros(num_neg, dtype=torch.long), torch.full((num_ignored,), -1)])
    gt_inds = gt_inds[torch.randperm(gt_inds.numel(), generator=torch.Generator().manual_seed(0))]
    return assignment(gt_inds, list(range(10, 10 + num_gts)))


def test_random_sampler_counts_and_disjoint():
    torch.manual_seed(0)
    assign = big_assignment(300, 600, 100)
    priors = InstanceData(priors=random_boxes(1000))
    gt = gts(random_boxes(3), [10, 11, 12])
    result = RandomSampler(256, 0.25, add_gt_as_proposals=False).sample(assign, priors, gt)
    assert result.num_pos == 64 and result.num_neg == 192
    pos, neg = result.pos_inds, result.neg_inds
    assert pos.unique().numel() == 64 and neg.unique().numel() == 192
    assert not set(pos.tolist()) & set(neg.tolist())
    assert assign.gt_inds[pos].gt(0).all() and assign.gt_inds[neg].eq(0).all()
    assert pos.tolist() == sorted(pos.tolist())
    assert result.pos_gt_labels.tolist() == (assign.gt_inds[pos] + 9).tolist()
    torch.testing.assert_close(result.pos_gt_bboxes, gt.bboxes[assign.gt_inds[pos] - 1])


def test_random_sampler_few_positives_and_neg_pos_ub():
    assign = big_assignment(10, 600, 0)
    priors = InstanceData(priors=random_boxes(610))
    gt = gts(random_boxes(3), [10, 11, 12])
    filled = RandomSampler(256, 0.5, add_gt_as_proposals=False).sample(assign, priors, gt)
    assert filled.num_pos == 10 and filled.num_neg == 246
    capped = RandomSampler(256, 0.5, neg_pos_ub=3, add_gt_as_proposals=False).sample(
        assign, priors, gt)
    assert capped.num_pos == 10 and capped.num_neg == 30
    no_pos = RandomSampler(256, 0.5, neg_pos_ub=3, add_gt_as_proposals=False).sample(
        big_assignment(0, 600, 0), priors, gt)
    assert no_pos.num_pos == 0 and no_pos.num_neg == 3


def test_random_sampler_adds_gts_as_proposals():
    priors = random_boxes(8)
    gt = gts(random_boxes(3), [10, 11, 12])
    assign = assignment([0, 2, 0, -1, 0, 0, 1, 0], [10, 11, 12])
    result = RandomSampler(512, 0.25).sample(assign, InstanceData(priors=priors), gt)
    assert result.priors.shape == (11, 4)
    torch.testing.assert_close(result.priors[:3], gt.bboxes)
    torch.testing.assert_close(result.priors[3:], priors)
    assert result.pos_inds.tolist() == [0, 1, 2, 4, 9]
    assert result.pos_is_gt.tolist() == [True, True, True, False, False]
    assert result.pos_assigned_gt_inds.tolist() == [0, 1, 2, 1, 0]
    assert result.pos_gt_labels.tolist() == [10, 11, 12, 11, 10]
    assert result.neg_inds.tolist() == [3, 5, 7, 8, 10]
    assert assign.num_preds == 8  # the caller's assignment is not changed


def test_random_sampler_reproducible_under_seed():
    assign = big_assignment(300, 600, 100)
    priors = InstanceData(priors=random_boxes(1000))
    gt = gts(random_boxes(3), [10, 11, 12])
    sampler = RandomSampler(256, 0.25, add_gt_as_proposals=False)
    torch.manual_seed(123)
    first = sampler.sample(assign, priors, gt)
    torch.manual_seed(123)
    second = sampler.sample(assign, priors, gt)
    third = sampler.sample(assign, priors, gt)
    assert first.pos_inds.tolist() == second.pos_inds.tolist()
    assert first.neg_inds.tolist() == second.neg_inds.tolist()
    assert first.pos_inds.tolist() != third.pos_inds.tolist()


def test_random_sampler_empty_gt():
    torch.manual_seed(0)
    assign = MaxIoUAssigner(0.5, 0.4).assign(InstanceData(priors=random_boxes(300)),
                                             gts(torch.zeros(0, 4), []))
    result = TASK_UTILS.build(dict(type='RandomSampler', num=256, pos_fraction=0.25)).sample(
        assign, InstanceData(priors=random_boxes(300)), gts(torch.zeros(0, 4), []))
    assert result.num_pos == 0 and result.num_neg == 256 and result.num_gts == 0
    assert result.pos_gt_bboxes.shape == (0, 4) and result.priors.shape == (300, 4)
