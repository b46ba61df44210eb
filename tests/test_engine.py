"""Engine glue: weights-only checkpoints written atomically, exact resume, loss checks, tools."""
import glob
import os
import subprocess
import sys

import pytest
import torch

from toolbox.engine import build_runner, load_checkpoint_file, load_config
from toolbox.engine.runner import from_safe_types, to_safe_types
from toolbox.registry import MODELS

from .conftest import REPO_ROOT

TOOLS = sorted(p.name for p in (REPO_ROOT / 'tools').glob('*.py'))


def _demo_cfg(demo_root, work_dir, max_epochs, num_workers=0):
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'))
    cfg.work_dir = str(work_dir)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = f'{demo_root}/coco/'
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.num_workers = num_workers
    cfg.train_dataloader.persistent_workers = num_workers > 0
    cfg.val_evaluator.ann_file = f'{demo_root}/coco/annotations/instances_val.json'
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=100)
    cfg.param_scheduler = [dict(type='MultiStepLR', milestones=[1], gamma=0.5, by_epoch=True,
                                begin=0, end=2)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.model.backbone.depth = 18
    return cfg


def _weights(runner):
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def test_checkpoints_are_weights_only_and_resume_matches_an_uninterrupted_run(tmp_path,
                                                                              demo_root):
    straight = build_runner(_demo_cfg(demo_root, tmp_path / 'straight', 2))
    straight.train()
    expected = _weights(straight)

    first = build_runner(_demo_cfg(demo_root, tmp_path / 'split', 1))
    first.train()
    ckpt = tmp_path / 'split' / 'epoch_1.pth'
    assert not glob.glob(str(tmp_path / 'split' / '*.tmp'))  # written atomically
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == []
    loaded = load_checkpoint_file(str(ckpt))
    assert loaded['meta']['epoch'] == 1 and 'rng_state' in loaded['meta']

    cfg = _demo_cfg(demo_root, tmp_path / 'split', 2)
    cfg.resume, cfg.load_from = True, str(ckpt)
    resumed = build_runner(cfg)
    resumed.train()
    got = _weights(resumed)
    assert resumed.iter == straight.iter == 8
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)
    # tools/test.py path: weights_only load of our own checkpoint, evaluation numbers
    test_cfg = _demo_cfg(demo_root, tmp_path / 'test', 1)
    test_cfg.load_from = str(tmp_path / 'split' / 'epoch_2.pth')
    metrics = build_runner(test_cfg).test()
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0


def test_resume_with_two_persistent_workers_equals_the_uninterrupted_run(tmp_path, demo_root):
    """Augmentation is seeded per sample (toolbox.datasets.seeding): which worker loads a
    sample, how many workers there are and whether the run was resumed change nothing."""
    straight = build_runner(_demo_cfg(demo_root, tmp_path / 'straight', 2, num_workers=2))
    straight.train()
    first = build_runner(_demo_cfg(demo_root, tmp_path / 'split', 1, num_workers=2))
    first.train()
    cfg = _demo_cfg(demo_root, tmp_path / 'split', 2, num_workers=2)
    cfg.resume, cfg.load_from = True, str(tmp_path / 'split' / 'epoch_1.pth')
    resumed = build_runner(cfg)
    resumed.train()
    no_workers = build_runner(_demo_cfg(demo_root, tmp_path / 'main_process', 2, num_workers=0))
    no_workers.train()
    expected = _weights(straight)
    for other in (resumed, no_workers):
        got = _weights(other)
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)


def test_per_sample_seeds_differ_across_epochs_and_ranks():
    from toolbox.datasets.seeding import SeededIndex, sample_seed
    seeds = {sample_seed(0, epoch, rank, pos) for epoch in range(3) for rank in range(2)
             for pos in range(50)}
    assert len(seeds) == 300
    index = SeededIndex(7, 123)
    import pickle
    again = pickle.loads(pickle.dumps(index))
    assert again == 7 and again.seed == 123 and [10, 20, 30, 40, 50, 60, 70, 80][again] == 80


def test_safe_types_round_trip():
    import numpy as np
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer([1.0, 2.0], [1, 1], max_length=5)
    from collections import Counter, OrderedDict
    state = OrderedDict(w=torch.ones(2))
    state._metadata = {'': {'version': 2}}
    obj = dict(a=np.arange(3, dtype=np.int16), b=(np.float32(1.5), [buffer]), c='x',
               milestones=Counter({8: 1, 11: 1}), state=state)
    back = from_safe_types(to_safe_types(obj))
    assert isinstance(back['milestones'], Counter) and back['milestones'][5] == 0
    assert isinstance(back['state'], OrderedDict) and back['state']._metadata['']['version'] == 2
    assert back['a'].dtype == np.int16 and back['a'].tolist() == [0, 1, 2]
    assert back['b'][0] == 1.5 and isinstance(back['b'], tuple)
    assert back['b'][1][0].mean() == 1.5 and back['b'][1][0].max_length == 5


def test_third_party_pickled_checkpoint_is_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'hook': os.getcwd}, path)  # an arbitrary callable
    with pytest.raises(Exception, match='[Ww]eights only'):
        load_checkpoint_file(str(path))
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        load_checkpoint_file(str(tmp_path / 'nowhere.pth'))


def test_non_finite_loss_stops_and_names_the_term():
    model = MODELS.build(load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'))
                         .model)
    with pytest.raises(FloatingPointError, match="'loss_bbox' is not finite"):
        model.parse_losses(dict(loss_cls=torch.tensor(1.0), loss_bbox=torch.tensor(float('nan'))))


@pytest.mark.parametrize('tool', TOOLS)
def test_every_tool_has_help(tool):
    out = subprocess.run([sys.executable, f'tools/{tool}', '--help'], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and 'usage:' in out.stdout


@pytest.mark.parametrize('config', sorted(p.name for p in (REPO_ROOT / 'configs').glob('*.py')))
def test_every_config_builds_its_model(config):
    cfg = load_config(str(REPO_ROOT / 'configs' / config))
    model = MODELS.build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.slow
def test_cpu_ddp_with_gloo_through_dist_train_sh_and_exact_distributed_resume(tmp_path,
                                                                             demo_root):
    """Two processes on CPU: the process group is gloo and DDP runs with device_ids=None; a
    distributed run resumed after epoch 1 ends with the uninterrupted run's weights."""
    def dist_train(work_dir, max_epochs, *extra):
        options = [f'train_dataloader.dataset.data_root={demo_root}/coco/',
                   f'val_dataloader.dataset.data_root={demo_root}/coco/',
                   f'val_evaluator.ann_file={demo_root}/coco/annotations/instances_val.json',
                   f'train_cfg.max_epochs={max_epochs}', 'train_cfg.val_interval=2',
                   'train_dataloader.batch_size=4', 'default_hooks.checkpoint.interval=1',
                   # the same 24-epoch cosine in all three runs: without a schedule override,
                   # max_epochs=1 / 2 would stretch the cosine to 1 / 2 epochs (load_config)
                   'param_scheduler.1.T_max=24']
        env = dict(os.environ, OMP_NUM_THREADS='1', PORT='29517')
        out = subprocess.run(['bash', 'tools/dist_train.sh',
                              'configs/retinanet_r18_fpn_160_demo.py', '2', '--work-dir',
                              str(work_dir), *extra, '--cfg-options', *options],
                             cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]

    dist_train(tmp_path / 'straight', 2)
    log = next((tmp_path / 'straight').glob('*/*.log')).read_text()
    assert 'Distributed training: True' in log and "backend='gloo'" in log
    assert 'coco/bbox_mAP' in log
    dist_train(tmp_path / 'split', 1)
    dist_train(tmp_path / 'split', 2, '--resume')
    expected = load_checkpoint_file(str(tmp_path / 'straight' / 'epoch_2.pth'))['state_dict']
    got = load_checkpoint_file(str(tmp_path / 'split' / 'epoch_2.pth'))['state_dict']
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=0, msg=name)


def test_val_loss_hook_logs_the_mean_loss_over_its_dataloader(tmp_path, demo_root):
    from mmengine.dataset import pseudo_collate
    cfg = _demo_cfg(demo_root, tmp_path / 'valloss', 1)
    loader = dict(batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='pseudo_collate'), dataset=cfg.val_dataloader.dataset)
    cfg.custom_hooks = [dict(type='ValLossHook', dataloader=loader)]
    runner = build_runner(cfg)
    runner.val()
    logged = runner.message_hub.get_scalar('val/loss').current()
    # the same mean, computed by hand over the two batches of 4 validation images
    model = runner.model.eval()
    dataset = runner.build_dataloader(loader).dataset
    totals = []
    with torch.no_grad():
        for start in (0, 4):
            batch = pseudo_collate([dataset[i] for i in range(start, start + 4)])
            loss, _ = model.parse_losses(model(**model.data_preprocessor(batch), mode='loss'))
            totals.append(loss.item())
    assert logged == pytest.approx(sum(totals) / 2, rel=1e-5)
