"""The RetinaNet recipe through the plugin path: parameter count, losses, prediction frame."""
import torch
from mmengine.structures import InstanceData

from toolbox.engine import load_config
from toolbox.registry import MODELS
from toolbox.structures import DataSample

from .conftest import REPO_ROOT


def _tiny_detector(num_classes=3):
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'))
    cfg.model.bbox_head.num_classes = num_classes
    return MODELS.build(cfg.model)


def _sample(boxes, labels, img_shape=(64, 64), scale_factor=(1.0, 1.0), flip=False):
    sample = DataSample(metainfo=dict(img_shape=img_shape, ori_shape=img_shape,
                                      scale_factor=scale_factor, flip=flip,
                                      flip_direction='horizontal' if flip else None,
                                      batch_input_shape=img_shape))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return sample


def test_retinanet_r50_fpn_coco_has_mmdetection_parameter_count():
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r50_fpn_800x1333_1x_coco.py'))
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == 37_968_692  # ANCHORS.md section 8
    # frozen stem + layer1, as mmdet's trainable count
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 37_743_348


def test_loss_is_finite_with_and_without_objects_and_backpropagates():
    torch.manual_seed(0)
    model = _tiny_detector()
    inputs = torch.randn(2, 3, 64, 64)
    samples = [_sample([[8, 8, 40, 40], [30, 10, 60, 30]], [0, 2]), _sample([], [])]
    losses = model(inputs, samples, mode='loss')
    assert set(losses) == {'loss_cls', 'loss_bbox'}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    empty = model(inputs, [_sample([], []), _sample([], [])], mode='loss')
    assert empty['loss_bbox'].item() == 0.0 and torch.isfinite(empty['loss_cls'])


def test_initial_classification_loss_matches_prior_probability():
    # With prior 0.01 every anchor starts at p = 0.01: the focal loss of a negative is
    # (1 - alpha) * p^2 * -log(1 - p); summed over anchors x classes and divided by num_pos.
    torch.manual_seed(0)
    model = _tiny_detector(num_classes=1)
    head = model.bbox_head
    for conv in [head.retina_cls]:
        torch.nn.init.zeros_(conv.weight)
    feats = [torch.zeros(1, 64, s, s) for s in (8, 4, 2)]
    sample = _sample([[0, 0, 64, 64]], [0])
    losses = head.loss(feats, [sample])
    num_anchors = 9 * (64 + 16 + 4)
    p = 0.01
    neg = 0.75 * p ** 2 * -torch.log(torch.tensor(1 - p))
    pos = 0.25 * (1 - p) ** 2 * -torch.log(torch.tensor(p))
    # the assigner decides positives; recompute them the same way to get the exact total
    anchors = torch.cat(head.prior_generator.grid_anchors([(8, 8), (4, 4), (2, 2)]))
    result = head.assigner.assign(InstanceData(priors=anchors), sample.gt_instances)
    n_pos, n_neg = int(result.pos_mask.sum()), int(result.neg_mask.sum())
    assert n_pos + n_neg <= num_anchors
    expected = (n_pos * pos + n_neg * neg) / n_pos
    torch.testing.assert_close(losses['loss_cls'], expected, rtol=1e-4, atol=1e-6)


def test_predictions_are_rescaled_and_unflipped_to_the_original_image():
    torch.manual_seed(0)
    model = _tiny_detector().eval()
    head = model.bbox_head
    # make the head fire on every anchor with zero deltas: predictions are the anchors
    torch.nn.init.zeros_(head.retina_reg.weight)
    torch.nn.init.zeros_(head.retina_reg.bias)
    torch.nn.init.constant_(head.retina_cls.bias, 5.0)
    head.test_cfg.update(score_thr=0.5, max_per_img=5)
    inputs = torch.randn(1, 3, 64, 64)
    plain = model(inputs, [_sample([], [], img_shape=(64, 64))], mode='predict')[0]
    scaled = model(inputs, [_sample([], [], img_shape=(64, 64), scale_factor=(2.0, 4.0))],
                   mode='predict')[0]
    boxes = plain.pred_instances.bboxes
    assert len(boxes) == 5 and (boxes[:, 2:] <= 64).all() and (boxes >= 0).all()
    torch.testing.assert_close(scaled.pred_instances.bboxes,
                               boxes / torch.tensor([2.0, 4.0, 2.0, 4.0]))
    flipped = model(inputs, [_sample([], [], img_shape=(64, 64), flip=True)], mode='predict')[0]
    unflipped = flipped.pred_instances.bboxes
    torch.testing.assert_close(unflipped[:, [2, 0]], 64 - boxes[:, [0, 2]])


def test_batched_post_processing_equals_the_per_image_reference():
    """``detections_from_levels`` (one topk per level over the batch, one NMS) = thresholding,
    topk, decoding and NMS image by image, on random outputs of 3 images of different sizes."""
    from toolbox.models.task_utils import centers_inside, nms_instances, select_topk_candidates
    torch.manual_seed(0)
    head = _tiny_detector().bbox_head.eval()
    head.test_cfg.update(score_thr=0.3, nms_pre=50, iou_threshold=0.5, max_per_img=40)
    sizes = [(8, 8), (4, 4)]  # two levels of a 64x64 batch (strides 8, 16)
    anchors_per_cell = head.prior_generator.num_base_anchors[0]
    cls_scores = [torch.randn(3, anchors_per_cell * 3, *s) for s in sizes]
    bbox_preds = [torch.randn(3, anchors_per_cell * 4, *s) * 0.5 for s in sizes]
    metas = [dict(img_shape=(64, 64)), dict(img_shape=(40, 60)), dict(img_shape=(30, 20))]
    batched = head.predict_by_feat(cls_scores, bbox_preds, metas)
    anchors = head.prior_generator.grid_anchors(sizes, device='cpu')
    cfg = head.test_cfg
    for b, meta in enumerate(metas):
        boxes, scores, labels = [], [], []
        for lvl_anchors, cls_map, reg_map in zip(anchors, cls_scores, bbox_preds):
            lvl_scores = cls_map[b].permute(1, 2, 0).reshape(-1, 3).sigmoid()
            lvl_scores = lvl_scores * centers_inside(lvl_anchors, meta['img_shape'])[:, None]
            s, idx, lab = select_topk_candidates(lvl_scores, cfg['score_thr'], cfg['nms_pre'])
            deltas = reg_map[b].permute(1, 2, 0).reshape(-1, 4)[idx]
            boxes.append(head.bbox_coder.decode(lvl_anchors[idx], deltas,
                                                max_shape=meta['img_shape']))
            scores.append(s)
            labels.append(lab)
        reference = nms_instances(torch.cat(boxes), torch.cat(scores), torch.cat(labels),
                                  cfg['iou_threshold'], cfg['max_per_img'])
        assert len(reference) > 5
        torch.testing.assert_close(batched[b].bboxes, reference.bboxes)
        torch.testing.assert_close(batched[b].scores, reference.scores)
        assert torch.equal(batched[b].labels, reference.labels)
