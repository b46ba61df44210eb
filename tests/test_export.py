"""ONNX export (toolbox/export, tools/export.py): onnxruntime against the toolbox's own
PyTorch test path for RetinaNet, RefineDet and DeepLab v3+, a dynamic batch, the padded
post-processing, and the refusal of model kinds that are not exported."""
import importlib.util

import numpy as np
import onnxruntime  # noqa: F401  (pinned in requirements/tests.txt: the parity runs, never skips)
import pytest
import torch
from mmengine.structures import InstanceData

from toolbox.apis import init_model
from toolbox.engine import load_config
from toolbox.export import (ExportMismatchError, ExportPreprocess, UnsupportedModelError,
                            build_export_module, check_report, compare_outputs, export_onnx,
                            onnx_session, padded_nms, run_onnx, sample_images, torch_outputs)
from toolbox.models.task_utils import nms_instances

from .conftest import REPO_ROOT
from .helpers import randomise_bn

RETINA_HW = (96, 112)  # not multiples of 32: the graph pads, anchors in the padding are dropped


def _model(config: str, seed: int = 0, conv_bias: bool = True, **head_test_cfg):
    """A model of ``config`` with random weights (seed ``seed``) and random BN statistics."""
    cfg = load_config(str(REPO_ROOT / 'configs' / config))
    if head_test_cfg:
        cfg.model.bbox_head.test_cfg = dict(cfg.model.bbox_head.get('test_cfg') or {},
                                            **head_test_cfg)
    torch.manual_seed(seed)
    return randomise_bn(init_model(cfg), seed=seed, conv_bias=conv_bias), cfg


def _sorted_detections(out: dict, b: int):
    n = int(out['num_dets'][b])
    order = np.argsort(-out['scores'][b, :n], kind='stable')
    return {k: out[k][b, :n][order] for k in ('boxes', 'scores', 'labels')}


@pytest.fixture(scope='module')
def retinanet(tmp_path_factory):
    """RetinaNet R18 (the demo config), random weights with seed 0, exported with a dynamic
    batch at 96x112.

    The classifier's weights are drawn with std 0.1 (instead of 0.01) so that scores spread
    out: the 200 candidates per level then differ by >= 6e-5, far above the 1e-7 noise between
    runtimes, and no near-tie decides which of two overlapping boxes NMS keeps."""
    model, cfg = _model('retinanet_r18_fpn_160_demo.py', conv_bias=False, score_thr=0.05,
                        nms_pre=200)
    with torch.no_grad():
        model.bbox_head.retina_cls.weight.normal_(
            0, 0.1, generator=torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp('onnx') / 'retinanet.onnx'
    export_onnx(model, path, RETINA_HW, dynamic_batch=True)
    images = sample_images(cfg, RETINA_HW, batch=2, seed=0)[0]
    return model, onnx_session(path), images


def test_retinanet_onnx_matches_pytorch(retinanet):
    model, session, images = retinanet
    onnx_out = run_onnx(session, images[:1])
    torch_out = torch_outputs(model, images[:1])
    n = int(torch_out['num_dets'][0])
    assert 0 < n < 100  # some detections, fewer than max_per_img: the padding is exercised
    assert onnx_out['num_dets'].tolist() == [n]
    assert onnx_out['boxes'].shape == (1, 100, 4) and onnx_out['labels'].dtype == np.int64
    assert (onnx_out['labels'][0, n:] == -1).all() and (onnx_out['scores'][0, n:] == 0).all()
    ours, ref = _sorted_detections(onnx_out, 0), _sorted_detections(torch_out, 0)
    np.testing.assert_allclose(ours['boxes'], ref['boxes'], rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours['scores'], ref['scores'], rtol=0, atol=1e-4)
    assert (ours['labels'] == ref['labels']).all()
    # inside the image, sorted by score as exported
    assert (ours['boxes'][:, [0, 1]] >= 0).all()
    assert (ours['boxes'][:, 2] <= RETINA_HW[1]).all()
    assert (ours['boxes'][:, 3] <= RETINA_HW[0]).all()
    assert (np.diff(onnx_out['scores'][0, :n]) <= 0).all()


def test_dynamic_batch_runs_at_batch_2(retinanet):
    model, session, images = retinanet
    onnx_out = run_onnx(session, images)
    torch_out = torch_outputs(model, images)
    report = compare_outputs(onnx_out, torch_out)
    assert onnx_out['boxes'].shape == (2, 100, 4)
    assert report['num_dets_onnx'] == report['num_dets_torch']
    assert report['num_dets_onnx'][0] != report['num_dets_onnx'][1]  # two different images
    assert report['max_box_diff'] <= 1e-4 and report['max_score_diff'] <= 1e-4
    assert report['labels_equal']
    # an image's detections do not depend on the other image of the batch
    alone = run_onnx(session, images[1:])
    n = int(alone['num_dets'][0])
    assert n == onnx_out['num_dets'][1]
    np.testing.assert_allclose(alone['boxes'][0, :n], onnx_out['boxes'][1, :n], atol=1e-4)


def test_refinedet_onnx_matches_pytorch(tmp_path):
    # few candidates above a high threshold: scores >= 3e-5 apart, no near-ties in NMS
    model, cfg = _model('refinedet_vgg16_320_bccd.py', score_thr=0.7, nms_pre=200)
    hw = (128, 160)  # a BCCD image (real when ../shared/data/bccd exists), not a multiple of 64
    export_onnx(model, tmp_path / 'refinedet.onnx', hw)
    images = sample_images(cfg, hw, seed=1)[0]
    report = compare_outputs(run_onnx(onnx_session(tmp_path / 'refinedet.onnx'), images),
                             torch_outputs(model, images))
    assert report['num_dets_onnx'] == report['num_dets_torch']
    assert 0 < report['num_dets_onnx'][0] < 100
    assert report['max_box_diff'] <= 1e-4 and report['max_score_diff'] <= 1e-4
    assert report['labels_equal']


def test_deeplabv3plus_onnx_matches_pytorch(tmp_path):
    cfg = load_config(str(REPO_ROOT / 'configs' / 'deeplabv3plus_r18-d16_camvid.py'))
    torch.manual_seed(0)
    model = randomise_bn(init_model(cfg))
    with torch.no_grad():  # a classifier of std 0.01 gives one class everywhere
        model.decode_head.conv_seg.weight.normal_(
            0, 0.1, generator=torch.Generator().manual_seed(0))
    hw = (72, 96)  # a CamVid frame (real when ../shared/data/camvid exists) at 1/5 size
    export_onnx(model, tmp_path / 'deeplab.onnx', hw)
    images = sample_images(cfg, hw)[0]
    onnx_out = run_onnx(onnx_session(tmp_path / 'deeplab.onnx'), images)
    torch_out = torch_outputs(model, images)
    assert onnx_out['seg_logits'].shape == (1, 11, *hw) and onnx_out['seg_map'].shape == (1, *hw)
    np.testing.assert_allclose(onnx_out['seg_logits'], torch_out['seg_logits'], rtol=0,
                               atol=1e-4)
    agreement = (onnx_out['seg_map'] == torch_out['seg_map']).mean()
    assert agreement > 0.9999
    assert len(np.unique(torch_out['seg_map'])) > 3  # not a constant map


@pytest.mark.parametrize('config, message', [
    ('faster_rcnn_r18_fpn_320_12e_bccd.py', 'two-stage detectors'),
    ('detr_r18_bccd.py', 'set-prediction (DETR)'),
    ('ga_retinanet_r18_fpn_320_12e_bccd.py', 'GARetinaHead has no export post-processor'),
    ('unet_hippocampus.py', 'segments 3D volumes'),
])
def test_unsupported_kinds_are_refused(config, message):
    model = init_model(str(REPO_ROOT / 'configs' / config))
    with pytest.raises(UnsupportedModelError, match='Supported: SingleStageDetector') as err:
        build_export_module(model, (64, 64))
    assert message in str(err.value)


def test_sliding_window_segmentor_is_refused():
    cfg = load_config(str(REPO_ROOT / 'configs' / 'deeplabv3plus_r18-d16_camvid.py'))
    cfg.model.test_cfg = dict(mode='slide', crop_size=(32, 32), stride=(16, 16))
    with pytest.raises(UnsupportedModelError, match="test_cfg.mode is 'slide'"):
        build_export_module(init_model(cfg), (64, 64))


def test_export_preprocess_equals_data_preprocessor():
    """BGR->RGB, normalise, end-pad to the divisor: the model's DataPreprocessor."""
    model, _ = _model('retinanet_r18_fpn_160_demo.py')
    images = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(0)) * 255
    ours = ExportPreprocess(model.data_preprocessor, (50, 70))(images)
    ref = model.data_preprocessor(dict(inputs=list(images)))['inputs']
    assert ours.shape == ref.shape == (2, 3, 64, 96)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_padded_nms_equals_nms_instances_per_image():
    """Class-aware NMS per image, max_det per image, padding; hand-checked counts."""
    boxes = torch.tensor([[[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30],
                           [5, 5, 5, 9]],  # empty: dropped
                          [[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60], [0, 0, 4, 4],
                           [2, 2, 8, 8]]], dtype=torch.float32)
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.95], [0.5, 0.4, 0.3, 0.2, 0.1]])
    labels = torch.tensor([[0, 0, 1, 0, 0], [0, 0, 0, 0, 1]])
    valid = scores > 0.15  # drops image 1's last candidate
    out_boxes, out_scores, out_labels, num = padded_nms(boxes, scores, labels, valid, 0.5, 3,
                                                        num_classes=2)
    # image 0: box 1 suppressed by box 0 (IoU 0.81), box 2 kept (other class), box 3 kept;
    # image 1: box 1 suppressed, boxes 2 and 3 kept, box 4 below the threshold
    assert num.tolist() == [3, 3]
    torch.testing.assert_close(out_scores, torch.tensor([[0.9, 0.7, 0.6], [0.5, 0.3, 0.2]]))
    assert out_labels.tolist() == [[0, 1, 0], [0, 0, 0]]
    for b in range(2):
        keep = valid[b]
        ref = nms_instances(boxes[b][keep], scores[b][keep], labels[b][keep], 0.5, 3)
        assert isinstance(ref, InstanceData)
        torch.testing.assert_close(out_boxes[b, :num[b]], ref.bboxes)
    tight = padded_nms(boxes, scores, labels, valid, 0.5, 2, num_classes=2)
    assert tight[3].tolist() == [2, 2] and tight[0].shape == (2, 2, 4)
    none = padded_nms(boxes, scores, labels, torch.zeros_like(valid), 0.5, 2, num_classes=2)
    assert none[3].tolist() == [0, 0] and (none[2] == -1).all() and (none[1] == 0).all()


def test_check_report_names_what_disagrees():
    check_report(dict(num_dets_onnx=[3], num_dets_torch=[3], max_box_diff=1e-5,
                      max_score_diff=1e-6, labels_equal=True))
    with pytest.raises(ExportMismatchError, match=r'detections per image: onnxruntime \[3\], '
                                                  r'PyTorch \[4\]'):
        check_report(dict(num_dets_onnx=[3], num_dets_torch=[4], max_box_diff=0.0,
                          max_score_diff=0.0, labels_equal=True))
    with pytest.raises(ExportMismatchError, match='logits differ by up to 0.01'):
        check_report(dict(max_logit_diff=0.01, argmax_agreement=0.999))


def test_tool_refuses_an_unsupported_config(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('export_tool', REPO_ROOT / 'tools' / 'export.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(SystemExit, match='two-stage detectors'):
        tool.main([str(REPO_ROOT / 'configs' / 'faster_rcnn_r18_fpn_320_12e_bccd.py'), 'none',
                   '--out', str(tmp_path / 'x.onnx'), '--shape', '64', '64'])
    assert not (tmp_path / 'x.onnx').exists()


def test_compare_pairs_detections_with_tied_scores():
    """Two detections with the same score, listed in either order, are paired by their boxes."""
    boxes = np.array([[[0, 0, 10, 10], [50, 50, 60, 70], [0, 0, 0, 0]]], np.float32)
    out = dict(boxes=boxes, scores=np.array([[0.5, 0.5, 0]], np.float32),
               labels=np.array([[1, 2, -1]]), num_dets=np.array([2]))
    swapped = dict(out, boxes=boxes[:, [1, 0, 2]] + 1e-3, labels=np.array([[2, 1, -1]]))
    report = compare_outputs(out, swapped)
    assert report['max_box_diff'] == pytest.approx(1e-3, abs=1e-5)
    assert report['labels_equal'] and report['num_dets_onnx'] == report['num_dets_torch'] == [2]
