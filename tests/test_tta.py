"""Test-time augmentation (toolbox/models/tta.py, tools/test.py --tta): the box merges on
hand-computed boxes, DetTTAModel / SegTTAModel against plain predictions of the same model
(one view: identical; flip views: the hand-merged plain predictions of the original and the
flipped image), and the config rewriting of ``--tta`` end to end on the demo data."""
import copy

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.structures import PixelData
from torch import nn

from toolbox.engine import load_config
from toolbox.engine.setup import ConfigError
from toolbox.evaluation.seg_metric import IoUMetric
from toolbox.models import DetTTAModel, SegTTAModel, merge_nms, weighted_box_fusion
from toolbox.models.segmentors.encoder_decoder import keep_largest_component
from toolbox.registry import MODELS, TRANSFORMS
from toolbox.structures import DataSample
from toolbox_plugins.decode_heads.deeplab_head import FCNHead

from .conftest import REPO_ROOT, shared_data
from .helpers import load_tool
from .test_volume_core import tiny_segmentor

DEMO_CONFIG = REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'
FLIP_VIEWS = [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)]


def _boxes(rows):
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


# ------------------------------------------------------------------------------- box merges
def test_wbf_fuses_two_overlapping_boxes_by_score_weighted_mean():
    """IoU([10,10,50,50], [14,12,54,52]) = 1368 / 1832 = 0.747 > 0.55: one cluster.
    x1 = (10 * 0.9 + 14 * 0.6) / 1.5 = 11.6, y1 = (10 * 0.9 + 12 * 0.6) / 1.5 = 10.8,
    x2 = 51.6, y2 = 50.8; score = mean(0.9, 0.6) * min(2, 2) / 2 = 0.75 in two views and
    0.75 * 2 / 3 = 0.5 when the object was seen in two of three views."""
    boxes = _boxes([[10, 10, 50, 50], [14, 12, 54, 52]])
    scores, labels = torch.tensor([0.9, 0.6]), torch.tensor([2, 2])
    fused = weighted_box_fusion(boxes, scores, labels, num_views=2)
    torch.testing.assert_close(fused.bboxes, _boxes([[11.6, 10.8, 51.6, 50.8]]))
    torch.testing.assert_close(fused.scores, torch.tensor([0.75]))
    assert fused.labels.tolist() == [2]
    three_views = weighted_box_fusion(boxes, scores, labels, num_views=3)
    torch.testing.assert_close(three_views.scores, torch.tensor([0.5]))
    # the order of the input does not matter
    swapped = weighted_box_fusion(boxes.flip(0), scores.flip(0), labels, num_views=2)
    torch.testing.assert_close(swapped.bboxes, fused.bboxes)


def test_wbf_never_fuses_different_classes_and_halves_a_box_seen_in_one_of_two_views():
    boxes = _boxes([[10, 10, 50, 50], [14, 12, 54, 52], [100, 100, 120, 130]])
    fused = weighted_box_fusion(boxes, torch.tensor([0.9, 0.6, 0.8]), torch.tensor([0, 1, 0]),
                                num_views=2)
    torch.testing.assert_close(fused.scores, torch.tensor([0.45, 0.4, 0.3]))
    torch.testing.assert_close(fused.bboxes, boxes[[0, 2, 1]])
    assert fused.labels.tolist() == [0, 0, 1]


def test_wbf_member_joins_the_best_scoring_seed_and_a_cluster_may_outnumber_the_views():
    """Seeds A = [0,0,10,10] (0.9) and C = [6,0,16,10] (0.8) overlap by IoU 0.25 <= 0.5; B =
    [3,0,13,10] (0.5) overlaps both by 70 / 130 = 0.538 > 0.5 and joins A, the better seed:
    x1 = (0 * 0.9 + 3 * 0.5) / 1.4 = 1.0714, x2 = (10 * 0.9 + 13 * 0.5) / 1.4 = 11.0714,
    score (0.9 + 0.5) / 2 = 0.7; C alone: 0.8 / 2 = 0.4. Three boxes of one cluster in two
    views: mean(0.9, 0.5, 0.4) * min(3, 2) / 2 = 0.6 (the count is capped at the views)."""
    boxes = _boxes([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]])
    fused = weighted_box_fusion(boxes, torch.tensor([0.9, 0.5, 0.8]), torch.tensor([0, 0, 0]),
                                num_views=2, iou_thr=0.5)
    torch.testing.assert_close(fused.bboxes, _boxes([[1.5 / 1.4, 0, 15.5 / 1.4, 10],
                                                     [6, 0, 16, 10]]))
    torch.testing.assert_close(fused.scores, torch.tensor([0.7, 0.4]))
    crowd = weighted_box_fusion(_boxes([[0, 0, 10, 10], [1, 0, 11, 10], [0, 1, 10, 11]]),
                                torch.tensor([0.9, 0.5, 0.4]), torch.tensor([1, 1, 1]),
                                num_views=2)
    torch.testing.assert_close(crowd.scores, torch.tensor([0.6]))
    torch.testing.assert_close(crowd.bboxes, _boxes([[0.5 / 1.8, 0.4 / 1.8, 18.5 / 1.8,
                                                      18.4 / 1.8]]))


def test_wbf_degenerate_inputs():
    """No boxes: empty (0, 4) / (0,) / (0,) int64. Scores 0: plain mean, score 0. A zero-area
    box heads its own cluster. ``max_per_img`` keeps the best."""
    no_boxes = (torch.zeros((0, 4)), torch.zeros((0,)), torch.zeros((0,), dtype=torch.long))
    for empty in (weighted_box_fusion(*no_boxes, num_views=2), merge_nms(*no_boxes)):
        assert tuple(empty.bboxes.shape) == (0, 4) and tuple(empty.scores.shape) == (0,)
        assert tuple(empty.labels.shape) == (0,) and empty.labels.dtype == torch.long
    zero = weighted_box_fusion(_boxes([[0, 0, 10, 10], [2, 0, 12, 10]]), torch.zeros(2),
                               torch.tensor([0, 0]), num_views=1, iou_thr=0.5)
    torch.testing.assert_close(zero.bboxes, _boxes([[1, 0, 11, 10]]))
    torch.testing.assert_close(zero.scores, torch.tensor([0.0]))
    flat = weighted_box_fusion(_boxes([[5, 5, 5, 9], [0, 0, 10, 10]]), torch.tensor([0.9, 0.8]),
                               torch.tensor([0, 0]), num_views=1)
    torch.testing.assert_close(flat.bboxes, _boxes([[5, 5, 5, 9], [0, 0, 10, 10]]))
    torch.testing.assert_close(flat.scores, torch.tensor([0.9, 0.8]))
    top = weighted_box_fusion(_boxes([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]]),
                              torch.tensor([0.2, 0.9, 0.5]), torch.tensor([0, 0, 0]),
                              num_views=1, max_per_img=2)
    torch.testing.assert_close(top.scores, torch.tensor([0.9, 0.5]))
    with pytest.raises(ValueError, match='num_views must be >= 1'):
        weighted_box_fusion(*no_boxes, num_views=0)


def test_nms_merge_keeps_the_best_of_overlapping_same_class_boxes():
    boxes = _boxes([[10, 10, 50, 50], [14, 12, 54, 52], [14, 12, 54, 52], [0, 0, 5, 5]])
    merged = merge_nms(boxes, torch.tensor([0.6, 0.9, 0.7, 0.3]), torch.tensor([0, 0, 1, 0]),
                       iou_thr=0.5, max_per_img=2)
    torch.testing.assert_close(merged.bboxes, boxes[[1, 2]])
    torch.testing.assert_close(merged.scores, torch.tensor([0.9, 0.7]))
    assert merged.labels.tolist() == [0, 1]


# ----------------------------------------------------------------------------- DetTTAModel
@pytest.fixture(scope='module')
def detector():
    """The demo RetinaNet R18 (random init, seed 0), every score kept so that the merges
    see many overlapping boxes."""
    cfg = load_config(str(DEMO_CONFIG))
    cfg.model.bbox_head.test_cfg = dict(nms_pre=200, score_thr=0.0, iou_threshold=0.5,
                                        max_per_img=30)
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def _image(height=40, width=56, seed=0):
    rng = np.random.RandomState(seed)
    img = cv2.resize(rng.randint(0, 256, (5, 7, 3)).astype(np.uint8), (width, height))
    return dict(img=img, img_shape=(height, width), ori_shape=(height, width), img_id=0)


def _tta_batch(views, results):
    """The data batch the test dataloader gives for one image: ``TestTimeAug`` over
    ``views`` (lists of alternatives), then ``pseudo_collate``."""
    tta = TRANSFORMS.build(dict(type='TestTimeAug',
                                transforms=copy.deepcopy(views) + [[dict(type='PackInputs')]]))
    return pseudo_collate([tta(copy.deepcopy(results))])


def test_det_tta_with_one_plain_view_equals_plain_predict(detector):
    """One unflipped view at a new scale: NMS merge gives the plain predictions exactly, WBF
    up to rounding (singletons: (box * s) / s)."""
    views = [[dict(type='Resize', scale=(70, 50))]]
    batch = _tta_batch(views, _image())
    plain = detector.test_step(dict(inputs=batch['inputs'][0],
                                    data_samples=copy.deepcopy(batch['data_samples'][0])))
    expected = plain[0].pred_instances
    assert len(expected) == 30
    by_nms = DetTTAModel(detector, merge='nms', iou_thr=0.5, max_per_img=30)
    got = by_nms.test_step(copy.deepcopy(batch))[0].pred_instances
    for key in ('bboxes', 'scores', 'labels'):
        assert torch.equal(got[key], expected[key]), key
    by_wbf = DetTTAModel(detector, merge='wbf', iou_thr=0.5, max_per_img=30)
    got = by_wbf.test_step(copy.deepcopy(batch))[0].pred_instances
    torch.testing.assert_close(got.bboxes, expected.bboxes, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(got.scores, expected.scores, rtol=1e-6, atol=0)
    assert torch.equal(got.labels, expected.labels)


@pytest.mark.parametrize('merge', ['wbf', 'nms'])
def test_det_tta_flip_views_equal_the_hand_merged_plain_predicts(detector, merge):
    """Views: resize to 70x50 (factor 1.25 of 56x40), flipped and not. The flipped view's
    boxes come back in the original frame: equal to a plain predict on the same flipped input
    (recorded as unflipped) mapped by ``x -> W - x`` (W = 56) by hand, then merged with the
    unflipped view's plain predictions."""
    views = [[dict(type='Resize', scale=(70, 50))], FLIP_VIEWS]
    batch = _tta_batch(views, _image())
    flipped_input, plain_input = batch['inputs'][0][0], batch['inputs'][1][0]
    flipped_sample, plain_sample = batch['data_samples'][0][0], batch['data_samples'][1][0]
    assert flipped_sample.flip and not plain_sample.flip
    as_unflipped = copy.deepcopy(flipped_sample)
    as_unflipped.set_metainfo(dict(flip=False, flip_direction=None))
    in_flipped_frame = detector.test_step(dict(inputs=[flipped_input],
                                               data_samples=[as_unflipped]))[0].pred_instances
    width = 56
    unflipped = in_flipped_frame.bboxes[:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + \
        torch.tensor([width, 0, width, 0])
    plain = detector.test_step(dict(inputs=[plain_input],
                                    data_samples=[copy.deepcopy(plain_sample)]))[0].pred_instances
    bboxes = torch.cat([unflipped, plain.bboxes])
    scores = torch.cat([in_flipped_frame.scores, plain.scores])
    labels = torch.cat([in_flipped_frame.labels, plain.labels])
    if merge == 'wbf':
        expected = weighted_box_fusion(bboxes, scores, labels, num_views=2, iou_thr=0.55)
    else:
        expected = merge_nms(bboxes, scores, labels, iou_thr=0.55)
    tta = DetTTAModel(detector, merge=merge, iou_thr=0.55, max_per_img=100)
    merged = tta.test_step(copy.deepcopy(batch))
    assert len(merged) == 1 and not merged[0].flip  # carried by the unflipped view's sample
    got = merged[0].pred_instances
    assert len(got) == len(expected) > 0
    torch.testing.assert_close(got.bboxes, expected.bboxes, rtol=0, atol=1e-4)
    torch.testing.assert_close(got.scores, expected.scores, rtol=0, atol=1e-6)
    assert torch.equal(got.labels, expected.labels)
    if merge == 'wbf':  # 60 boxes of two views fused into fewer clusters
        assert len(got) < 60


def test_det_tta_refuses_an_unknown_merge(detector):
    with pytest.raises(ValueError, match="merge must be one of .*'wbf', 'nms'.*got 'mean'"):
        DetTTAModel(detector, merge='mean')
    with pytest.raises(ValueError, match='iou_thr must be in'):
        DetTTAModel(detector, iou_thr=1.5)


# ----------------------------------------------------------------------------- SegTTAModel
class _TinyBackbone(nn.Module):
    """(B, 3, H, W) -> ((B, 8, H / 2, W / 2),): a strided 3x3 conv (not flip-equivariant), or
    a 1x1 conv at full resolution (equivariant) with ``pointwise``."""

    def __init__(self, pointwise: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1) if pointwise else nn.Conv2d(3, 8, 3, stride=2, padding=1)

    def forward(self, x):
        return (torch.relu(self.conv(x)),)


def _segmentor(pointwise: bool = False):
    torch.manual_seed(0)
    head = FCNHead(in_channels=8, num_classes=4, channels=8, num_convs=0 if pointwise else 1,
                   in_index=-1, dropout_ratio=0.0)
    return MODELS.build(dict(type='EncoderDecoder', backbone=_TinyBackbone(pointwise),
                             decode_head=head, data_preprocessor=dict(
                                 type='DataPreprocessor', mean=[128.0] * 3, std=[64.0] * 3,
                                 pad_size_divisor=4))).eval()


@pytest.fixture
def seg_files(tmp_path):
    """A 30x44 image and its class map (classes 0-3 in vertical bands, 255 at the left edge)
    on disk, so that the ground truth is loaded after the views as in the configs."""
    results = _image(30, 44, seed=1)
    seg = np.repeat(np.arange(44)[None] // 11, 30, axis=0).astype(np.uint8)
    seg[:, 0] = 255
    cv2.imwrite(str(tmp_path / 'img.png'), results['img'])
    cv2.imwrite(str(tmp_path / 'seg.png'), seg)
    return dict(img_path=str(tmp_path / 'img.png'), seg_map_path=str(tmp_path / 'seg.png')), seg


def _seg_tta_batch(views, files):
    tta = TRANSFORMS.build(dict(type='TestTimeAug', transforms=copy.deepcopy(views) + [
        [dict(type='LoadAnnotations', with_bbox=False, with_seg=True)],
        [dict(type='PackInputs')]]))
    load = TRANSFORMS.build(dict(type='LoadImageFromFile'))
    return pseudo_collate([tta(load(dict(files)))])


def test_seg_tta_with_one_view_equals_plain_predict(seg_files):
    files, _ = seg_files
    model = _segmentor()
    batch = _seg_tta_batch([[dict(type='RandomFlip', prob=0.0)]], files)
    plain = model.test_step(dict(inputs=batch['inputs'][0],
                                 data_samples=copy.deepcopy(batch['data_samples'][0])))[0]
    merged = SegTTAModel(model).test_step(copy.deepcopy(batch))[0]
    assert torch.equal(merged.pred_sem_seg.data, plain.pred_sem_seg.data)
    assert tuple(merged.seg_logits.shape) == (30, 44)
    torch.testing.assert_close(merged.seg_logits.data, plain.seg_logits.data.log_softmax(0),
                               rtol=0, atol=1e-5)


def test_seg_tta_averages_the_unflipped_probabilities_and_feeds_the_metric(seg_files):
    """Flip / no flip of a non-equivariant model: p = (softmax(L) + flip(softmax(L_f))) / 2,
    L_f the plain logits of the flipped input; the ground truth reaches IoUMetric unflipped."""
    files, seg = seg_files
    model = _segmentor()
    batch = _seg_tta_batch([FLIP_VIEWS], files)
    flipped_sample = copy.deepcopy(batch['data_samples'][0][0])
    flipped_sample.set_metainfo(dict(flip=False, flip_direction=None))
    in_flipped_frame = model.test_step(dict(inputs=batch['inputs'][0],
                                            data_samples=[flipped_sample]))[0]
    plain = model.test_step(dict(inputs=batch['inputs'][1],
                                 data_samples=copy.deepcopy(batch['data_samples'][1])))[0]
    expected = (plain.seg_logits.data.softmax(0)
                + in_flipped_frame.seg_logits.data.flip(-1).softmax(0)) / 2
    assert not torch.allclose(plain.seg_logits.data.softmax(0), expected, atol=1e-3)
    merged = SegTTAModel(model).test_step(copy.deepcopy(batch))
    torch.testing.assert_close(merged[0].seg_logits.data.softmax(0), expected, rtol=0,
                               atol=1e-6)
    assert torch.equal(merged[0].pred_sem_seg.data[0], expected.argmax(0))
    assert torch.equal(merged[0].gt_sem_seg.data[0, :30, :44], torch.from_numpy(seg).long())
    metric = IoUMetric()
    metric.dataset_meta = dict(classes=('a', 'b', 'c', 'd'))
    metric.process({}, merged)
    correct = (expected.argmax(0)[:, 1:] == torch.from_numpy(seg[:, 1:]).long()).float().mean()
    assert metric.evaluate(1)['aAcc'] == pytest.approx(100 * correct.item(), abs=0.01)


def test_seg_tta_of_a_flip_equivariant_model_equals_one_view_at_every_scale(seg_files):
    """A pointwise model is flip-equivariant: flip / no flip averages two equal probability
    maps. Three scales x two flips give six views, each resized back to 30x44."""
    files, _ = seg_files
    model = _segmentor(pointwise=True)
    single = SegTTAModel(model).test_step(
        _seg_tta_batch([[dict(type='RandomFlip', prob=0.0)]], files))[0]
    flips = SegTTAModel(model).test_step(_seg_tta_batch([FLIP_VIEWS], files))[0]
    torch.testing.assert_close(flips.seg_logits.data, single.seg_logits.data, rtol=0, atol=1e-5)
    scales = [[dict(type='Resize', scale=s) for s in ((33, 23), (44, 30), (55, 38))],
              FLIP_VIEWS]
    batch = _seg_tta_batch(scales, files)
    assert len(batch['inputs']) == 6
    assert {tuple(x[0].shape[1:]) for x in batch['inputs']} == {(23, 33), (30, 44), (38, 55)}
    merged = SegTTAModel(model).test_step(batch)[0]
    assert tuple(merged.pred_sem_seg.data.shape) == (1, 30, 44)
    torch.testing.assert_close(merged.seg_logits.data.exp().sum(0), torch.ones(30, 44))


def test_seg_tta_refuses_views_of_different_sizes():
    views = []
    for size in ((4, 6), (4, 8)):
        sample = DataSample(metainfo=dict(img_path='x.png'))
        sample.seg_logits = PixelData(data=torch.zeros(3, *size))
        views.append(sample)
    with pytest.raises(ValueError, match='x.png have seg_logits of different shapes'):
        SegTTAModel(_segmentor()).merge_preds([views])


def test_seg_tta_cleans_the_merged_labels_as_the_segmentor_does(seg_files):
    """With ``test_cfg.keep_largest_component`` the merged labels are cleaned after the merge
    (the views' own cleaned labels are not what is averaged): the result equals the clean-up
    applied to the merged labels of the same model without it."""
    files, _ = seg_files
    plain_model = _segmentor()
    cleaning = _segmentor()
    cleaning.test_cfg = dict(cleaning.test_cfg,
                             keep_largest_component=dict(applied_labels=(0, 1, 2, 3)))
    merged = SegTTAModel(plain_model).test_step(_seg_tta_batch([FLIP_VIEWS], files))[0]
    cleaned = SegTTAModel(cleaning).test_step(_seg_tta_batch([FLIP_VIEWS], files))[0]
    expected = keep_largest_component(merged.pred_sem_seg.data, (0, 1, 2, 3))
    assert not torch.equal(expected, merged.pred_sem_seg.data)  # there were islands
    assert torch.equal(cleaned.pred_sem_seg.data, expected)
    torch.testing.assert_close(cleaned.seg_logits.data, merged.seg_logits.data)


def test_hippocampus_tta_averages_four_mirrored_volumes_in_the_original_frame():
    """The Hippocampus ``tta_pipeline`` on a real case: four views (no flip, axis 0, axis 2,
    both), each predicted back in the original frame; the merge is the mean of the plain
    predictions of the four mirrored volumes, each mirrored back by hand, and the labels reach
    the metric unflipped."""
    cfg = Config.fromfile(str(REPO_ROOT / 'configs/_base_/datasets/hippocampus.py'))
    root = shared_data('hippocampus')
    case = dict(img_path=str(root / 'imagesTr/hippocampus_003.nii.gz'),
                seg_map_path=str(root / 'labelsTr/hippocampus_003.nii.gz'))
    results = dict(case)
    for transform in copy.deepcopy(cfg.tta_pipeline):
        results = TRANSFORMS.build(transform)(results)
    batch = pseudo_collate([results])
    assert [s[0].flip_axes for s in batch['data_samples']] == [(), (0,), (2,), (0, 2)]
    model = tiny_segmentor()
    image = batch['inputs'][0][0].float()
    label = torch.from_numpy(np.asarray(nib.load(case['seg_map_path']).dataobj)).long()
    probs = []
    for axes in ((), (0,), (2,), (0, 2)):
        view = image.flip([1 + a for a in axes]) if axes else image
        sample = DataSample(metainfo=dict(img_shape=tuple(view.shape[1:]),
                                          ori_shape=tuple(view.shape[1:])))
        logits = model.test_step(dict(inputs=[view], data_samples=[sample]))[0].seg_logits.data
        probs.append((logits.flip([1 + a for a in axes]) if axes else logits).softmax(0))
    expected = torch.stack(probs).mean(0)
    assert not torch.allclose(probs[0], expected, atol=1e-3)  # the views differ
    merged = SegTTAModel(model).test_step(batch)[0]
    torch.testing.assert_close(merged.seg_logits.data.softmax(0), expected, rtol=0, atol=1e-5)
    assert torch.equal(merged.pred_sem_seg.data[0], expected.argmax(0))
    d, h, w = label.shape  # the packed labels may carry the 255 end-padding of the batch
    assert torch.equal(merged.gt_sem_seg.data[0, :d, :h, :w], label)


# ------------------------------------------------------------------------ tools/test.py --tta
def test_use_tta_wraps_the_model_and_replaces_the_innermost_test_pipeline():
    tool = load_tool('test.py')
    loader = dict(dataset=dict(type='RepeatDataset', times=2,
                               dataset=dict(type='VOCDataset', pipeline=['plain'])))
    cfg = Config(dict(model=dict(type='SingleStageDetector', backbone='b'),
                      val_dataloader=loader, test_dataloader=loader,
                      tta_model=dict(type='DetTTAModel', merge='nms'), tta_pipeline=['tta']))
    tool.use_tta(cfg, 'my_config.py')
    assert cfg.model == dict(type='DetTTAModel', merge='nms',
                             module=dict(type='SingleStageDetector', backbone='b'))
    assert cfg.test_dataloader.dataset.dataset.pipeline == ['tta']
    assert cfg.val_dataloader.dataset.dataset.pipeline == ['plain']
    without_pipeline = Config(dict(model=dict(type='SingleStageDetector'),
                                   test_dataloader=loader, tta_model=dict(type='DetTTAModel')))
    with pytest.raises(ConfigError, match='my_config.py: --tta needs tta_pipeline in the config'):
        tool.use_tta(without_pipeline, 'my_config.py')


def test_dataset_configs_define_tta():
    for name, model_type, num_views in (('voc_bccd', 'DetTTAModel', 4),
                                        ('camvid', 'SegTTAModel', 6),
                                        ('hippocampus', 'SegTTAModel', 4)):
        cfg = Config.fromfile(str(REPO_ROOT / f'configs/_base_/datasets/{name}.py'))
        assert cfg.tta_model.type == model_type
        tta = TRANSFORMS.build(copy.deepcopy(cfg.tta_pipeline[-1]))
        assert len(tta.subroutines) == num_views


def test_test_tool_tta_end_to_end_on_the_demo(tmp_path, demo_root, monkeypatch):
    """``tools/test.py CONFIG CKPT --tta`` on 8 demo images (160x160, two scales x flips):
    the runner tests a DetTTAModel and the COCO metric gets its predictions; a config without
    ``tta_model`` is refused with the config's name."""
    tool = load_tool('test.py')
    cfg = load_config(str(DEMO_CONFIG))
    torch.manual_seed(0)
    checkpoint = tmp_path / 'random.pth'
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), checkpoint)
    options = [f'test_dataloader.dataset.data_root={demo_root}/coco/',
               f'test_evaluator.ann_file={demo_root}/coco/annotations/instances_val.json',
               'model.bbox_head.test_cfg.score_thr=0.0', 'model.bbox_head.test_cfg.max_per_img=20']
    with pytest.raises(ConfigError, match=f'{DEMO_CONFIG}: --tta needs tta_model and '
                                          'tta_pipeline'):
        tool.main([str(DEMO_CONFIG), str(checkpoint), '--tta', '--cfg-options', *options])
    config = tmp_path / 'demo_tta.py'
    config.write_text(
        f"_base_ = ['{DEMO_CONFIG}']\n"
        "tta_model = dict(type='DetTTAModel', merge='wbf', iou_thr=0.55, max_per_img=20)\n"
        "tta_pipeline = [dict(type='LoadImageFromFile'), dict(type='TestTimeAug', transforms=[\n"
        "    [dict(type='Resize', scale=(160, 160)), dict(type='Resize', scale=(192, 192))],\n"
        "    [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)],\n"
        "    [dict(type='LoadAnnotations', with_bbox=True)], [dict(type='PackInputs')]])]\n")
    seen = []
    original = DetTTAModel.merge_preds

    def recording(self, data_samples_list):
        seen.append([len(views) for views in data_samples_list])
        merged = original(self, data_samples_list)
        seen.append([len(sample.pred_instances) for sample in merged])
        return merged

    monkeypatch.setattr(DetTTAModel, 'merge_preds', recording)
    metrics = tool.main([str(config), str(checkpoint), '--tta', '--work-dir',
                         str(tmp_path / 'work'), '--cfg-options', *options])
    assert seen[0] == [4] * 8  # one batch of the 8 val images, 4 views each
    assert all(0 < n <= 20 for n in seen[1])
    assert -1.0 <= metrics['coco/bbox_mAP'] <= 1.0
