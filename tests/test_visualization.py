"""Pictures and analysis: DetSegVisualizer, PredictionVisualizationHook, the confusion
matrices and PR curves (hand cases), and the tools demo.py, test.py --show-dir,
browse_dataset.py, analyze_logs.py and visualize_seg.py run end to end on the demo data."""
import importlib.util
import json
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData, PixelData

from toolbox.evaluation import eval_voc_map
from toolbox.evaluation.analysis import (detection_confusion_matrix, precision_recall_curves,
                                         segmentation_confusion_matrix)
from toolbox.structures import IGNORE_INDEX, DataSample
from toolbox.visualization import DetSegVisualizer, PredictionVisualizationHook

from .conftest import REPO_ROOT

DEMO_CONFIG = str(REPO_ROOT / 'configs' / 'retinanet_r18_fpn_160_demo.py')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def demo_options(demo_root):
    coco = f'{demo_root}/coco/'
    return [f'{split}_dataloader.dataset.data_root={coco}' for split in ('train', 'val', 'test')] \
        + [f'test_evaluator.ann_file={coco}annotations/instances_val.json',
           f'val_evaluator.ann_file={coco}annotations/instances_val.json',
           'test_dataloader.batch_size=4']


RANDOM_MODEL_OPTIONS = ['model.bbox_head.test_cfg.score_thr=0.0',  # a random head scores ~0.01
                        'model.bbox_head.test_cfg.max_per_img=100']


@pytest.fixture(scope='module')
def demo_checkpoint(tmp_path_factory):
    """A randomly initialised demo RetinaNet, saved as a state dict."""
    from toolbox.engine import load_config
    from toolbox.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(load_config(DEMO_CONFIG).model)
    path = tmp_path_factory.mktemp('ckpt') / 'random.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    return str(path)


# ---------------------------------------------------------------- analysis: hand cases


def test_detection_confusion_matrix_equals_the_hand_counted_matrix():
    """Classes 0, 1; index 2 = background. Image 1: a true positive, a box found under the
    wrong class (counted there and as missed), a false positive, a detection below the score
    threshold. Image 2: a missed box, a true positive at IoU 0.9, a detection on an ignored
    box (left out)."""
    dets = [dict(bboxes=[[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 10, 10]],
                 scores=[0.9, 0.8, 0.7, 0.1], labels=[0, 0, 1, 1]),
            dict(bboxes=[[41, 40, 50, 50], [70, 70, 80, 80]], scores=[0.6, 0.9],
                 labels=[0, 0])]
    anns = [dict(bboxes=[[0, 0, 10, 10], [20, 20, 30, 30]], labels=[0, 1]),
            dict(bboxes=[[0, 0, 10, 10], [40, 40, 50, 50]], labels=[1, 0],
                 bboxes_ignore=[[70, 70, 80, 80]], labels_ignore=[0])]
    matrix = detection_confusion_matrix(dets, anns, num_classes=2, score_thr=0.3, iou_thr=0.5)
    expected = np.array([[2, 0, 0],   # gt 0: two true positives
                         [1, 0, 2],   # gt 1: one found as class 0; two missed
                         [0, 1, 0]])  # background: one false positive of class 1
    np.testing.assert_array_equal(matrix, expected)
    # every detection left is at score >= 0.3; at 0.05 the low one (class 1 on a class-0 box)
    # adds a wrong-class cell
    low = detection_confusion_matrix(dets, anns, num_classes=2, score_thr=0.05)
    np.testing.assert_array_equal(low - matrix, [[0, 1, 0], [0, 0, 0], [0, 0, 0]])


def test_pr_curve_points_are_exact_and_their_area_is_the_voc_ap():
    """One class, 3 boxes in 2 images; detections by score: TP, duplicate (FP), TP, FP."""
    dets = [dict(bboxes=[[0, 0, 10, 10], [0, 0, 10, 9], [30, 30, 40, 40]],
                 scores=[0.9, 0.8, 0.6], labels=[0, 0, 0]),
            dict(bboxes=[[5, 5, 15, 15]], scores=[0.7], labels=[0])]
    anns = [dict(bboxes=[[0, 0, 10, 10]], labels=[0]),
            dict(bboxes=[[5, 5, 15, 15], [50, 50, 60, 60]], labels=[0, 0])]
    curves = precision_recall_curves(dets, anns, num_classes=2, iou_thr=0.5)
    np.testing.assert_array_equal(curves[0]['scores'], [0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(curves[0]['precision'], [1, 1 / 2, 2 / 3, 2 / 4], rtol=0,
                               atol=1e-15)
    np.testing.assert_allclose(curves[0]['recall'], [1 / 3, 1 / 3, 2 / 3, 2 / 3], rtol=0,
                               atol=1e-15)
    assert curves[0]['num_gts'] == 3
    # area under the envelope: 1/3 * 1 + 1/3 * 2/3
    assert curves[0]['ap'] == pytest.approx(1 / 3 + 2 / 9, abs=1e-12)
    _, per_class = eval_voc_map(dets, anns, num_classes=2)
    assert curves[0]['ap'] == pytest.approx(per_class[0]['ap'], abs=1e-12)
    assert curves[1]['num_gts'] == 0 and len(curves[1]['recall']) == 0 and curves[1]['ap'] == 0


def test_segmentation_confusion_matrix_counts_pixels_and_skips_ignored_and_padding():
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
    gt = torch.tensor([[0, 1, 2, IGNORE_INDEX], [2, IGNORE_INDEX, 1, IGNORE_INDEX],
                       [IGNORE_INDEX] * 4])  # padded to (3, 4) with the batch
    matrix = segmentation_confusion_matrix([pred, pred], [gt, gt], num_classes=3)
    expected = 2 * np.array([[1, 0, 0],   # gt 0 -> 0
                             [1, 1, 0],   # gt 1 -> 1 once, -> 0 once
                             [0, 1, 1]])  # gt 2 -> 1 once, -> 2 once
    np.testing.assert_array_equal(matrix, expected)


# ------------------------------------------------------------------------- visualiser


def test_visualizer_draws_boxes_only_where_they_are_and_names_their_classes():
    visualizer = DetSegVisualizer(name='test_boxes', score_thr=0.3)
    visualizer.dataset_meta = dict(classes=('cat', 'dog'))
    image = np.full((64, 96, 3), 100, np.uint8)
    sample = DataSample()
    sample.pred_instances = InstanceData(
        bboxes=torch.tensor([[10.0, 10.0, 40.0, 40.0], [60.0, 40.0, 90.0, 60.0]]),
        labels=torch.tensor([1, 0]), scores=torch.tensor([0.9, 0.1]))
    drawn = visualizer.add_datasample('one', image, sample)
    assert visualizer.drawn_texts == {'pred': ['dog 0.90']}  # the 0.1 box is below 0.3
    changed = (drawn != 100).any(axis=-1)
    assert changed[20:38, 9:12].all()  # the left edge of the box (line width 2 at x = 10)
    assert not changed[28:38, 14:37].any()  # inside the box, below its label
    assert not changed[44:, :].any() and not changed[:, 55:].any()  # outside the drawn box
    assert drawn.shape == image.shape


def test_visualizer_blends_a_segmentation_map_and_lists_the_classes_present():
    visualizer = DetSegVisualizer(name='test_seg', alpha=0.5)
    visualizer.dataset_meta = dict(classes=('sky', 'road', 'car'),
                                   palette=[[0, 0, 200], [200, 0, 0], [0, 200, 0]])
    image = np.full((80, 120, 3), 100, np.uint8)
    seg = torch.full((1, 80, 120), IGNORE_INDEX)
    seg[0, 60:, 80:] = 2
    seg[0, 60:, :40] = 1
    sample = DataSample()
    sample.pred_sem_seg = PixelData(data=seg)
    drawn = visualizer.add_datasample('seg', image, sample)
    assert visualizer.drawn_texts == {'pred': ['road', 'car']}
    np.testing.assert_allclose(drawn[70, 100], [50, 150, 50], atol=1)  # (100 + car) / 2
    np.testing.assert_allclose(drawn[70, 20], [150, 50, 50], atol=1)  # (100 + road) / 2
    assert (drawn[45:80, 41:79] == 100).all()  # ignored pixels (the legend is top left)
    assert (drawn[:40, 70:] == 100).all()


def test_prediction_visualization_hook_draws_the_first_images_every_interval(tmp_path,
                                                                             demo_root):
    from toolbox.datasets import CocoDataset
    dataset = CocoDataset(data_root=f'{demo_root}/coco',
                          ann_file='annotations/instances_val.json', data_prefix=dict(img='val/'),
                          test_mode=True, pipeline=[])
    runner = SimpleNamespace(work_dir=str(tmp_path), epoch=3, iter=30,
                             val_dataloader=SimpleNamespace(dataset=dataset))
    samples = []
    for k in range(3):
        sample = DataSample(metainfo=dict(img_path=dataset[k]['img_path']))
        sample.pred_instances = InstanceData(bboxes=torch.tensor([[5.0, 5.0, 50.0, 50.0]]),
                                             labels=torch.tensor([k % 3]),
                                             scores=torch.tensor([0.8]))
        samples.append(sample)
    hook = PredictionVisualizationHook(num_images=2, interval=2)
    for validation in (1, 2):
        hook.before_val_epoch(runner)
        hook.after_val_iter(runner, 0, None, samples[:1])
        hook.after_val_iter(runner, 1, None, samples[1:])
        if validation == 1:
            assert hook.written == []  # the first validation is skipped with interval 2
    assert [p.rsplit('/', 2)[-2:] for p in hook.written] == [
        ['iter_30', 'val_00000.png'], ['iter_30', 'val_00001.png']]
    assert hook.visualizer.drawn_texts['pred'] == [f'{dataset.metainfo["classes"][1]} 0.80']
    assert cv2.imread(hook.written[0]).shape[:2] == cv2.imread(dataset[0]['img_path']).shape[:2]


# --------------------------------------------------------------------- tools end to end


def test_demo_tool_draws_predictions_with_class_names(tmp_path, demo_root, demo_checkpoint,
                                                     capsys):
    demo = load_tool('demo')
    images = [f'{demo_root}/coco/val/val_0000{k}.jpg' for k in range(2)]
    written = demo.main([*images, '--config', DEMO_CONFIG, '--checkpoint', demo_checkpoint,
                         '--out-dir', str(tmp_path), '--score-thr', '0.0',
                         '--cfg-options', *RANDOM_MODEL_OPTIONS, *demo_options(demo_root)])
    assert [p.rsplit('/', 1)[-1] for p in written] == ['val_00000.png', 'val_00001.png']
    drawn, original = cv2.imread(written[0]), cv2.imread(images[0])
    assert drawn.shape == original.shape
    assert np.abs(drawn.astype(int) - original).max() > 100  # boxes are drawn
    from toolbox.datasets import CocoDataset
    classes = CocoDataset(data_root=f'{demo_root}/coco', ann_file='annotations/instances_val.json',
                          data_prefix=dict(img='val/'), test_mode=True,
                          pipeline=[]).metainfo['classes']
    printed = capsys.readouterr().out
    assert '100 detections' in printed  # max_per_img, all drawn at --score-thr 0
    labels = re.findall(r'\(([^)]*)\)', printed)  # 'name score, name score, ...' per image
    names = {text.rsplit(' ', 1)[0] for line in labels for text in line.split(', ')} - {'...'}
    assert names and names <= set(classes)  # labels are class names, not indices


def test_test_tool_show_dir_confusion_matrix_and_pr_curves(tmp_path, demo_root,
                                                           demo_checkpoint):
    test_tool = load_tool('test')
    show = tmp_path / 'show'
    test_tool.main([DEMO_CONFIG, demo_checkpoint, '--work-dir', str(tmp_path), '--show-dir',
                    str(show), '--show-num', '3', '--show-score-thr', '0.0',
                    '--confusion-matrix', '--pr-curves', '--analysis-score-thr', '0.0',
                    '--cfg-options', *demo_options(demo_root), *RANDOM_MODEL_OPTIONS])
    assert sorted(p.name for p in show.glob('*.png')) == [f'val_0000{k}.png' for k in range(3)]
    # ground truth (left) next to the prediction (right)
    assert cv2.imread(str(show / 'val_00000.png')).shape[1] == 2 * 160
    analysis = json.loads((tmp_path / 'confusion_matrix.json').read_text())
    matrix = np.array(analysis['matrix'])
    assert analysis['classes'][-1] == 'background' and matrix.shape == (4, 4)
    from toolbox.datasets import CocoDataset
    val = CocoDataset(data_root=f'{demo_root}/coco', ann_file='annotations/instances_val.json',
                      data_prefix=dict(img='val/'), test_mode=True, pipeline=[])
    num_gts = sum(len(val.get_data_info(k)['instances']) for k in range(len(val)))
    # each gt box is either missed (its background cell, once) or found under its class (its
    # diagonal cell, once per detection that hits it)
    assert matrix[:3, 3].sum() + np.trace(matrix[:3, :3]) >= num_gts > matrix[:3, 3].sum()
    for name in ('confusion_matrix.png', 'pr_curves.png'):
        assert cv2.imread(str(tmp_path / name)) is not None


def test_browse_dataset_draws_ground_truth_on_the_network_input(tmp_path, demo_root):
    browse = load_tool('browse_dataset')
    written = browse.main([DEMO_CONFIG, '--out-dir', str(tmp_path), '--num', '3', '--seed', '0',
                           '--cfg-options', *demo_options(demo_root)])
    assert len(written) == 3
    picture = cv2.imread(written[0])
    assert picture.shape == (160, 160, 3)  # demo images are 160 px, padded to a multiple of 32


def test_analyze_logs_puts_runs_on_one_plot_and_leaves_out_placeholders(tmp_path):
    analyze = load_tool('analyze_logs')
    for run, offset in (('run_a', 0.0), ('run_b', 0.5)):
        vis = tmp_path / run / '20260101_000000' / 'vis_data'
        vis.mkdir(parents=True)
        lines = [dict(lr=0.01, loss=2.0 - k * 0.1 + offset, epoch=1 + k // 2, iter=k,
                      step=10 * (k + 1)) for k in range(4)]
        lines += [dict(**{'coco/bbox_mAP': 0.1 + offset, 'coco/bbox_mAP_l': -1.0}, step=1),
                  dict(**{'coco/bbox_mAP': 0.2 + offset, 'coco/bbox_mAP_l': 0.3}, step=2)]
        (vis / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in lines))
    out = tmp_path / 'curves.png'
    drawn = analyze.main([str(tmp_path / 'run_a'), str(tmp_path / 'run_b'), '--keys', 'loss',
                          'lr', 'coco/bbox_mAP_l', '--out', str(out)])
    assert drawn == {k: ['run_a', 'run_b'] for k in ('loss', 'lr', 'coco/bbox_mAP_l')}
    assert cv2.imread(str(out)) is not None
    from plot_log import read_scalars  # analyze_logs put tools/ on the path
    train, val = read_scalars(str(tmp_path / 'run_a/20260101_000000/vis_data/scalars.json'))
    # the -1 placeholder of epoch 1 is left out: one point, at the last iteration of epoch 2
    assert analyze.key_points(train, val, 'coco/bbox_mAP_l') == ([40], [0.3], False)
    assert analyze.key_points(train, val, 'loss')[0] == [10, 20, 30, 40]
    with pytest.raises(KeyError, match='no run logged'):
        analyze.main([str(tmp_path / 'run_a'), '--keys', 'pascal_voc/mAP',
                      '--out', str(tmp_path / 'x.png')])


def test_visualize_seg_on_a_detector_points_to_demo_py(tmp_path, demo_root, demo_checkpoint):
    visualize_seg = load_tool('visualize_seg')
    with pytest.raises(SystemExit, match='tools/demo.py'):
        visualize_seg.main([DEMO_CONFIG, demo_checkpoint, '--out', str(tmp_path / 'x.png'),
                            '--num', '1', '--cfg-options', *demo_options(demo_root)])


def test_prediction_analysis_metric_writes_the_segmentation_matrix(tmp_path):
    from toolbox.evaluation import PredictionAnalysisMetric
    metric = PredictionAnalysisMetric(out_dir=str(tmp_path))
    metric.dataset_meta = dict(classes=('a', 'b'))
    pred = torch.tensor([[[0, 1], [1, 1]]])
    gt = torch.tensor([[[0, 0], [1, IGNORE_INDEX]]])
    metric.process({}, [dict(pred_sem_seg=dict(data=pred), gt_sem_seg=dict(data=gt))] * 3)
    assert metric.evaluate(3) == {}
    analysis = json.loads((tmp_path / 'confusion_matrix.json').read_text())
    assert analysis['classes'] == ['a', 'b']
    assert analysis['matrix'] == [[3, 3], [0, 3]]
    assert cv2.imread(str(tmp_path / 'confusion_matrix.png')) is not None
