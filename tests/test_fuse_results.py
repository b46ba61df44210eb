"""Model ensembles: ``tools/test.py --out`` pickles the test samples with their predictions and
``tools/analysis/fuse_results.py`` fuses several such pickles by weighted box fusion and
evaluates the result (hand-made fusions, perfect predictions scoring mAP 1, bad files named)."""
import json
import pickle

import pytest
import torch

from toolbox.engine import load_config
from toolbox.registry import MODELS

from .conftest import REPO_ROOT
from .helpers import load_tool

DEMO_CONFIG = REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'


def _record(key, boxes, scores, labels):
    return dict(img_path=key, pred_instances=dict(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(scores), labels=torch.tensor(labels)))


def test_fusion_of_two_runs_by_hand():
    tool = load_tool('analysis/fuse_results.py')
    run_a = {'a': _record('a', [[0, 0, 10, 10]], [0.9], [1]),
             'b': _record('b', [[5, 5, 25, 25]], [0.6], [0])}
    run_b = {'a': _record('a', [[1, 0, 11, 10], [50, 50, 60, 60]], [0.3, 0.4], [1, 2]),
             'b': _record('b', [], [], [])}
    fused = {r['img_path']: r['pred_instances'] for r in
             tool.fuse_results([run_a, run_b], ['a.pkl', 'b.pkl'], iou_thr=0.55)}
    # image a: the class-1 pair (IoU 9/11) -> score-weighted mean box, mean score (both runs)
    a = fused['a']
    assert a['labels'].tolist() == [1, 2]
    assert a['bboxes'][0].tolist() == pytest.approx([0.25, 0, 10.25, 10])
    assert a['scores'].tolist() == pytest.approx([0.6, 0.2])  # class 2 seen by one run of 2
    assert fused['b']['scores'].tolist() == pytest.approx([0.3])
    assert fused['b']['bboxes'].tolist() == [[5, 5, 25, 25]]


def test_runs_over_different_images_are_refused_with_the_file_name():
    tool = load_tool('analysis/fuse_results.py')
    run_a = {'a': _record('a', [], [], []), 'b': _record('b', [], [], [])}
    run_b = {'a': _record('a', [], [], []), 'c': _record('c', [], [], [])}
    with pytest.raises(ValueError, match=r"second.pkl: not the images of first.pkl "
                                         r"\(missing \['b'\], extra \['c'\]\)"):
        tool.fuse_results([run_a, run_b], ['first.pkl', 'second.pkl'])


def test_bad_result_files_are_named(tmp_path):
    tool = load_tool('analysis/fuse_results.py')
    garbage = tmp_path / 'garbage.pkl'
    garbage.write_bytes(b'not a pickle')
    with pytest.raises(ValueError, match='garbage.pkl: cannot read the results pickle'):
        tool.load_results(str(garbage))
    no_preds = tmp_path / 'no_preds.pkl'
    no_preds.write_bytes(pickle.dumps([dict(img_path='x.jpg')]))
    with pytest.raises(ValueError, match='no_preds.pkl: record 0 has no pred_instances'):
        tool.load_results(str(no_preds))
    no_scores = tmp_path / 'no_scores.pkl'
    no_scores.write_bytes(pickle.dumps([dict(img_path='x.jpg', pred_instances=dict(
        bboxes=torch.zeros(0, 4), labels=torch.zeros(0)))]))
    with pytest.raises(ValueError, match=r"no_scores.pkl: record 0 pred_instances lacks "
                                         r"\['scores'\]"):
        tool.load_results(str(no_scores))


def test_test_out_then_fuse_end_to_end_on_the_demo(tmp_path, demo_root, capsys):
    """``tools/test.py --out`` writes one record per val image; fusing two runs whose boxes
    are the ground truth (one shifted 2 px right) gives the 1 px-shifted mean box, and the
    unshifted perfect run fused with itself scores COCO mAP 1 through the config's metric."""
    test_tool = load_tool('test.py')
    fuse_tool = load_tool('analysis/fuse_results.py')
    cfg = load_config(str(DEMO_CONFIG))
    torch.manual_seed(0)
    checkpoint = tmp_path / 'random.pth'
    torch.save(dict(state_dict=MODELS.build(cfg.model).state_dict()), checkpoint)
    ann_file = f'{demo_root}/coco/annotations/instances_val.json'
    options = [f'test_dataloader.dataset.data_root={demo_root}/coco/',
               f'test_evaluator.ann_file={ann_file}']
    out = tmp_path / 'random.pkl'
    test_tool.main([str(DEMO_CONFIG), str(checkpoint), '--out', str(out),
                    '--work-dir', str(tmp_path / 'work'), '--cfg-options', *options])
    records = pickle.loads(out.read_bytes())
    assert len(records) == 8 and all('pred_instances' in r for r in records)

    coco = json.loads(open(ann_file).read())
    cat_index = {c['id']: i for i, c in enumerate(coco['categories'])}
    perfect, shifted = [], []
    for record in records:
        anns = [a for a in coco['annotations'] if a['image_id'] == record['img_id']]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                              (a['bbox'] for a in anns)], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([cat_index[a['category_id']] for a in anns], dtype=torch.long)
        scores = torch.full((len(anns),), 0.9)
        perfect.append(dict(record, pred_instances=dict(bboxes=boxes, scores=scores,
                                                        labels=labels)))
        shifted.append(dict(record, pred_instances=dict(
            bboxes=boxes + torch.tensor([2.0, 0, 2, 0]), scores=scores, labels=labels)))
    (tmp_path / 'perfect.pkl').write_bytes(pickle.dumps(perfect))
    (tmp_path / 'shifted.pkl').write_bytes(pickle.dumps(shifted))

    fused_path = tmp_path / 'fused.pkl'
    fuse_tool.main([str(DEMO_CONFIG), str(tmp_path / 'perfect.pkl'),
                    str(tmp_path / 'shifted.pkl'), '--out', str(fused_path),
                    '--cfg-options', *options])
    fused = pickle.loads(fused_path.read_bytes())
    for record, original in zip(fused, perfect):
        expected = original['pred_instances']['bboxes'] + torch.tensor([1.0, 0, 1, 0])
        got = record['pred_instances']['bboxes']
        assert len(got) == len(expected)
        assert torch.allclose(torch.tensor(sorted(got.tolist())),
                              torch.tensor(sorted(expected.tolist())))
    metrics = fuse_tool.main([str(DEMO_CONFIG), str(tmp_path / 'perfect.pkl'),
                              str(tmp_path / 'perfect.pkl'), '--cfg-options', *options])
    assert metrics['coco/bbox_mAP'] == pytest.approx(1.0)
    assert '"coco/bbox_mAP": 1.0' in capsys.readouterr().out
