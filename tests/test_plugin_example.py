"""The example third-party plugin package (examples/toolbox-plugin-example), as a user runs it.

The README's test command installs it (``pip install --no-deps -e . -e
examples/toolbox-plugin-example``); here it is found through its entry point, its loss keeps
the loss contract of docs/plugins.md, a detector built from its backbone and loss trains a few
iterations through the toolbox's Runner, and after a real ``pip uninstall`` a fresh process
no longer finds it and says which plugins it did load. The uninstall is undone in a
``finally`` by reinstalling the package the way it was installed (editable or not, from the
same directory), with ``--no-deps --no-build-isolation`` so that nothing is downloaded.
"""
import importlib.metadata as metadata
import json
import math
import subprocess
import sys
from urllib.parse import unquote, urlparse

import pytest
import torch
from mmengine.config import Config

from toolbox.engine import build_runner
from toolbox.plugins import DISTRIBUTION, ENTRY_POINT_GROUP, loaded_plugins
from toolbox.registry import MODELS

from .conftest import REPO_ROOT

EXAMPLE_DISTRIBUTION = 'toolbox-plugin-example'


def _example_entry_point():
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
             if ep.dist is not None and ep.dist.name == EXAMPLE_DISTRIBUTION]
    if not found:
        pytest.fail(f'{EXAMPLE_DISTRIBUTION} is not installed: run the README test command '
                    f'(pip install --no-deps -e . -e examples/toolbox-plugin-example)')
    return found[0]


def test_example_is_discovered_through_its_entry_point_and_depends_on_our_distribution():
    entry_point = _example_entry_point()
    assert (entry_point.name, entry_point.value) == ('example', 'toolbox_plugin_example')
    assert [r.split(';')[0].strip() for r in entry_point.dist.requires] == [DISTRIBUTION]
    assert ('example', 'toolbox_plugin_example') in {(ep.name, ep.value)
                                                     for ep in loaded_plugins()}
    for name in ('TinyConvBackbone', 'ScaledL1Loss'):
        assert MODELS.get(name).__module__ == 'toolbox_plugin_example'


def test_scaled_l1_loss_takes_weight_and_avg_factor_as_heads_pass_them():
    _example_entry_point()
    loss = MODELS.build(dict(type='ScaledL1Loss', loss_weight=2.0))
    pred = torch.tensor([[0., 0., 1., 1.], [1., 2., 3., 4.], [5., 5., 5., 5.]])
    target = torch.tensor([[1., 0., 1., 3.], [1., 1., 1., 1.], [0., 0., 0., 0.]])
    # |pred - target| per row: [1, 0, 0, 2] = 3, [0, 1, 2, 3] = 6, [5, 5, 5, 5] = 20
    per_coordinate = torch.tensor([[1., 1., 1., 1.], [1., 1., 0., 0.], [0., 0., 0., 0.]])
    # weighted sum 3 + 1 = 4; / avg_factor 2 = 2; x loss_weight 2 = 4
    assert loss(pred, target, weight=per_coordinate, avg_factor=2.0).item() == \
        pytest.approx(4.0)
    per_box = torch.tensor([1., 0.5, 0.])  # 3 + 3 = 6; / 4 = 1.5; x 2 = 3
    assert loss(pred, target, weight=per_box, avg_factor=4).item() == pytest.approx(3.0)
    assert loss(pred, target).item() == pytest.approx(2.0 * 29 / 12)  # plain mean
    assert MODELS.build(dict(type='ScaledL1Loss', reduction='sum'))(pred, target).item() == 29
    assert MODELS.build(dict(type='ScaledL1Loss', reduction='none'))(
        pred, target, weight=per_box).shape == (3, 4)
    # the way the shipped dense heads call it: loss_on_positives(loss, pred, target, avg, all)
    head = MODELS.build(dict(type='RetinaHead', num_classes=2, in_channels=8, feat_channels=8,
                             stacked_convs=1, anchor_generator=dict(
                                 type='AnchorGenerator', octave_base_scale=4,
                                 scales_per_octave=1, ratios=[1.0], strides=[8]),
                             loss_bbox=dict(type='ScaledL1Loss')))
    assert head.loss_on_positives(head.loss_bbox, pred, target, 12.0, pred).item() == \
        pytest.approx(29 / 12)


EXAMPLE_CONFIG = REPO_ROOT / 'examples/toolbox-plugin-example/configs/' \
    'retinanet_tinyconv_scaled-l1_demo.py'


def _example_detector_config(demo_root: str, work_dir: str) -> Config:
    """The example's config (the demo RetinaNet with its backbone and box loss), trained 6
    iterations of 4 images on the embedded demo data, without validation or checkpoints."""
    cfg = Config.fromfile(str(EXAMPLE_CONFIG))
    cfg.train_dataloader.batch_size = 4
    cfg.train_dataloader.dataset.data_root = f'{demo_root}/coco/'
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=6, val_interval=1000)
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator', 'test_dataloader', 'test_cfg',
                'test_evaluator'):
        cfg[key] = None
    cfg.param_scheduler = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1000, by_epoch=False,
                                        save_last=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
    cfg.work_dir = work_dir
    return cfg


def test_detector_with_the_example_backbone_and_loss_trains(demo_root, tmp_path, monkeypatch):
    _example_entry_point()
    loss_class = MODELS.get('ScaledL1Loss')
    calls = []
    original = loss_class.forward

    def recording_forward(self, pred, target, weight=None, avg_factor=None):
        value = original(self, pred, target, weight=weight, avg_factor=avg_factor)
        calls.append((tuple(pred.shape), avg_factor, value.item()))
        return value

    monkeypatch.setattr(loss_class, 'forward', recording_forward)
    runner = build_runner(_example_detector_config(demo_root, str(tmp_path)))
    runner.train()

    model = runner.model
    assert type(model.backbone).__name__ == 'TinyConvBackbone'
    assert type(model.bbox_head.loss_bbox).__name__ == 'ScaledL1Loss'
    assert model.neck.strides == (4, 8, 16) == tuple(model.bbox_head.prior_generator.strides)
    assert len(calls) == 6  # once per iteration, on the positives, with the head's avg_factor
    assert all(shape[1] == 4 and shape[0] > 0 and avg > 0 for shape, avg, _ in calls)
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    box_losses = runner.message_hub.get_scalar('train/loss_bbox').data[0]
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert box_losses.tolist() == pytest.approx([value for _, _, value in calls], rel=1e-5)
    assert losses[-2:].mean() < losses[:2].mean()


def _reinstall_command(dist: metadata.Distribution) -> list[str] | None:
    """``pip install`` of ``dist`` as it is installed now (editable or not, from its local
    directory), or None when it was not installed from a local directory."""
    direct_url = dist.read_text('direct_url.json')
    if not direct_url:
        return None
    info = json.loads(direct_url)
    url = urlparse(info.get('url', ''))
    if url.scheme != 'file' or 'dir_info' not in info:
        return None
    editable = ['-e'] if info['dir_info'].get('editable') else []
    return [sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation',
            '--quiet', *editable, unquote(url.path)]


FIND_TINY_BACKBONE = '''
import toolbox
from toolbox.plugins import load_plugins, loaded_plugins
from toolbox.registry import MODELS, UnknownComponentError
load_plugins()
try:
    MODELS.build(dict(type='TinyConvBackbone'))
except UnknownComponentError as exc:
    print(exc)
else:
    print('BUILT')
'''


def test_uninstalled_example_is_not_found_and_the_error_lists_loaded_plugins():
    dist = _example_entry_point().dist
    reinstall = _reinstall_command(dist)
    if reinstall is None:
        pytest.fail(f'{EXAMPLE_DISTRIBUTION} was not installed from a local directory, so it '
                    f'cannot be reinstalled offline after the uninstall')
    subprocess.run([sys.executable, '-m', 'pip', 'uninstall', '--yes', '--quiet',
                    EXAMPLE_DISTRIBUTION], check=True, capture_output=True)
    try:
        fresh = subprocess.run([sys.executable, '-c', FIND_TINY_BACKBONE], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True)
    finally:
        subprocess.run(reinstall, check=True, capture_output=True)
    message = fresh.stdout
    assert "'TinyConvBackbone' is not registered in registry 'model' (scope 'toolbox')" \
        in message
    assert 'Loaded plugins: ' in message
    assert 'backbones.resnet (toolbox_plugins.backbones.resnet)' in message
    assert 'toolbox_plugin_example' not in message
    # reinstalled as it was: its entry point is declared again, installed from the same place
    assert _reinstall_command(_example_entry_point().dist) == reinstall
