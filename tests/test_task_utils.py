"""Anchor generator, box coder, max-IoU assigner and post-processing on hand-checkable cases."""
import math

import torch
from mmengine.structures import InstanceData

from toolbox.models.task_utils import (AnchorGenerator, DeltaXYWHBoxCoder, MaxIoUAssigner,
                                       nms_instances, select_topk_candidates)


def test_retinanet_anchor_sizes_and_layout():
    gen = AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0, 2.0], octave_base_scale=4,
                          scales_per_octave=3)
    assert gen.num_base_anchors == [9, 9]
    base = gen.base_anchors[0]
    # ratio 1 (index 1), scale 4 * 2^0: a 32 x 32 square centred on 0
    torch.testing.assert_close(base[3], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    # ratio 0.5 (h / w), scale 4: w = 32 * sqrt(2), h = 32 / sqrt(2)
    w, h = 32 * math.sqrt(2), 32 / math.sqrt(2)
    torch.testing.assert_close(base[0], torch.tensor([-w / 2, -h / 2, w / 2, h / 2]))
    anchors = gen.grid_anchors([(2, 3), (1, 2)])
    assert [a.shape for a in anchors] == [(2 * 3 * 9, 4), (1 * 2 * 9, 4)]
    # cell (y=1, x=2) of level 0, anchor 3: centre (16, 8)
    torch.testing.assert_close(anchors[0][(1 * 3 + 2) * 9 + 3], torch.tensor([0., -8., 32., 24.]))


def test_center_offset_half_for_ssd_style_anchors():
    gen = AnchorGenerator(strides=[8], ratios=[1.0], scales=[4.0], center_offset=0.5)
    torch.testing.assert_close(gen.grid_anchors([(1, 1)])[0],
                               torch.tensor([[-12., -12., 20., 20.]]))


def test_coder_encode_decode_round_trip_and_hand_values():
    coder = DeltaXYWHBoxCoder(stds=(0.1, 0.1, 0.2, 0.2))
    anchors = torch.tensor([[0., 0., 10., 10.]])
    gt = torch.tensor([[5., 0., 25., 10.]])
    deltas = coder.encode(anchors, gt)
    # centre moves 10 px = 1 width -> 1 / 0.1; width doubles -> log 2 / 0.2
    torch.testing.assert_close(deltas, torch.tensor([[10.0, 0.0, math.log(2) / 0.2, 0.0]]))
    torch.testing.assert_close(coder.decode(anchors, deltas), gt)
    clipped = coder.decode(anchors, deltas, max_shape=(8, 20))
    torch.testing.assert_close(clipped, torch.tensor([[5., 0., 20., 8.]]))


def test_max_iou_assigner_thresholds_low_quality_and_ignore():
    anchors = torch.tensor([[0., 0., 10., 10.],    # IoU 1 with gt0
                            [0., 0., 10., 20.],    # IoU 0.5 with gt0 -> positive
                            [5., 0., 15., 10.],    # IoU 1/3 with gt0 -> ignored (0.3..0.5)
                            [50., 50., 60., 60.],  # IoU 0 -> negative
                            [100., 100., 104., 104.],  # best anchor of gt1 (IoU 0.16)
                            [200., 200., 210., 210.]])  # inside the ignored region
    gt = torch.tensor([[0., 0., 10., 10.], [100., 100., 110., 110.]])
    labels = torch.tensor([3, 7])
    assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.3, min_pos_iou=0.0,
                              ignore_iof_thr=0.5)
    result = assigner.assign(InstanceData(priors=anchors), InstanceData(bboxes=gt, labels=labels),
                             InstanceData(bboxes=torch.tensor([[190., 190., 220., 220.]])))
    assert result.gt_inds.tolist() == [1, 1, -1, 0, 2, -1]
    assert result.labels.tolist() == [3, 3, -1, -1, 7, -1]
    assert result.num_gts == 2 and result.num_preds == 6
    torch.testing.assert_close(result.max_overlaps,
                               torch.tensor([1.0, 0.5, 1 / 3, 0.0, 0.16, 0.0]))


def test_assigner_without_gt_makes_everything_negative():
    priors = torch.rand(5, 4) * 10 + torch.tensor([0, 0, 10, 10])
    result = MaxIoUAssigner(0.5, 0.4).assign(
        InstanceData(priors=priors),
        InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long)))
    assert result.neg_mask.all() and result.labels.eq(-1).all()
    assert result.num_gts == 0 and result.max_overlaps.eq(0).all()


def test_topk_and_class_aware_nms():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.01, 0.02]])
    s, idx, lab = select_topk_candidates(scores, score_thr=0.05, topk=3)
    assert s.tolist() == [0.8999999761581421, 0.800000011920929, 0.699999988079071]
    assert idx.tolist() == [0, 1, 1] and lab.tolist() == [0, 0, 1]
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 0., 11., 10.], [1., 0., 11., 10.]])
    kept = nms_instances(boxes, s, lab, iou_threshold=0.5, max_per_img=10)
    # the two class-0 boxes overlap (IoU 0.82): one survives; the class-1 box is kept
    assert kept.labels.tolist() == [0, 1] and kept.scores.tolist() == [s[0].item(), s[2].item()]
