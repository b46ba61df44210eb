"""Guided Anchoring (GA-RPN, GA-RetinaNet) and the bounded IoU loss: hand-computed targets and
losses, deformable adaption vs a plain conv, masked vs dense inference, parameter counts."""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.structures import InstanceData

from toolbox.registry import MODELS
from toolbox.structures import DataSample
from toolbox_plugins.dense_heads.guided_anchor_head import (FeatureAdaption, calc_region,
                                                            masked_conv2d)
from toolbox_plugins.losses.box_losses import bounded_iou_loss


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: thread hand-offs would dominate the run time on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def smooth(x, beta=0.2):
    return 0.5 * x * x / beta if x < beta else x - 0.5 * beta


# ----------------------------------------------------------------------- bounded IoU loss
def test_bounded_iou_loss_hand_values():
    pred = torch.tensor([[0., 0., 10., 10.], [0., 0., 20., 10.]], requires_grad=True)
    target = torch.tensor([[1., 0., 11., 10.], [0., 0., 10., 10.]], requires_grad=True)
    loss = bounded_iou_loss(pred, target)
    eps = 1e-3
    # box 1: dx = 1 -> 1 - 8 / (12 + eps); dy = 0, dw = dh = 0 -> eps-sized terms
    tiny = 1 - 10 / (10 + eps)
    row1 = [smooth(1 - 8 / (12 + eps)), smooth(tiny), smooth(tiny), smooth(tiny)]
    # box 2: centres 10 vs 5: dx = 5 = w_t / 2 -> IoU bound 0 -> 1; dw: 1 - 10 / (20 + eps)
    row2 = [smooth(1.0), smooth(tiny), smooth(1 - 10 / (20 + eps)), smooth(tiny)]
    torch.testing.assert_close(loss, torch.tensor([row1, row2]), rtol=1e-5, atol=1e-7)
    assert abs(row1[0] - 0.233389) < 1e-6 and abs(row2[2] - 0.400025) < 1e-6
    loss.sum().backward()
    assert target.grad is None and pred.grad.abs().sum() > 0  # the target is a constant


def test_bounded_iou_loss_limits_and_module():
    box = torch.tensor([[3., 4., 50., 30.]])
    perfect = bounded_iou_loss(box, box)
    assert perfect.max() < 1e-6  # O((eps / w)^2)
    assert bounded_iou_loss(box, box, eps=0.0).abs().max() == 0
    assert bounded_iou_loss(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    far = bounded_iou_loss(torch.tensor([[0., 0., 10., 10.]]), torch.tensor([[100., 100., 110.,
                                                                              110.]]))
    assert far[0, :2].tolist() == pytest.approx([0.9, 0.9])  # bounded: 1 - beta / 2
    module = MODELS.build(dict(type='BoundedIoULoss', beta=0.2, loss_weight=2.0))
    pred = torch.tensor([[0., 0., 10., 10.], [0., 0., 20., 10.]])
    target = torch.tensor([[1., 0., 11., 10.], [0., 0., 10., 10.]])
    weight = torch.tensor([[1., 1., 1., 1.], [0., 0., 0., 0.]])
    expected = 2.0 * bounded_iou_loss(pred, target)[0].sum() / 4
    torch.testing.assert_close(module(pred, target, weight=weight, avg_factor=4), expected)


# ----------------------------------------------------------------------- building blocks
@pytest.mark.parametrize('kernel', [1, 3])
def test_masked_conv_equals_dense_conv_at_kept_cells(kernel):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, kernel, padding=kernel // 2)
    x = torch.randn(2, 6, 7, 9)
    keep = torch.rand(2, 7, 9) > 0.6
    keep[0, 0, 0] = keep[1, 6, 8] = True  # borders (padding)
    index = keep.nonzero()
    torch.testing.assert_close(masked_conv2d(x, conv, index),
                               conv(x).permute(0, 2, 3, 1)[keep], rtol=1e-5, atol=1e-5)
    assert masked_conv2d(x, conv, index[:0]).shape == (0, 5)


def test_feature_adaption_with_zero_offsets_is_a_plain_conv():
    torch.manual_seed(0)
    adaption = FeatureAdaption(8, 6, 3, deform_groups=4)
    assert adaption.conv_offset.out_channels == 72 and adaption.conv_offset.bias is None
    x, shape = torch.randn(2, 8, 5, 7), torch.randn(2, 2, 5, 7)
    with torch.no_grad():
        adaption.conv_offset.weight.zero_()
    expected = F.relu(F.conv2d(x, adaption.conv_adaption.weight, padding=1))
    torch.testing.assert_close(adaption(x, shape), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # non-zero offsets change the output; no gradient into the shape
        adaption.conv_offset.weight.normal_(std=0.5)
    shape.requires_grad_(True)
    out = adaption(x, shape)
    assert (out - expected).abs().max() > 1e-3
    out.sum().backward()
    assert shape.grad is None


def small_head(kind='GARPNHead', **kwargs):
    cfg = dict(type=kind, in_channels=8, feat_channels=8,
               approx_anchor_generator=dict(type='AnchorGenerator', octave_base_scale=2,
                                            scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                            strides=[8, 16, 32]),
               square_anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], scales=[2],
                                            strides=[8, 16, 32]))
    if kind == 'GARetinaHead':
        cfg.update(num_classes=3, stacked_convs=1)
    cfg.update(kwargs)
    torch.manual_seed(0)
    return MODELS.build(cfg)


def gts(*boxes):
    return InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        labels=torch.zeros(len(boxes), dtype=torch.long))


def cells(size, ranges):
    """(H * W,) bool mask of the union of inclusive ``(x1, y1, x2, y2)`` cell ranges."""
    mask = torch.zeros(size)
    for x1, y1, x2, y2 in ranges:
        mask[y1:y2 + 1, x1:x2 + 1] = 1
    return mask.reshape(-1).bool()


def test_location_targets_by_hand():
    """Anchor scale 2, strides 8/16/32 on a 128 px image (maps 16, 8, 4). Image 0:
    A [0, 0, 64, 64] (scale 64 -> level floor(6 - 4 + 0.5) = 2), C [16, 16, 112, 112] (scale
    96 -> level 2; its ignore region covers A's centre), B [80, 80, 100, 100] (scale 20 ->
    level 0). Image 1: no object. ``round`` is half-to-even, as ``torch.round``."""
    head = small_head()
    assert head.anchor_scale == 2.0
    # calc_region by hand: A on level 2 is cells [0, 0, 2, 2]; centre ratio 0.4 -> cell 1,
    # ignore ratio 0.25 -> cells round(0.5) = 0 .. round(1.5) = 2
    assert calc_region(torch.tensor([[0., 0., 2., 2.]]), 0.4, (4, 4)).tolist() == [[1, 1, 1, 1]]
    assert calc_region(torch.tensor([[0., 0., 2., 2.]]), 0.25, (4, 4)).tolist() == [[0, 0, 2, 2]]
    targets, weights, avg = head.loc_targets(
        [gts([0, 0, 64, 64], [80, 80, 100, 100], [16, 16, 112, 112]), gts()],
        [(16, 16), (8, 8), (4, 4)], 'cpu')
    assert avg == pytest.approx(2 * (256 + 64 + 16) / 200)

    def expected(size, centre, ignore):
        target = cells(size, centre)
        weight = torch.full(target.shape, 0.1)
        weight[cells(size, ignore)] = 0
        weight[target] = 1
        return target.float(), weight

    # level 2: A cells 0..2: centre 1, ignore 0..2; C cells 0.5..3.5: centre round(1.7) ..
    # round(2.3) = 2, ignore round(1.25) .. round(2.75) = 1..3; A's centre wins over C's ignore
    t2, w2 = expected((4, 4), [(1, 1, 1, 1), (2, 2, 2, 2)], [(0, 0, 2, 2), (1, 1, 3, 3)])
    # level 1: no own object; adjacent ignore regions of A (cells 0..4 -> 1..3), C (1..7 ->
    # round(2.5) = 2 .. round(5.5) = 6) and B (5..6.25 -> 5..6) have weight 0
    t1, w1 = expected((8, 8), [], [(1, 1, 3, 3), (2, 2, 6, 6), (5, 5, 6, 6)])
    # level 0: B (cells 10..12.5): centre round(11) .. round(11.5) = 11..12; A and C are two
    # levels away
    t0, w0 = expected((16, 16), [(11, 11, 12, 12)], [(11, 11, 12, 12)])
    for level, (t, w) in enumerate([(t0, w0), (t1, w1), (t2, w2)]):
        torch.testing.assert_close(targets[level][0], t)
        torch.testing.assert_close(weights[level][0], w)
        assert targets[level][1].sum() == 0 and weights[level][1].eq(0.1).all()
    assert int(w2.eq(0.1).sum()) == 2 and int(w2.eq(0).sum()) == 12


def test_shape_targets_and_loss_by_hand():
    """A gt equal to the square (16 px) of cell (y 4, x 5) of level 0 is that cell's only
    positive (its approx of scale 2, ratio 1 has IoU 1; every other approx < 0.7). A predicted
    shape (log 2, log 2) makes a 32 px anchor: each of dw, dh gives 1 - 16 / (32 + eps)."""
    head = small_head()
    gt = gts([32, 24, 48, 40])
    maps = [(16, 16), (8, 8), (4, 4)]
    squares = head.grid_priors([torch.zeros(1, 1, *s) for s in maps])
    approxs = torch.cat(head.approx_generator.grid_anchors(maps)).reshape(len(squares), 9, 4)
    image_ids, cell_ids, boxes = head.shape_targets(squares, approxs, [gt, gts()])
    assert image_ids.tolist() == [0] and cell_ids.tolist() == [4 * 16 + 5]
    torch.testing.assert_close(boxes, gt.bboxes)
    shape_preds = [torch.zeros(2, 2, *s) for s in maps]
    shape_preds[0][0, :, 4, 5] = math.log(2)
    outs = ([torch.zeros(2, 1, *s) for s in maps], [torch.zeros(2, 4, *s) for s in maps],
            shape_preds, [torch.zeros(2, 1, *s) for s in maps])
    metas = [dict(img_shape=(128, 128))] * 2
    losses = head.loss_by_feat(*outs, [gt, gts()], metas)
    eps = 1e-3
    tiny = 1 - 16 / (16 + eps)
    expected = 2 * smooth(1 - 16 / (32 + eps)) + 2 * smooth(tiny)
    assert losses['loss_shape'].item() == pytest.approx(expected, rel=1e-5)
    assert set(losses) == {'loss_cls', 'loss_bbox', 'loss_shape', 'loss_loc'}


@pytest.mark.parametrize('kind', ['GARPNHead', 'GARetinaHead'])
def test_masked_inference_equals_dense_inference(kind):
    head = small_head(kind, test_cfg=dict(score_thr=0.0) if kind == 'GARetinaHead' else None)
    with torch.no_grad():
        head.conv_loc.weight.normal_(std=1.0)
        head.conv_loc.bias.fill_(math.log(0.01 / 0.99))  # about half the cells pass 0.01
    head.eval()
    feats = [torch.randn(2, 8, 16, 16), torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    samples = [DataSample(metainfo=dict(img_shape=(128, 128))) for _ in range(2)]
    metas = [s.metainfo for s in samples]
    with torch.no_grad():
        outs = head(feats)
        kept = torch.cat([(lp.sigmoid() >= 0.01).flatten() for lp in outs[3]])
        masked = head.predict(feats, samples)
        dense = head.predict_by_feat(*outs, batch_img_metas=metas)
        head.loc_filter_thr = 0.0
        unfiltered = head.predict(feats, samples)
    assert 0.2 < kept.float().mean() < 0.8  # the filter skips part of the cells
    for m, d, u in zip(masked, dense, unfiltered):
        assert 0 < len(m) == len(d)
        torch.testing.assert_close(m.bboxes, d.bboxes, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(m.scores, d.scores, rtol=1e-5, atol=1e-6)
        assert torch.equal(m.labels, d.labels)
        assert len(u) >= len(m) and not torch.equal(u.scores[:len(m)], m.scores)


def test_ga_rpn_head_trains():
    head = small_head()
    head.train()
    feats = [torch.randn(2, 8, 16, 16), torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    batch = [gts([8, 8, 40, 40], [60, 20, 120, 90]), gts()]
    metas = [dict(img_shape=(128, 128))] * 2
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    totals = []
    for _ in range(20):
        losses = head.loss_by_feat(*head(feats), batch, metas)
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert all(math.isfinite(t) for t in totals) and totals[-1] < 0.5 * totals[0]


@pytest.mark.parametrize('path, total, trainable', [
    ('configs/ga_rpn_r50_fpn_1x_coco.py', 28_034_520, 27_809_176),
    ('configs/ga_retinanet_r50_fpn_1x_coco.py', 37_600_439, 37_375_095),
])
def test_coco_recipes_match_mmdetection_parameter_counts(path, total, trainable):
    """ANCHORS.md section 8 (MMDetection 3.3.0 configs, 80 classes)."""
    model = MODELS.build(Config.fromfile(path).model)
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
