"""tools/plot_log.py: reading mmengine's scalars.json and drawing train/val curves."""
import importlib.util
import json

import pytest

from .conftest import REPO_ROOT


def load_plot_log():
    spec = importlib.util.spec_from_file_location('plot_log', REPO_ROOT / 'tools' / 'plot_log.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plot_log_reads_work_dir_and_writes_png(tmp_path):
    plot_log = load_plot_log()
    vis = tmp_path / '20260101_000000' / 'vis_data'
    vis.mkdir(parents=True)
    records = [dict(lr=0.01, loss=3.0 - 0.1 * i, loss_arm_cls=1.0, epoch=1 + i // 4, iter=i + 1,
                    step=i + 1) for i in range(8)]
    # validation records: metrics, and val losses from ValLossHook (no 'lr')
    records.insert(4, {'pascal_voc/mAP': 0.4, 'loss': 2.9, 'step': 1})
    records.append({'pascal_voc/mAP': 0.6, 'loss': 2.5, 'step': 2})
    (vis / 'scalars.json').write_text('\n'.join(json.dumps(r) for r in records) + '\n')
    train, val = plot_log.read_scalars(plot_log.find_scalars(str(tmp_path)))
    assert len(train) == 8 and len(val) == 2
    # epoch-based: a validation record sits at the last iteration of its epoch
    assert plot_log.val_iterations(train, val) == [4, 8]
    out = plot_log.main([str(tmp_path), '--out', str(tmp_path / 'curve.png')])
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(FileNotFoundError, match='scalars.json'):
        plot_log.find_scalars(str(tmp_path / 'nothing'))


def test_plot_log_leaves_out_the_minus_one_placeholders():
    plot_log = load_plot_log()
    train = [dict(lr=0.01, loss=1.0, step=i + 1) for i in range(4)]
    val = [{'coco/bbox_mAP': 0.2, 'coco/bbox_mAP_s': -1.0, 'coco/bbox_mAP_m': -1.0, 'step': 2},
           {'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_s': -1.0, 'coco/bbox_mAP_m': 0.1, 'step': 4}]
    points = plot_log.metric_points(train, val)
    assert points == {'coco/bbox_mAP': [(2, 0.2), (4, 0.3)], 'coco/bbox_mAP_m': [(4, 0.1)]}


def test_plot_log_reads_segmentation_metrics_without_a_prefix(tmp_path):
    """IoUMetric / DiceMetric log ``mIoU`` / ``mDice`` and per-class ``IoU.Sky`` without a
    ``prefix/``: the summary metrics are drawn, the per-class entries and timings are not."""
    plot_log = load_plot_log()
    records = [dict(lr=0.01, loss=1.0, iter=i + 1, step=i + 1) for i in range(4)]
    records.insert(2, {'aAcc': 70.0, 'mIoU': 30.0, 'IoU.Sky': 80.0, 'data_time': 0.1,
                       'time': 0.5, 'step': 2})
    records.append({'aAcc': 75.0, 'mIoU': 40.0, 'IoU.Sky': 85.0, 'data_time': 0.1,
                    'time': 0.5, 'step': 4})
    path = tmp_path / 'scalars.json'
    path.write_text('\n'.join(json.dumps(r) for r in records) + '\n')
    train, val = plot_log.read_scalars(str(path))
    assert len(train) == 4 and len(val) == 2
    assert plot_log.metric_points(train, val) == {'aAcc': [(2, 70.0), (4, 75.0)],
                                                  'mIoU': [(2, 30.0), (4, 40.0)]}
