"""The three detector kinds of the core share one contract: ``forward(inputs, samples, mode)``
with 'loss' (a dict of finite losses that trains), 'predict' (``pred_instances`` in the original
image's pixels) and 'tensor' (raw outputs).

The two-stage and set-prediction detectors are exercised with small test doubles (a RoI head,
a transformer encoder / decoder and a set head written here on the core bases and task
utilities); the concrete Faster R-CNN and DETR components are plugins of their own.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import InstanceData
from torch import nn
from torchvision.ops import MultiScaleRoIAlign, box_convert, generalized_box_iou_loss

from toolbox.models.bases import BaseRoIHead, MultiLevelRoIAlign, proposals_to_rois
from toolbox.models.detectors import SetPredictionDetector, TwoStageDetector, prefix_losses
from toolbox.models.utils import empty_instances, unpack_gt_instances
from toolbox.registry import MODELS, TASK_UTILS
from toolbox.structures import DataSample


def sample(boxes, labels, img_shape=(64, 64), scale_factor=(1.0, 1.0), ori_shape=None,
           batch_input_shape=None):
    data_sample = DataSample(metainfo=dict(
        img_shape=img_shape, ori_shape=ori_shape or img_shape, scale_factor=scale_factor,
        batch_input_shape=batch_input_shape or img_shape))
    data_sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return data_sample


def train_steps(model, inputs, samples, steps, lr):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    totals = []
    for _ in range(steps):
        losses = model(inputs, samples, mode='loss')
        total = sum(v for k, v in losses.items() if k.startswith('loss'))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    return totals


# --------------------------------------------------------------- RoI feature extraction
def test_multilevel_roi_align_equals_torchvision_multiscale_roi_align():
    """Same level mapping as torchvision (FPN eq. 1 with k0 = 4 at 224 px): identical
    features for boxes of every size."""
    torch.manual_seed(0)
    feats = [torch.randn(2, 4, 256 // s, 320 // s) for s in (4, 8, 16, 32)]
    xy = torch.rand(40, 2) * 200
    wh = torch.cat([torch.rand(20, 2) * 60 + 2, torch.rand(20, 2) * 500 + 100])
    boxes = torch.cat([xy, xy + wh], dim=1)
    per_image = [boxes[:25], boxes[25:]]
    ours = MultiLevelRoIAlign(7, (4, 8, 16, 32), sampling_ratio=2, aligned=False)
    reference = MultiScaleRoIAlign(['p2', 'p3', 'p4', 'p5'], 7, sampling_ratio=2)
    expected = reference({f'p{i + 2}': f for i, f in enumerate(feats)}, per_image,
                         [(256, 320)] * 2)
    rois = proposals_to_rois(per_image)
    assert rois.shape == (40, 5) and rois[:25, 0].eq(0).all() and rois[25:, 0].eq(1).all()
    got = ours(feats, rois)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    levels = ours.map_levels(rois)
    # hand numbers: scale 111 -> P2, 113 -> P3, 300 -> P4, 500 -> P5
    hand = torch.tensor([[0, 0, 0, 111, 111], [0, 0, 0, 113, 113], [0, 0, 0, 300, 300],
                         [0, 0, 0, 500, 500]], dtype=torch.float32)
    assert ours.map_levels(hand).tolist() == [0, 1, 2, 3]
    assert set(levels.tolist()) == {0, 1, 2, 3}
    assert ours(feats, torch.zeros(0, 5)).shape == (0, 4, 7, 7)


def test_prefix_losses():
    assert prefix_losses({'loss_cls': 1, 'acc': 2}, 'rpn') == {'loss_rpn_cls': 1, 'rpn_acc': 2}


# ------------------------------------------------------------------- two-stage
@MODELS.register_module(name='_TestRoIHead', force=True)
class _TestRoIHead(BaseRoIHead):
    """Minimal Fast R-CNN-style head: RoIAlign -> one FC -> C + 1 logits and class-agnostic
    deltas; losses on sampled proposals."""

    def __init__(self, num_classes, in_channels, roi_extractor, assigner, sampler,
                 test_cfg=None):
        super().__init__(num_classes, roi_extractor, assigner, sampler, test_cfg)
        size = self.roi_extractor.output_size
        self.fc = nn.Linear(in_channels * size[0] * size[1], 32)
        self.cls = nn.Linear(32, num_classes + 1)
        self.reg = nn.Linear(32, 4)
        self.coder = TASK_UTILS.build(dict(type='DeltaXYWHBoxCoder', stds=(0.1, 0.1, 0.2, 0.2)))

    def _run(self, feats, boxes):
        rois, roi_feats = self.extract_roi_feats(feats, boxes)
        hidden = F.relu(self.fc(roi_feats.flatten(1)))
        return rois, self.cls(hidden), self.reg(hidden)

    def forward(self, feats, proposals):
        return self._run(feats, [p.bboxes for p in proposals])[1:]

    def loss(self, feats, proposals, data_samples):
        sampled = self.sample_proposals(proposals, data_samples)
        boxes = [s.priors[torch.cat([s.pos_inds, s.neg_inds])] for s in sampled]
        _, logits, deltas = self._run(feats, boxes)
        labels = torch.cat([torch.cat([s.pos_gt_labels,
                                       s.pos_gt_labels.new_full((s.num_neg,), self.num_classes)])
                            for s in sampled])
        pos = labels < self.num_classes
        targets = torch.cat([self.coder.encode(s.pos_priors, s.pos_gt_bboxes) for s in sampled])
        loss_box = F.smooth_l1_loss(deltas[pos], targets, reduction='sum') / max(pos.sum(), 1)
        return dict(loss_roi_cls=F.cross_entropy(logits, labels), loss_roi_bbox=loss_box)

    def predict(self, feats, proposals, data_samples):
        _, logits, deltas = self._run(feats, [p.bboxes for p in proposals])
        results, start = [], 0
        for proposal, data_sample in zip(proposals, data_samples):
            end = start + len(proposal)
            scores, labels = logits[start:end].softmax(-1)[:, :-1].max(-1)
            boxes = self.coder.decode(proposal.bboxes, deltas[start:end],
                                      max_shape=data_sample.img_shape)
            results.append(InstanceData(bboxes=boxes, scores=scores, labels=labels)
                           if len(proposal) else empty_instances(feats[0].device))
            start = end
        return results


def two_stage_detector():
    torch.manual_seed(0)
    return TwoStageDetector(
        backbone=dict(type='ResNet', depth=18, out_indices=(1, 2, 3)),
        neck=dict(type='FPN', in_channels=[128, 256, 512], out_channels=32, num_outs=3),
        rpn_head=dict(type='RetinaHead', num_classes=1, in_channels=32, feat_channels=32,
                      stacked_convs=1,
                      anchor_generator=dict(type='AnchorGenerator', strides=[8, 16, 32],
                                            ratios=[0.5, 1.0, 2.0], scales=[4.0]),
                      assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3),
                      sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5,
                                   add_gt_as_proposals=False),
                      test_cfg=dict(nms_pre=200, max_per_img=50, iou_threshold=0.7,
                                    score_thr=0.0)),
        roi_head=dict(type='_TestRoIHead', num_classes=2, in_channels=32,
                      roi_extractor=dict(type='MultiLevelRoIAlign', output_size=4,
                                         featmap_strides=(8, 16, 32)),
                      assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                                    match_low_quality=False),
                      sampler=dict(type='RandomSampler', num=32, pos_fraction=0.25)),
        train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=50, iou_threshold=0.7,
                                         score_thr=0.0)))


def test_two_stage_detector_trains_predicts_and_maps_to_the_original_frame():
    model = two_stage_detector()
    inputs = torch.randn(2, 3, 64, 64)
    samples = [sample([[8, 8, 40, 40], [30, 10, 60, 30]], [0, 1]), sample([], [])]
    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_roi_cls', 'loss_roi_bbox'}
    assert all(torch.isfinite(v) for v in losses.values())
    # the RPN is class-agnostic: the caller's labels are untouched
    assert samples[0].gt_instances.labels.tolist() == [0, 1]
    totals = train_steps(model, inputs, samples, 30, 1e-3)
    assert totals[-1] < 0.5 * totals[0]

    model.eval()
    shrunk = [sample([], [], img_shape=(64, 64), scale_factor=(0.5, 0.5), ori_shape=(128, 128))]
    with torch.no_grad():
        pred = model(inputs[:1], shrunk, mode='predict')[0].pred_instances
        proposals = model.rpn_head.predict(model.extract_feat(inputs[:1]), shrunk)
        direct = model.roi_head.predict(model.extract_feat(inputs[:1]), proposals, shrunk)[0]
        rpn_outs, (logits, deltas) = model(inputs[:1], shrunk, mode='tensor')
    assert len(proposals[0]) <= 50 and len(pred) == len(proposals[0])
    torch.testing.assert_close(pred.bboxes, direct.bboxes * 2)
    assert pred.bboxes.max() <= 128
    assert logits.shape == (len(proposals[0]), 3) and deltas.shape == (len(proposals[0]), 4)
    assert len(rpn_outs) == 2 and rpn_outs[0][0].shape == (1, 3, 8, 8)


def test_two_stage_detector_refuses_a_multi_class_rpn():
    with pytest.raises(ValueError, match='class-agnostic'):
        TwoStageDetector(backbone=dict(type='ResNet', depth=18),
                         rpn_head=dict(type='RetinaHead', num_classes=3, in_channels=8,
                                       anchor_generator=dict(type='AnchorGenerator',
                                                             strides=[8])),
                         roi_head=dict(type='_TestRoIHead', num_classes=2, in_channels=8,
                                       roi_extractor=dict(type='MultiLevelRoIAlign'),
                                       assigner=None, sampler=None))


# -------------------------------------------------------------- set prediction
@MODELS.register_module(name='_TestSinePositionalEncoding', force=True)
class _TestSinePositionalEncoding(nn.Module):
    """DETR's normalised sine encoding of the cumulative non-padded positions."""

    def __init__(self, num_feats):
        super().__init__()
        self.num_feats = num_feats

    def forward(self, mask):
        not_mask = (~mask).float()
        y = not_mask.cumsum(1) / (not_mask.cumsum(1)[:, -1:] + 1e-6) * 2 * math.pi
        x = not_mask.cumsum(2) / (not_mask.cumsum(2)[:, :, -1:] + 1e-6) * 2 * math.pi
        dim_t = 10000 ** (2 * (torch.arange(self.num_feats, device=mask.device) // 2)
                          / self.num_feats)
        pos_x, pos_y = x[..., None] / dim_t, y[..., None] / dim_t
        pos_x = torch.stack([pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()], -1).flatten(3)
        pos_y = torch.stack([pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()], -1).flatten(3)
        return torch.cat([pos_y, pos_x], dim=3).permute(0, 3, 1, 2)


@MODELS.register_module(name='_TestEncoder', force=True)
class _TestEncoder(nn.Module):
    def __init__(self, dims):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dims, 2, 2 * dims, dropout=0.0, batch_first=True)

    def forward(self, query, query_pos, key_padding_mask):
        return self.layer(query + query_pos, src_key_padding_mask=key_padding_mask)


@MODELS.register_module(name='_TestDecoder', force=True)
class _TestDecoder(nn.Module):
    def __init__(self, dims, num_layers=2):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(dims, 2, 2 * dims, dropout=0.0, batch_first=True)
            for _ in range(num_layers))

    def forward(self, query, key, query_pos, key_pos, key_padding_mask):
        hidden = []
        for layer in self.layers:
            query = layer(query + query_pos, key + key_pos,
                          memory_key_padding_mask=key_padding_mask)
            hidden.append(query)
        return torch.stack(hidden)


@MODELS.register_module(name='_TestSetHead', force=True)
class _TestSetHead(nn.Module):
    """Class (C + 1, background last) and normalised cxcywh box per query; Hungarian
    matching per image; CE + L1 + GIoU on every decoder layer."""

    def __init__(self, num_classes, dims):
        super().__init__()
        self.num_classes = num_classes
        self.cls = nn.Linear(dims, num_classes + 1)
        self.reg = nn.Linear(dims, 4)
        self.assigner = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=[
            dict(type='ClassificationCost', weight=1.0),
            dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
            dict(type='IoUCost', iou_mode='giou', weight=2.0)]))

    def forward(self, hidden):
        return self.cls(hidden), self.reg(hidden).sigmoid()

    @staticmethod
    def _to_pixels(cxcywh, img_shape):
        h, w = img_shape
        return box_convert(cxcywh, 'cxcywh', 'xyxy') * cxcywh.new_tensor([w, h, w, h])

    def loss(self, hidden, data_samples):
        logits, boxes = self(hidden)  # (L, B, Q, C + 1), (L, B, Q, 4)
        gts, _, metas = unpack_gt_instances(data_samples)
        losses = {}
        for layer in range(logits.shape[0]):
            labels, pred_boxes, gt_boxes = [], [], []
            for b, (gt, meta) in enumerate(zip(gts, metas)):
                pixels = self._to_pixels(boxes[layer, b], meta['img_shape'])
                result = self.assigner.assign(
                    InstanceData(scores=logits[layer, b].detach(), bboxes=pixels.detach()),
                    gt, img_meta=meta)
                pos = result.pos_mask
                image_labels = torch.full_like(result.labels, self.num_classes)
                image_labels[pos] = result.labels[pos]
                labels.append(image_labels)
                pred_boxes.append(pixels[pos])
                gt_boxes.append(gt.bboxes[result.gt_inds[pos] - 1])
            scale = 64.0
            pred, target = torch.cat(pred_boxes) / scale, torch.cat(gt_boxes) / scale
            num = max(len(pred), 1)
            losses[f'loss_cls_d{layer}'] = F.cross_entropy(logits[layer].flatten(0, 1),
                                                           torch.cat(labels))
            losses[f'loss_bbox_d{layer}'] = (pred - target).abs().sum() / num + \
                generalized_box_iou_loss(pred, target, reduction='sum') / num
        return losses

    def predict(self, hidden, data_samples):
        logits, boxes = self(hidden[-1])
        results = []
        for b, data_sample in enumerate(data_samples):
            scores, labels = logits[b].softmax(-1)[:, :-1].max(-1)
            results.append(InstanceData(
                bboxes=self._to_pixels(boxes[b], data_sample.img_shape), scores=scores,
                labels=labels))
        return results


def set_detector(num_queries=6):
    torch.manual_seed(0)
    return SetPredictionDetector(
        backbone=dict(type='ResNet', depth=18, out_indices=(3,)),
        neck=dict(type='FPN', in_channels=[512], out_channels=32, num_outs=1),
        positional_encoding=dict(type='_TestSinePositionalEncoding', num_feats=16),
        encoder=dict(type='_TestEncoder', dims=32),
        decoder=dict(type='_TestDecoder', dims=32),
        bbox_head=dict(type='_TestSetHead', num_classes=2, dims=32),
        num_queries=num_queries, embed_dims=32)


def test_padding_mask_marks_the_batch_padding():
    inputs = torch.zeros(2, 3, 64, 96)
    samples = [sample([], [], img_shape=(64, 96)), sample([], [], img_shape=(32, 48))]
    mask = SetPredictionDetector.padding_mask(inputs, samples, (2, 3))
    # nearest resize samples input pixels 0, 32, 64 (columns) and 0, 32 (rows)
    assert mask.tolist() == [[[False] * 3] * 2, [[False, False, True], [True, True, True]]]
    assert not SetPredictionDetector.padding_mask(inputs, None, (2, 3)).any()


def test_set_prediction_detector_trains_and_predicts():
    model = set_detector()
    inputs = torch.randn(1, 3, 64, 64)
    samples = [sample([[8, 8, 40, 40], [30, 10, 60, 30]], [0, 1])]
    hidden = model.forward_transformer(inputs, samples)
    assert hidden.shape == (2, 1, 6, 32)  # (layers, batch, queries, dims)
    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {'loss_cls_d0', 'loss_bbox_d0', 'loss_cls_d1', 'loss_bbox_d1'}
    totals = train_steps(model, inputs, samples, 60, 2e-3)
    assert totals[-1] < 0.3 * totals[0]

    model.eval()
    shrunk = [sample([], [], scale_factor=(0.5, 0.5), ori_shape=(128, 128))]
    with torch.no_grad():
        pred = model(inputs, shrunk, mode='predict')[0].pred_instances
        logits, boxes = model(inputs, shrunk, mode='tensor')
    assert len(pred) == 6 and logits.shape == (2, 1, 6, 3)
    # the two best queries found both objects, in the original (x2) frame
    best = pred.scores.argsort(descending=True)[:2]
    found = sorted(pred.bboxes[best].round().tolist())
    expected = [[16, 16, 80, 80], [60, 20, 120, 60]]
    assert all(abs(a - b) < 12 for f, e in zip(found, expected) for a, b in zip(f, e)), found


def test_set_prediction_detector_checks_the_projection_width():
    model = set_detector()
    model.neck = None
    with pytest.raises(ValueError, match='project it in the neck'):
        model(torch.randn(1, 3, 64, 64), None, mode='tensor')
