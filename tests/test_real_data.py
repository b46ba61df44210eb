"""Real-data smoke tests (marked slow): a few optimisation steps on ../shared/data must reduce
the loss; evaluation of those predictions runs through the VOC metric."""
import pytest
import torch
from mmengine.dataset import pseudo_collate

from toolbox.engine import load_config
from toolbox.registry import DATASETS, METRICS, MODELS

from .conftest import REPO_ROOT, shared_data

pytestmark = pytest.mark.slow


def test_retinanet_overfits_a_bccd_batch_and_evaluates():
    root = shared_data('bccd')
    torch.manual_seed(0)
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_320_bccd.py'))
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.data_root = str(root)
    dataset_cfg.pipeline = [p for p in dataset_cfg.pipeline
                            if p['type'] not in ('RandomFlip', 'Albu')]
    dataset = DATASETS.build(dataset_cfg)
    batch = pseudo_collate([dataset[i] for i in range(2)])
    model = MODELS.build(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    model.train()
    losses = []
    for _ in range(10):
        data = model.data_preprocessor(batch, training=True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses

    model.eval()
    metric = METRICS.build(dict(type='VOCMetric', iou_thrs=0.5))
    metric.dataset_meta = dataset.metainfo
    with torch.no_grad():
        outputs = model.val_step(batch)
    metric.process(batch, [o.to_dict() for o in outputs])
    result = metric.compute_metrics(metric.results)
    assert 0.0 <= result['mAP'] <= 1.0
