"""RPN, standard RoI head and Faster R-CNN: parity with torchvision's ``fasterrcnn_resnet50_fpn``
(parameter count, proposals, final detections), batched post-processing, losses by hand,
proposal-only mode and the recipes."""
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.models.detection.image_list import ImageList

from toolbox.models.task_utils import proposals_from_levels
from toolbox.registry import MODELS, TASK_UTILS
from toolbox.structures import DataSample

TV_NAMES = {'rpn_head.rpn_conv.': 'rpn.head.conv.0.0.', 'rpn_head.rpn_cls.': 'rpn.head.cls_logits.',
            'rpn_head.rpn_reg.': 'rpn.head.bbox_pred.',
            'roi_head.shared_fcs.0.': 'roi_heads.box_head.fc6.',
            'roi_head.shared_fcs.1.': 'roi_heads.box_head.fc7.',
            'roi_head.fc_cls.': 'roi_heads.box_predictor.cls_score.',
            'roi_head.fc_reg.': 'roi_heads.box_predictor.bbox_pred.'}


def torchvision_key(key):
    """Our parameter name -> torchvision's."""
    if key.startswith('backbone.'):
        return 'backbone.body.' + key[len('backbone.'):]
    for ours, theirs in (('neck.lateral_convs.', 'inner_blocks'), ('neck.fpn_convs.',
                                                                    'layer_blocks')):
        if key.startswith(ours):
            index, _, name = key[len(ours):].split('.')
            return f'backbone.fpn.{theirs}.{index}.0.{name}'
    for ours, theirs in TV_NAMES.items():
        if key.startswith(ours):
            return theirs + key[len(ours):]
    raise KeyError(key)


def torchvision_settings_model():
    """The R50-FPN recipe with torchvision's settings: trainable BN backbone, rounded anchors
    32..512, one-sided dw/dh clamp, min-size filters, RoIAlign sampling 2 without the half-pixel
    offset, background logit first and a background regression slot (91 = 90 + 1 classes)."""
    cfg = Config.fromfile('configs/_base_/models/faster_rcnn_r50_fpn.py').model
    cfg.backbone.update(frozen_stages=-1, norm_eval=False)
    cfg.rpn_head.anchor_generator = dict(
        type='AnchorGenerator', scales=[1], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64],
        base_sizes=[32, 64, 128, 256, 512], round_base_anchors=True)
    cfg.rpn_head.bbox_coder.clamp_below = False
    cfg.rpn_head.test_cfg = dict(nms_pre=1000, max_per_img=1000, iou_threshold=0.7,
                                 min_bbox_size=1e-3, score_thr=0.0)
    cfg.roi_head.bbox_coder.clamp_below = False
    cfg.roi_head.update(
        num_classes=90, background_first=True, reg_background=True,
        roi_extractor=dict(type='MultiLevelRoIAlign', output_size=7, sampling_ratio=2,
                           aligned=False, featmap_strides=[4, 8, 16, 32]),
        test_cfg=dict(score_thr=0.05, iou_threshold=0.5, max_per_img=100, min_bbox_size=1e-2))
    return MODELS.build(cfg)


def test_faster_rcnn_r50_fpn_matches_torchvision():
    torch.manual_seed(0)
    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                        num_classes=91).eval()
    ours = torchvision_settings_model().eval()
    assert sum(p.numel() for p in ours.parameters()) == \
        sum(p.numel() for p in reference.parameters()) == 41_808_406
    theirs = reference.state_dict()
    ours.load_state_dict({k: theirs[torchvision_key(k)] for k in ours.state_dict()})
    with torch.no_grad():  # a peaky classifier so that detections pass score_thr 0.05
        weight = torch.randn_like(ours.roi_head.fc_cls.weight) * 0.05
        reference.roi_heads.box_predictor.cls_score.weight.copy_(weight)
        ours.roi_head.fc_cls.weight.copy_(weight)
    x = torch.randn(1, 3, 256, 320)
    metas = [dict(img_shape=(256, 320))]
    with torch.no_grad():  # torchvision's transform bypassed: same normalised, padded input
        feats_ref = reference.backbone(x)
        images = ImageList(x, [(256, 320)])
        proposals_ref, _ = reference.rpn(images, feats_ref)
        dets_ref, _ = reference.roi_heads(feats_ref, proposals_ref, images.image_sizes)
        feats = ours.extract_feat(x)
        proposals = ours.rpn_head.predict_by_feat(*ours.rpn_head(feats), batch_img_metas=metas)
        dets = ours.roi_head.predict_by_feat(*ours.roi_head(feats, proposals),
                                             batch_img_metas=metas)
    for a, b in zip(feats, feats_ref.values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert 100 < len(proposals[0]) <= 1000
    torch.testing.assert_close(proposals[0].bboxes, proposals_ref[0], rtol=0, atol=1e-4)
    assert 20 < len(dets[0]) <= 100
    torch.testing.assert_close(dets[0].bboxes, dets_ref[0]['boxes'], rtol=0, atol=1e-3)
    torch.testing.assert_close(dets[0].scores, dets_ref[0]['scores'], rtol=0, atol=1e-5)
    assert torch.equal(dets[0].labels + 1, dets_ref[0]['labels'])


def test_batched_proposals_equal_each_image_alone():
    """One batched_nms over images x levels == each image on its own (different img_shape)."""
    torch.manual_seed(0)
    coder = TASK_UTILS.build(dict(type='DeltaXYWHBoxCoder'))
    priors = [torch.rand(300, 2).mul(100).repeat(1, 2) + torch.tensor([0, 0, 20, 30.]),
              torch.rand(80, 2).mul(100).repeat(1, 2) + torch.tensor([0, 0, 50, 40.])]
    logits = [torch.randn(2, 300), torch.randn(2, 80)]
    deltas = [torch.randn(2, 300, 4) * 0.2, torch.randn(2, 80, 4) * 0.2]
    metas = [dict(img_shape=(100, 120)), dict(img_shape=(90, 80))]
    cfg = dict(nms_pre=100, max_per_img=60, iou_threshold=0.6, score_thr=0.0,
               min_bbox_size=0.5)
    batched = proposals_from_levels(logits, deltas, priors, coder, metas, cfg)
    for i in range(2):
        alone = proposals_from_levels([lg[i:i + 1] for lg in logits],
                                      [d[i:i + 1] for d in deltas], priors, coder, [metas[i]],
                                      cfg)[0]
        assert len(batched[i]) == len(alone) == 60
        torch.testing.assert_close(batched[i].bboxes, alone.bboxes)
        assert batched[i].bboxes[:, 2].max() <= metas[i]['img_shape'][1]
        assert batched[i].scores.diff().le(0).all()
    # NMS within a level only: two identical boxes on different levels both survive
    same = proposals_from_levels([torch.tensor([[2.0]]), torch.tensor([[1.0]])],
                                 [torch.zeros(1, 1, 4)] * 2,
                                 [torch.tensor([[0, 0, 10, 10.]])] * 2, coder,
                                 [dict(img_shape=(20, 20))], dict(cfg, min_bbox_size=0))
    assert len(same[0]) == 2
    across = proposals_from_levels([torch.tensor([[2.0]]), torch.tensor([[1.0]])],
                                   [torch.zeros(1, 1, 4)] * 2,
                                   [torch.tensor([[0, 0, 10, 10.]])] * 2, coder,
                                   [dict(img_shape=(20, 20))],
                                   dict(cfg, min_bbox_size=0, nms_across_levels=True))
    assert len(across[0]) == 1


def small_roi_head(**kwargs):
    cfg = dict(type='StandardRoIHead', num_classes=3, in_channels=4, fc_out_channels=8,
               roi_extractor=dict(type='MultiLevelRoIAlign', output_size=2,
                                  featmap_strides=[4, 8]),
               sampler=dict(type='RandomSampler', num=8, pos_fraction=0.5,
                            add_gt_as_proposals=True))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def data_sample(boxes, labels, img_shape=(64, 64)):
    sample = DataSample(metainfo=dict(img_shape=img_shape, ori_shape=img_shape,
                                      scale_factor=(1.0, 1.0), batch_input_shape=img_shape))
    sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                                       labels=torch.tensor(labels, dtype=torch.long))
    return sample


def test_roi_head_losses_by_hand():
    """One gt added as the only proposal (a positive with zero targets) and one far proposal
    (a negative): loss_cls is the mean CE of both, loss_bbox = |deltas of the gt class| / 2."""
    torch.manual_seed(0)
    head = small_roi_head()
    feats = [torch.randn(1, 4, 16, 16), torch.randn(1, 4, 8, 8)]
    proposals = [InstanceData(bboxes=torch.tensor([[40., 40., 60., 60.]]))]
    losses = head.loss(feats, proposals, [data_sample([[4, 4, 20, 24]], [2])])
    rois, logits, deltas = head.forward_rois(feats, [torch.tensor([[4., 4., 20., 24.],
                                                                   [40., 40., 60., 60.]])])
    expected_cls = torch.nn.functional.cross_entropy(logits, torch.tensor([2, 3]))
    torch.testing.assert_close(losses['loss_cls'], expected_cls)
    torch.testing.assert_close(losses['loss_bbox'], deltas.view(2, 3, 4)[0, 2].abs().sum() / 2)
    # torchvision layout: background logit 0, gt class c at logit c + 1, a background slot
    torch.manual_seed(0)
    tv = small_roi_head(background_first=True, reg_background=True)
    assert tv.fc_cls.out_features == 4 and tv.fc_reg.out_features == 16
    losses = tv.loss(feats, proposals, [data_sample([[4, 4, 20, 24]], [2])])
    rois, logits, deltas = tv.forward_rois(feats, [torch.tensor([[4., 4., 20., 24.],
                                                                 [40., 40., 60., 60.]])])
    torch.testing.assert_close(losses['loss_cls'], torch.nn.functional.cross_entropy(
        logits, torch.tensor([3, 0])))
    torch.testing.assert_close(losses['loss_bbox'], deltas.view(2, 4, 4)[0, 3].abs().sum() / 2)
    # no gt and no positive: finite zero box loss that keeps the graph
    losses = head.loss(feats, proposals, [data_sample([], [])])
    assert losses['loss_bbox'].item() == 0 and losses['loss_bbox'].requires_grad


def test_roi_head_predict_batched_equals_per_image():
    torch.manual_seed(0)
    head = small_roi_head(test_cfg=dict(score_thr=0.0, iou_threshold=0.5, max_per_img=7))
    with torch.no_grad():
        head.fc_cls.weight.mul_(300)
        head.fc_reg.weight.mul_(300)
    feats = [torch.randn(2, 4, 16, 16), torch.randn(2, 4, 8, 8)]
    xy = torch.rand(2, 20, 2) * 40
    proposals = [InstanceData(bboxes=torch.cat([xy[i], xy[i] + 8 + torch.rand(20, 2) * 20], 1))
                 for i in range(2)]
    samples = [data_sample([], [], (64, 64)), data_sample([], [], (48, 56))]
    both = head.predict(feats, proposals, samples)
    for i in range(2):
        alone = head.predict([f[i:i + 1] for f in feats], proposals[i:i + 1], samples[i:i + 1])
        assert len(both[i]) == len(alone[0]) == 7
        torch.testing.assert_close(both[i].bboxes, alone[0].bboxes)
        torch.testing.assert_close(both[i].scores, alone[0].scores)
        assert torch.equal(both[i].labels, alone[0].labels)
    assert both[1].bboxes[:, 2].max() <= 56 and both[1].bboxes[:, 3].max() <= 48
    empty = head.predict(feats, [InstanceData(bboxes=torch.zeros(0, 4))] * 2, samples)
    assert [len(e) for e in empty] == [0, 0]


def tiny_two_stage(roi_head=True):
    cfg = Config.fromfile('configs/faster_rcnn_r18_fpn_320_12e_bccd.py').model
    cfg.backbone.frozen_stages = 4  # a fast test: the neck and the heads train
    cfg.neck.out_channels = 16
    cfg.rpn_head.update(in_channels=16, feat_channels=16)
    cfg.roi_head.update(in_channels=16, fc_out_channels=32)
    if not roi_head:
        cfg.roi_head = None
    torch.manual_seed(0)
    return MODELS.build(cfg)


def test_faster_rcnn_trains_and_proposal_only_mode():
    inputs = torch.randn(2, 3, 64, 64)
    samples = [data_sample([[8, 8, 40, 40], [30, 10, 60, 30]], [0, 2]), data_sample([], [])]
    model = tiny_two_stage()
    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(15):
        losses = model(inputs, samples, mode='loss')
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert totals[-1] < 0.6 * totals[0]

    rpn = tiny_two_stage(roi_head=False)
    assert set(rpn(inputs, samples, mode='loss')) == {'loss_rpn_cls', 'loss_rpn_bbox'}
    rpn.eval()
    shrunk = data_sample([], [], (64, 64))
    shrunk.set_metainfo(dict(scale_factor=(0.5, 0.5), ori_shape=(128, 128)))
    with torch.no_grad():
        pred = rpn(inputs[:1], [shrunk], mode='predict')[0].pred_instances
        direct = rpn.rpn_head.predict(rpn.extract_feat(inputs[:1]), [shrunk])[0]
    assert 0 < len(pred) <= 1000 and pred.labels.eq(0).all()
    torch.testing.assert_close(pred.bboxes, direct.bboxes * 2)


@pytest.mark.parametrize('path, expected', [
    ('configs/faster_rcnn_r50_fpn_1x_coco.py', 41_753_056),
    ('configs/rpn_r50_fpn_1x_coco.py', 27_446_351),
])
def test_coco_recipes_parameter_counts(path, expected):
    """Faster R-CNN at 80 classes: torchvision's 41,808,406 minus its 10 extra classifier and
    44 extra regressor rows (91 classes with a background box slot), 1025 parameters each."""
    model = MODELS.build(Config.fromfile(path).model)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert 41_808_406 - 41_753_056 == (10 + 44) * 1025


def test_rpn_proposes_nothing_from_the_padding_of_a_smaller_image():
    """Two images padded to 64x64, the second only 40x40 inside: objectness that is high only
    at locations centred beyond 40 px gives the second image no proposal, the first keeps them."""
    from toolbox.models.task_utils import DeltaXYWHBoxCoder
    ys, xs = torch.meshgrid(torch.arange(8) * 8 + 4.0, torch.arange(8) * 8 + 4.0, indexing='ij')
    centres = torch.stack([xs, ys], -1).reshape(-1, 2)
    priors = torch.cat([centres - 6, centres + 6], 1)  # (64, 4), one anchor per cell
    logits = torch.full((2, 64), -10.0)
    logits[:, (centres > 40).all(1)] = 10.0
    cfg = dict(nms_pre=100, iou_threshold=0.7, max_per_img=100, min_bbox_size=0)
    first, second = proposals_from_levels(
        [logits], [torch.zeros(2, 64, 4)], [priors], DeltaXYWHBoxCoder(),
        [dict(img_shape=(64, 64)), dict(img_shape=(40, 40))], cfg)
    assert len(second) == 0 or bool((second.scores < 0.5).all())
    assert int((first.scores > 0.5).sum()) == 9
