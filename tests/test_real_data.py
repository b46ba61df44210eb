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


def test_unetr_overfits_a_hippocampus_batch_and_evaluates_whole_volumes():
    """The Hippocampus recipe (narrowed ViT for speed): Dice + CE falls on a fixed batch of
    crops; validation volumes come back in their original frame and are scored by Dice."""
    root = shared_data('hippocampus')
    torch.manual_seed(0)
    cfg = load_config(str(REPO_ROOT / 'configs/unetr_hippocampus.py'))
    cfg.model.backbone.update(hidden_size=96, mlp_dim=192, num_heads=4)
    cfg.model.decode_head.in_channels = 96
    train_cfg, val_cfg = cfg.train_dataloader.dataset, cfg.val_dataloader.dataset
    train_cfg.data_root = val_cfg.data_root = str(root)
    train = DATASETS.build(train_cfg)
    val = DATASETS.build(val_cfg)
    assert (len(train), len(val)) == (162, 41)
    batch = pseudo_collate([train[i] for i in range(2)])
    assert batch['inputs'][0].shape == (1, 32, 48, 32)
    model = MODELS.build(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        data = model.data_preprocessor(batch, training=True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # the soft Dice term (background included) moves slowly: steady descent, not a collapse
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.95 * losses[0], \
        losses

    model.eval()
    metric = METRICS.build(dict(type='DiceMetric'))
    metric.dataset_meta = val.metainfo
    cases = pseudo_collate([val[i] for i in range(2)])
    with torch.no_grad():
        outputs = model.val_step(cases)
    for out in outputs:
        assert tuple(out.pred_sem_seg.data.shape[1:]) == tuple(out.ori_shape)
    metric.process(cases, outputs)
    result = metric.compute_metrics(metric.results)
    assert 0.0 <= result['mDice'] <= 1.0 and set(result) >= {'Dice.anterior', 'Dice.posterior'}
