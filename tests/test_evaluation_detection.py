"""Detection metrics: VOC AP on hand-computed cases, COCO metric parity with pycocotools."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator

from toolbox.evaluation import CocoMetric, VOCMetric, average_precision, eval_voc_map
from toolbox.evaluation.coco_metric import BBOX_STATS, load_coco_annotations
from toolbox.registry import METRICS
from toolbox.structures import DataSample, InstanceData

DATA = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data'
COCO128_ANN = DATA / 'coco128-seg' / 'annotations' / 'instances_train2017.json'
needs_coco128 = pytest.mark.skipif(not COCO128_ANN.is_file(),
                                   reason=f'real data not found at {COCO128_ANN}')


def det(boxes, scores, labels):
    return dict(bboxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                scores=np.asarray(scores, np.float32), labels=np.asarray(labels, np.int64))


def ann(boxes, labels, ignore_boxes=(), ignore_labels=()):
    return dict(bboxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                labels=np.asarray(labels, np.int64),
                bboxes_ignore=np.asarray(ignore_boxes, np.float32).reshape(-1, 4),
                labels_ignore=np.asarray(ignore_labels, np.int64))


# --------------------------------------------------------------------------------------------
# VOC: hand-computed cases
# --------------------------------------------------------------------------------------------

def test_voc_hand_computed_two_images():
    # Class 0, 3 GTs: A=[0,0,10,10], B=[20,20,30,30] in image 0, C=[40,40,50,50] in image 1.
    # Detections in score order:
    #   0.9 exactly A                         -> TP
    #   0.8 exactly A again (A taken)         -> FP
    #   0.7 [21,20,31,30]: IoU(B) = 90/110    -> TP
    #   0.6 far from everything (image 1)     -> FP
    #   0.5 [45,40,55,50]: IoU(C) = 50/150    -> FP (below 0.5)
    # cum TP 1,1,2,2,2  cum FP 0,1,1,2,3
    # recall    1/3, 1/3, 2/3, 2/3, 2/3
    # precision 1,   1/2, 2/3, 1/2, 2/5
    # area: envelope 1 on (0,1/3], 2/3 on (1/3,2/3] -> 1/3 * 1 + 1/3 * 2/3 = 5/9
    # 11 points: t = 0..0.3 -> 1 (4 points); t = 0.4..0.6 -> 2/3 (3 points); t >= 0.7 -> 0
    #            (4 + 3 * 2/3) / 11 = 6/11
    dets = [det([[21, 20, 31, 30], [0, 0, 10, 10], [0, 0, 10, 10]], [0.7, 0.8, 0.9], [0, 0, 0]),
            det([[45, 40, 55, 50], [100, 100, 110, 110]], [0.5, 0.6], [0, 0])]
    anns = [ann([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0]), ann([[40, 40, 50, 50]], [0])]
    mean_ap, per_class = eval_voc_map(dets, anns, num_classes=1, iou_thr=0.5, mode='area')
    assert mean_ap == pytest.approx(5 / 9, abs=1e-6)
    assert per_class[0] == dict(num_gts=3, num_dets=5, recall=pytest.approx(2 / 3), ap=mean_ap)
    mean_ap11, _ = eval_voc_map(dets, anns, num_classes=1, iou_thr=0.5, mode='11points')
    assert mean_ap11 == pytest.approx(6 / 11, abs=1e-6)
    # At IoU 0.3 the last detection matches C: recall reaches 1 with precision 3/5.
    # area: 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 34/45
    mean_ap_03, per_class = eval_voc_map(dets, anns, num_classes=1, iou_thr=0.3)
    assert mean_ap_03 == pytest.approx(34 / 45, abs=1e-6)
    assert per_class[0]['recall'] == pytest.approx(1.0)


def test_voc_11points_exact_recall_thresholds():
    # 10 GTs, 3 true positives: recall 0.1, 0.2, 0.3 exactly (3/10), precision 1.
    # 11 points: t = 0, 0.1, 0.2, 0.3 reached -> 4/11 (np.arange(0, 1.1, 0.1) would miss 0.3).
    # area: 0.3 * 1 = 0.3
    gts = np.array([[20 * i, 0, 20 * i + 10, 10] for i in range(10)], np.float32)
    dets = [det(gts[:3], [0.9, 0.8, 0.7], [0, 0, 0])]
    anns = [ann(gts, np.zeros(10))]
    assert eval_voc_map(dets, anns, num_classes=1, mode='11points')[0] == pytest.approx(
        4 / 11, abs=1e-6)
    assert eval_voc_map(dets, anns, num_classes=1, mode='area')[0] == pytest.approx(0.3, abs=1e-6)


def test_voc_difficult_is_neither_tp_nor_fp():
    # GT A (normal) and D (difficult). The best detection hits D: ignored, so the curve is
    # just the TP on A -> AP 1, recall 1 with 1 counted GT. A detection hitting D below the
    # IoU threshold is an ordinary FP: curve TP, FP -> AP 1 (area), recall 1.
    # Without the ignore rule the first detection would be an FP: AP 1/2.
    a, d = [0, 0, 10, 10], [50, 50, 60, 60]
    anns = [ann([a], [0], [d], [0])]
    dets = [det([d, a], [0.95, 0.9], [0, 0])]
    mean_ap, per_class = eval_voc_map(dets, anns, num_classes=1)
    assert mean_ap == pytest.approx(1.0, abs=1e-6)
    assert per_class[0] == dict(num_gts=1, num_dets=2, recall=1.0, ap=pytest.approx(1.0))
    # Two detections on D are both ignored (an ignored box may absorb several).
    dets = [det([d, d, a], [0.95, 0.94, 0.9], [0, 0, 0])]
    assert eval_voc_map(dets, anns, num_classes=1)[0] == pytest.approx(1.0, abs=1e-6)
    # A low-IoU detection near D (IoU 25/175) scored first is a FP: precision 0 then 1/2,
    # recall 0 then 1 -> area 1 * 1/2.
    dets = [det([[55, 55, 65, 65], a], [0.95, 0.9], [0, 0])]
    assert eval_voc_map(dets, anns, num_classes=1)[0] == pytest.approx(0.5, abs=1e-6)


def test_voc_class_without_gt_no_detections_and_perfect():
    boxes = [[0, 0, 10, 10], [20, 20, 40, 40]]
    anns = [ann(boxes, [0, 0])]
    # Class 1 has detections but no GT: ap 0, recall 0, left out of the mean.
    dets = [det(boxes + [[5, 5, 15, 15]], [0.9, 0.8, 0.7], [0, 0, 1])]
    mean_ap, per_class = eval_voc_map(dets, anns, num_classes=3)
    assert mean_ap == pytest.approx(1.0)
    assert per_class[1] == dict(num_gts=0, num_dets=1, recall=0.0, ap=0.0)
    assert per_class[2] == dict(num_gts=0, num_dets=0, recall=0.0, ap=0.0)
    # No detections at all.
    for mode in ('area', '11points'):
        mean_ap, per_class = eval_voc_map([det(np.zeros((0, 4)), [], [])], anns, num_classes=1,
                                          mode=mode)
        assert mean_ap == 0.0 and per_class[0]['recall'] == 0.0
        assert eval_voc_map([det(boxes, [0.9, 0.8], [0, 0])], anns, num_classes=1,
                            mode=mode)[0] == pytest.approx(1.0)
    # No images, no GT anywhere.
    assert eval_voc_map([], [], num_classes=2)[0] == 0.0
    with pytest.raises(ValueError, match='labels must be in'):
        eval_voc_map([det(boxes, [0.9, 0.8], [0, 5])], anns, num_classes=2)


def test_average_precision_direct():
    # Non-monotone precision: envelope takes the later, higher value.
    recall = np.array([0.25, 0.25, 0.5, 0.75])
    precision = np.array([1.0, 0.5, 2 / 3, 0.75])
    # area: 0.25 * 1 + 0.25 * 0.75 + 0.25 * 0.75 = 0.625
    assert average_precision(recall, precision, 'area') == pytest.approx(0.625)
    # 11 points: t = 0..0.2 -> 1; t = 0.3..0.7 -> 0.75; t = 0.8..1 -> 0 : (3 + 3.75) / 11
    assert average_precision(recall, precision, '11points') == pytest.approx(6.75 / 11)
    with pytest.raises(ValueError, match='mode'):
        average_precision(recall, precision, 'bad')


def _devkit_reference(dets, anns, cls, iou_thr):
    """Straightforward VOC devkit matching, one detection at a time (test reference)."""
    from toolbox.evaluation import bbox_iou
    items = [(s, i, b) for i, d in enumerate(dets)
             for b, s, lab in zip(d['bboxes'], d['scores'], d['labels']) if lab == cls]
    items.sort(key=lambda x: -x[0])
    taken = [np.zeros(int((a['labels'] == cls).sum()), bool) for a in anns]
    npos = sum(len(t) for t in taken)
    tp, fp = [], []
    for _, i, box in items:
        gt = anns[i]['bboxes'][anns[i]['labels'] == cls]
        ign = anns[i]['bboxes_ignore'][anns[i]['labels_ignore'] == cls]
        ious = bbox_iou(box[None], np.concatenate([gt, ign]))[0]
        j = int(ious.argmax()) if ious.size else -1
        if j >= 0 and ious[j] >= iou_thr:
            if j >= len(gt):
                continue
            if not taken[i][j]:
                taken[i][j] = True
                tp.append(1), fp.append(0)
                continue
        tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    return average_precision(tp / max(npos, 1), tp / np.maximum(tp + fp, 1), 'area')


def test_voc_matches_devkit_reference_on_random_data():
    rng = np.random.default_rng(0)
    dets, anns = [], []
    for _ in range(20):
        n_gt, n_ign, n_det = rng.integers(0, 6), rng.integers(0, 3), rng.integers(0, 12)
        xy = rng.uniform(0, 60, (n_gt + n_ign, 2))
        gt = np.concatenate([xy, xy + rng.uniform(5, 30, xy.shape)], 1).astype(np.float32)
        gl = rng.integers(0, 3, n_gt + n_ign)
        # Detections around GT boxes (several per box, so duplicates occur), mostly with the
        # box's class; some hit ignored boxes.
        src = rng.integers(0, len(gt), n_det) if len(gt) else np.zeros(0, np.int64)
        boxes = (gt[src] + rng.normal(0, 1.5, (len(src), 4))).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.where(rng.uniform(size=len(src)) < 0.8, gl[src], rng.integers(0, 3, len(src)))
        dets.append(det(boxes, rng.uniform(0, 1, len(src)), labels))
        anns.append(ann(gt[:n_gt], gl[:n_gt], gt[n_gt:], gl[n_gt:]))
    _, per_class = eval_voc_map(dets, anns, num_classes=3, iou_thr=0.5)
    for c in range(3):
        assert per_class[c]['ap'] == pytest.approx(_devkit_reference(dets, anns, c, 0.5),
                                                   abs=1e-12)
    assert all(0.2 < r['ap'] < 0.95 for r in per_class)  # non-trivial cases


def _sample(img_id, pred, gt=None, ignored=None, shape=(64, 64)):
    s = DataSample(metainfo=dict(img_id=img_id, ori_shape=shape))
    s.pred_instances = InstanceData(bboxes=torch.as_tensor(pred['bboxes']),
                                    scores=torch.as_tensor(pred['scores']),
                                    labels=torch.as_tensor(pred['labels']))
    if gt is not None:
        s.gt_instances = InstanceData(bboxes=torch.as_tensor(gt[0], dtype=torch.float32),
                                      labels=torch.as_tensor(gt[1], dtype=torch.int64))
    if ignored is not None:
        s.ignored_instances = InstanceData(bboxes=torch.as_tensor(ignored[0],
                                                                  dtype=torch.float32),
                                           labels=torch.as_tensor(ignored[1],
                                                                  dtype=torch.int64))
    return s


def test_voc_metric_through_evaluator():
    # Same data as test_voc_hand_computed_two_images plus an ignored box hit by a detection.
    samples = [
        _sample(0, det([[21, 20, 31, 30], [0, 0, 10, 10], [0, 0, 10, 10], [50, 0, 60, 10]],
                       [0.7, 0.8, 0.9, 0.95], [0, 0, 0, 0]),
                gt=([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0]),
                ignored=([[50, 0, 60, 10]], [0])),
        _sample(1, det([[45, 40, 55, 50], [100, 100, 110, 110]], [0.5, 0.6], [0, 0]),
                gt=([[40, 40, 50, 50]], [0])),
    ]
    evaluator = Evaluator(METRICS.build(dict(type='VOCMetric', iou_thrs=[0.3, 0.5])))
    evaluator.dataset_meta = dict(classes=('cell', 'other'))
    evaluator.process(samples)
    metrics = evaluator.evaluate(len(samples))
    # AP30 = 34/45 = 0.75556, AP50 = 5/9 = 0.55556, mAP = (34/45 + 25/45) / 2 = 59/90
    assert metrics == {'pascal_voc/AP30': round(34 / 45, 4), 'pascal_voc/AP50': round(5 / 9, 4),
                       'pascal_voc/mAP': round(59 / 90, 4)}
    metric = VOCMetric(eval_mode='11points')
    metric.dataset_meta = dict(classes=('cell',))
    metric.process(None, [s.to_dict() for s in samples])
    assert metric.compute_metrics(metric.results) == {'AP50': round(6 / 11, 4),
                                                      'mAP': round(6 / 11, 4)}
    with pytest.raises(ValueError, match='eval_mode'):
        VOCMetric(eval_mode='voc12')


# --------------------------------------------------------------------------------------------
# COCO: parity with pycocotools on real annotations
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def coco128():
    """GT of coco128 as samples plus deterministic fake predictions derived from it."""
    data = json.loads(COCO128_ANN.read_text())
    cat_ids = sorted(c['id'] for c in data['categories'])
    names = {c['id']: c['name'] for c in data['categories']}
    label_of = {c: i for i, c in enumerate(cat_ids)}
    by_img = {img['id']: [] for img in data['images']}
    for a in data['annotations']:
        by_img[a['image_id']].append(a)
    rng = np.random.default_rng(2024)
    samples, dets_ref = [], []
    for img in sorted(data['images'], key=lambda x: x['id']):
        anns = by_img[img['id']]
        xywh = np.array([a['bbox'] for a in anns], np.float64).reshape(-1, 4)
        gt = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1).astype(np.float32)
        gt_labels = np.array([label_of[a['category_id']] for a in anns], np.int64)
        keep = rng.uniform(size=len(gt)) < 0.8  # drop about 20% of the objects
        wh = np.tile(xywh[keep, 2:], 2)
        boxes = gt[keep] + rng.normal(0, 0.08, (int(keep.sum()), 4)) * wh  # jitter
        labels = gt_labels[keep]
        n_fp = rng.integers(0, 5)  # false positives with random classes
        fp_xy = rng.uniform(0, [img['width'] - 20, img['height'] - 20], (n_fp, 2))
        fp = np.concatenate([fp_xy, fp_xy + rng.uniform(4, 200, (n_fp, 2))], 1)
        boxes = np.concatenate([boxes, fp]).astype(np.float32)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.concatenate([labels, rng.integers(0, len(cat_ids), n_fp)])
        scores = rng.uniform(0.05, 1.0, len(boxes)).astype(np.float32)
        samples.append(dict(img_id=img['id'], ori_shape=(img['height'], img['width']),
                            pred_instances=dict(bboxes=torch.from_numpy(boxes),
                                                scores=torch.from_numpy(scores),
                                                labels=torch.from_numpy(labels)),
                            gt_instances=dict(bboxes=torch.from_numpy(gt),
                                              labels=torch.from_numpy(gt_labels))))
        b64 = boxes.astype(np.float64)
        for b, s, lab in zip(b64, scores, labels):
            dets_ref.append({'image_id': img['id'], 'category_id': cat_ids[lab],
                             'bbox': [b[0], b[1], b[2] - b[0], b[3] - b[1]], 'score': float(s)})
    meta = dict(classes=tuple(names[c] for c in cat_ids), cat_ids=cat_ids)
    return dict(samples=samples, dets=dets_ref, meta=meta, data=data)


def _run_metric(samples, meta, **kwargs):
    metric = CocoMetric(**kwargs)
    metric.dataset_meta = meta
    metric.process(None, samples)
    return metric.compute_metrics(metric.results)


def _pycocotools_stats(ann, dets, use_cats=True, max_dets=(1, 10, 100)):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    gt = COCO(str(ann))
    coco_eval = COCOeval(gt, gt.loadRes(copy.deepcopy(dets)), 'bbox')
    coco_eval.params.useCats = int(use_cats)
    coco_eval.params.maxDets = list(max_dets)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return np.array(coco_eval.stats)


@needs_coco128
def test_coco_bbox_parity_with_pycocotools(coco128):
    reference = _pycocotools_stats(COCO128_ANN, coco128['dets'])
    assert 0.2 < reference[0] < 0.9 and np.all(reference > 0)  # a non-degenerate case
    for backend in ('faster_coco_eval', 'pycocotools'):
        metrics = _run_metric(coco128['samples'], coco128['meta'], ann_file=str(COCO128_ANN),
                              backend=backend, classwise=True)
        assert list(metrics) == [name for name, *_ in BBOX_STATS]
        np.testing.assert_allclose(list(metrics.values()), reference, rtol=0, atol=1e-9)


@needs_coco128
def test_coco_proposal_recall_parity(coco128):
    nums = (1, 10, 100)
    # pycocotools stats[6:9] are AR at maxDets[0..2], stats[9:12] AR small/medium/large at
    # maxDets[2], computed class-agnostically with useCats = 0.
    reference = _pycocotools_stats(COCO128_ANN, coco128['dets'], use_cats=False, max_dets=nums)
    for backend in ('faster_coco_eval', 'pycocotools'):
        metrics = _run_metric(coco128['samples'], coco128['meta'], ann_file=str(COCO128_ANN),
                              backend=backend, metric='proposal', proposal_nums=nums)
        assert list(metrics) == ['AR@1', 'AR@10', 'AR@100', 'AR_s@100', 'AR_m@100',
                                 'AR_l@100']
        np.testing.assert_allclose(list(metrics.values()), reference[6:12], rtol=0, atol=1e-9)
    assert metrics['AR@1'] < metrics['AR@10'] < metrics['AR@100']


@needs_coco128
def test_coco_format_only_writes_real_category_ids(coco128, tmp_path):
    prefix = tmp_path / 'sub' / 'results'
    samples = [{k: v for k, v in s.items() if k != 'gt_instances'} for s in coco128['samples']]
    assert _run_metric(samples, coco128['meta'], format_only=True,
                       outfile_prefix=str(prefix)) == {}
    written = json.loads((tmp_path / 'sub' / 'results.bbox.json').read_text())
    assert written == coco128['dets']  # ids, xywh boxes, scores, real category ids
    cat_ids = {d['category_id'] for d in written}
    assert cat_ids <= set(coco128['meta']['cat_ids']) and max(cat_ids) > 80
    assert sorted(p.name for p in (tmp_path / 'sub').iterdir()) == ['results.bbox.json']
    with pytest.raises(ValueError, match='outfile_prefix'):
        CocoMetric(format_only=True)


@needs_coco128
def test_coco_in_memory_gt_equals_json_gt(coco128, tmp_path):
    # Mark every 5th object as ignored; write the same GT as a json and compare.
    samples, images, annotations = [], [], []
    cat_ids = coco128['meta']['cat_ids']
    for s in coco128['samples'][:64]:
        gt_boxes = s['gt_instances']['bboxes'].numpy()
        gt_labels = s['gt_instances']['labels'].numpy()
        ignored = np.arange(len(gt_boxes)) % 5 == 4
        samples.append(dict(s, gt_instances=dict(bboxes=torch.from_numpy(gt_boxes[~ignored]),
                                                  labels=torch.from_numpy(gt_labels[~ignored])),
                            ignored_instances=dict(bboxes=torch.from_numpy(gt_boxes[ignored]),
                                                   labels=torch.from_numpy(gt_labels[ignored]))))
        images.append({'id': s['img_id'], 'height': s['ori_shape'][0],
                       'width': s['ori_shape'][1]})
        for crowd in (0, 1):
            sel = ignored == bool(crowd)
            for b, lab in zip(gt_boxes[sel].astype(np.float64), gt_labels[sel]):
                w, h = b[2] - b[0], b[3] - b[1]
                annotations.append({'id': len(annotations) + 1, 'image_id': s['img_id'],
                                    'category_id': cat_ids[lab], 'bbox': [b[0], b[1], w, h],
                                    'area': w * h, 'iscrowd': crowd})
    ann_file = tmp_path / 'gt.json'
    ann_file.write_text(json.dumps({'images': images, 'annotations': annotations,
                                    'categories': coco128['data']['categories']}))
    from_json = _run_metric(samples, coco128['meta'], ann_file=str(ann_file))
    for backend in ('faster_coco_eval', 'pycocotools'):
        in_memory = _run_metric(samples, coco128['meta'], backend=backend)
        assert list(in_memory) == list(from_json)
        np.testing.assert_allclose(list(in_memory.values()), list(from_json.values()),
                                   rtol=0, atol=1e-12)
    assert from_json['bbox_mAP'] > 0.2


def test_coco_empty_predictions_give_zeros():
    meta = dict(classes=('a', 'b'), cat_ids=[3, 7])
    empty = det(np.zeros((0, 4)), [], [])
    samples = [
        _sample(10, empty, gt=([[0, 0, 20, 20], [30, 30, 60, 60]], [0, 1])).to_dict(),
        _sample(11, empty, gt=([[5, 5, 40, 50]], [1])).to_dict(),
    ]
    for backend in ('faster_coco_eval', 'pycocotools'):
        metrics = _run_metric(samples, meta, backend=backend, metric=['bbox', 'proposal'],
                              classwise=True)
        # GT areas: 20x20 = 400 and 30x30 = 900 small, 35x45 = 1575 medium, none large:
        # every number is 0 except the large-object ones, -1 (COCO's "no ground truth").
        expected = {k: 0.0 for k in metrics}
        expected.update({'bbox_mAP_l': -1.0, 'bbox_AR_l': -1.0, 'AR_l@1000': -1.0})
        assert metrics == expected
    # One perfect detection of class b (2 GTs in all): recall 1/2 at precision 1 at every IoU.
    samples[1] = _sample(11, det([[5, 5, 40, 50]], [0.9], [1]), gt=([[5, 5, 40, 50]], [1]))
    metrics = _run_metric(samples, meta)
    # class a: AP 0; class b: precision 1 for recall thresholds 0..0.5 (51 of 101) -> 51/101
    assert metrics['bbox_mAP'] == pytest.approx((0 + 51 / 101) / 2, abs=1e-12)


def test_coco_evaluator_prefix_and_labels_to_cat_ids():
    # Two classes with COCO ids 5 and 90; a correct detection labelled 1 must match the GT of
    # class 1 (category 90) for AP 1.
    evaluator = Evaluator(METRICS.build(dict(type='CocoMetric', backend='pycocotools')))
    evaluator.dataset_meta = dict(classes=('x', 'y'), cat_ids=[5, 90])
    samples = [_sample(1, det([[10, 10, 120, 120]], [0.8], [1]),
                       gt=([[10, 10, 120, 120]], [1]), shape=(200, 200))]
    evaluator.process(samples)
    metrics = evaluator.evaluate(1)
    # precision is tp / (tp + fp + eps) in COCOeval, hence approx
    assert metrics['coco/bbox_mAP'] == pytest.approx(1.0, abs=1e-12)
    assert metrics['coco/bbox_mAP_s'] == -1.0 and metrics['coco/bbox_AR_1'] == 1.0
    # with class 0 (category 5) predicted instead, nothing matches
    evaluator.process([_sample(1, det([[10, 10, 120, 120]], [0.8], [0]),
                               gt=([[10, 10, 120, 120]], [1]), shape=(200, 200))])
    assert evaluator.evaluate(1)['coco/bbox_mAP'] == 0.0


def test_coco_bad_annotation_files(tmp_path):
    good = {'images': [{'id': 1}], 'categories': [{'id': 1, 'name': 'a'}],
            'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 4, 5]}]}
    path = tmp_path / 'ann.json'
    path.write_text(json.dumps(good))
    loaded = load_coco_annotations(path)
    assert loaded['annotations'][0]['area'] == 20.0 and loaded['annotations'][0]['iscrowd'] == 0

    def broken(mutate, match):
        data = copy.deepcopy(good)
        mutate(data)
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=match) as err:
            CocoMetric(ann_file=str(path))
        assert str(path) in str(err.value)

    broken(lambda d: d['annotations'][0].pop('bbox'), r"annotations\[0\] has no field 'bbox'")
    broken(lambda d: d.pop('categories'), "missing top-level field 'categories'")
    broken(lambda d: d['images'][0].pop('id'), r"images\[0\] has no field 'id'")
    broken(lambda d: d['annotations'][0].update(bbox=[1, 2]), r"'bbox' must be \[x, y, w, h\]")
    broken(lambda d: d['annotations'][0].update(category_id=9), 'category_id')
    broken(lambda d: d['annotations'][0].update(id=0), "'id' must be unique and positive")
    path.write_text('{"images": [')
    with pytest.raises(ValueError, match='is not valid JSON'):
        CocoMetric(ann_file=str(path))
    with pytest.raises(FileNotFoundError, match='missing.json'):
        CocoMetric(ann_file=str(tmp_path / 'missing.json'))
    with pytest.raises(ValueError, match='backend'):
        CocoMetric(backend='detectron2')
