"""What a new user meets first: missing data before the run, a loss that breaks the contract at
build time, a short console log head, the log backends, and ``python -m toolbox.env``."""
import importlib.util
import logging
import os
import runpy
import subprocess
import sys

import pytest
import torch
from torch import nn

import toolbox.engine as engine
from toolbox.engine import DataPathError, ToolboxRunner, check_data_paths, load_config
from toolbox.engine import setup as engine_setup
from toolbox.engine.runner import FileOnlyLogHead
from toolbox.models.loss_utils import check_loss_contract, missing_loss_keywords
from toolbox.registry import MODELS

from .conftest import REPO_ROOT


def _load_train_tool():
    spec = importlib.util.spec_from_file_location('train_tool', REPO_ROOT / 'tools' / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = _load_train_tool()


@pytest.fixture
def no_runner(monkeypatch):
    """Fail the test if a Runner is built (the data error must come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError('a Runner was built before the data paths were checked')
    monkeypatch.setattr(engine, 'build_runner', refuse)
    monkeypatch.setattr(ToolboxRunner, '__init__', refuse)


def test_missing_coco_is_reported_before_any_runner(tmp_path, monkeypatch, no_runner):
    monkeypatch.chdir(tmp_path)  # data/coco/ does not exist here
    with pytest.raises(DataPathError) as info:
        train_tool.main([str(REPO_ROOT / 'configs/refinedet_r101.py')])
    message, coco = str(info.value), tmp_path / 'data' / 'coco'
    assert f'train_dataloader.dataset.data_root: {coco} does not exist' in message
    assert f'val_dataloader.dataset.data_root: {coco} does not exist' in message
    assert f"val_evaluator.ann_file: {coco / 'annotations/instances_val2017.json'} does not " \
        'exist' in message
    assert 'see docs/datasets.md for where to get COCO and its layout' in message
    assert info.value.missing[0] == ('train_dataloader.dataset.data_root', str(coco))
    assert not (tmp_path / 'work_dirs').exists()  # nothing was written before the error


def test_missing_annotation_file_and_image_folder_are_named_by_key(tmp_path, monkeypatch,
                                                                   no_runner):
    monkeypatch.chdir(tmp_path)
    coco = tmp_path / 'data' / 'coco'
    (coco / 'train2017').mkdir(parents=True)
    (coco / 'annotations').mkdir()
    (coco / 'annotations' / 'instances_val2017.json').write_text('{}')
    with pytest.raises(DataPathError) as info:
        train_tool.main([str(REPO_ROOT / 'configs/refinedet_r101.py')])
    assert info.value.missing == [
        ('train_dataloader.dataset.ann_file', str(coco / 'annotations/instances_train2017.json')),
        ('val_dataloader.dataset.data_prefix.img', str(coco / 'val2017'))]


def test_voc_concat_parts_and_the_test_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(REPO_ROOT / 'configs/refinedet_vgg16_320_voc0712.py'))
    with pytest.raises(DataPathError) as info:
        check_data_paths(cfg, ('train',))
    voc = str(tmp_path / 'data' / 'VOCdevkit')
    assert info.value.missing == [('train_dataloader.dataset.datasets[0].data_root', voc),
                                  ('train_dataloader.dataset.datasets[1].data_root', voc)]
    assert 'see docs/datasets.md for where to get Pascal VOC and its layout' in str(info.value)
    with pytest.raises(DataPathError, match=r'test_dataloader\.dataset\.data_root'):
        check_data_paths(cfg, ('test',))
    with pytest.raises(ValueError, match="unknown split 'tset'"):
        check_data_paths(cfg, ('tset',))


def test_complete_demo_data_passes_and_missing_demo_data_says_how_to_make_it(demo_root,
                                                                             tmp_path,
                                                                             monkeypatch):
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'), {
        'train_dataloader.dataset.data_root': f'{demo_root}/coco/',
        'val_dataloader.dataset.data_root': f'{demo_root}/coco/',
        'val_evaluator.ann_file': f'{demo_root}/coco/annotations/instances_val.json'})
    check_data_paths(cfg, ('train', 'val'))
    monkeypatch.chdir(tmp_path)
    demo = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'))
    with pytest.raises(DataPathError, match=r'python tools/make_demo_data\.py'):
        check_data_paths(demo, ('train',))


def test_train_tool_exits_with_the_message_only(tmp_path):
    run = subprocess.run([sys.executable, str(REPO_ROOT / 'tools/train.py'),
                          str(REPO_ROOT / 'configs/refinedet_r101.py')], cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert 'Traceback' not in run.stderr and run.stdout == ''
    assert run.stderr.startswith('error: ') and 'docs/datasets.md' in run.stderr
    assert len(run.stderr.splitlines()) == 5  # heading, 3 missing paths, advice


class OldStyleL1Loss(nn.Module):
    """The shape of the example loss before the contract was written down."""

    def forward(self, pred, target):
        return (pred - target).abs().mean()


class NoIgnoreIndexLoss(nn.Module):
    def forward(self, logits, labels, weight=None, avg_factor=None):
        return logits.mean()


def test_a_loss_without_avg_factor_fails_at_build_naming_the_keyword():
    head = MODELS.build(dict(type='RetinaHead', num_classes=2, in_channels=8, feat_channels=8,
                             stacked_convs=1, anchor_generator=dict(
                                 type='AnchorGenerator', octave_base_scale=4,
                                 scales_per_octave=1, ratios=[1.0], strides=[8])))
    detector = nn.Module()
    detector.bbox_head = head
    check_loss_contract(detector)  # the shipped FocalLoss and L1Loss keep it
    head.loss_bbox = OldStyleL1Loss()
    with pytest.raises(TypeError) as info:
        check_loss_contract(detector)
    message = str(info.value)
    assert message.startswith("bbox_head.loss_bbox (OldStyleL1Loss from tests.test_user_errors) "
                              "cannot take the keyword(s) ['weight', 'avg_factor'] that "
                              "RetinaHead passes")
    assert 'OldStyleL1Loss.forward(pred, target)' in message and 'docs/plugins.md' in message
    assert missing_loss_keywords(OldStyleL1Loss(), ('weight', 'avg_factor')) == \
        ['weight', 'avg_factor']

    class KeywordsLoss(nn.Module):
        def forward(self, pred, target, **kwargs):
            return pred.sum()
    assert missing_loss_keywords(KeywordsLoss(), ('weight', 'avg_factor')) == []


def test_a_decode_loss_without_ignore_index_fails_at_build():
    head = MODELS.build(dict(type='FCNHead', in_channels=8, channels=8, num_classes=3,
                             num_convs=1, concat_input=False, norm_cfg=None))
    check_loss_contract(head)
    head.loss_decode = NoIgnoreIndexLoss()
    with pytest.raises(TypeError, match=r"loss_decode \(NoIgnoreIndexLoss .*\) cannot take the "
                                        r"keyword\(s\) \['ignore_index'\] that FCNHead passes"):
        check_loss_contract(head)


def test_the_runner_checks_the_loss_contract_when_it_builds_the_model():
    runner = ToolboxRunner.__new__(ToolboxRunner)  # build_model needs no other state
    detector = nn.Module()
    detector.bbox_head = MODELS.build(dict(type='RPNHead', in_channels=8, feat_channels=8))
    assert runner.build_model(detector) is detector
    detector.bbox_head.loss_cls = OldStyleL1Loss()
    with pytest.raises(TypeError, match=r"^bbox_head\.loss_cls \(OldStyleL1Loss"):
        runner.build_model(detector)


def test_console_log_head_is_short_and_the_file_gets_everything(tmp_path):
    record = logging.LogRecord('x', logging.INFO, __file__, 1, None, None, None)
    head = FileOnlyLogHead()
    for message, shown in [('\n' + '-' * 60 + '\nSystem environment:\n    sys.platform: linux',
                            False), ('Config:\ndefault_scope = ...', False),
                           ('Hooks will be executed in the following order:\n...', False),
                           ('Epoch(train) [1][2/2]  loss: 1.58', True), (42, True)]:
        record.msg = message
        assert head.filter(record) is shown


def test_text_and_json_logs_always_tensorboard_when_installed(monkeypatch):
    monkeypatch.setattr(engine_setup, 'tensorboard_available', lambda: False)
    assert engine_setup.with_log_backends(None) == dict(
        type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
    monkeypatch.setattr(engine_setup, 'tensorboard_available', lambda: True)
    assert engine_setup.with_log_backends(None)['vis_backends'] == [
        dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
    mine = dict(type='MyVisualizer', vis_backends=[dict(type='TensorboardVisBackend',
                                                        save_dir='tb')])
    assert engine_setup.with_log_backends(mine) == dict(
        type='MyVisualizer', vis_backends=[dict(type='LocalVisBackend'),
                                           dict(type='TensorboardVisBackend', save_dir='tb')])
    assert mine['vis_backends'] == [dict(type='TensorboardVisBackend', save_dir='tb')]


def test_env_report_names_versions_devices_and_plugin_packages(capsys):
    runpy.run_module('toolbox.env', run_name='__main__')
    out = capsys.readouterr().out
    assert f'  torch             {torch.__version__}\n' in out
    assert 'detsegbox 0.1.0' in out and 'package(s): toolbox_plugins' in out
    assert 'toolbox-plugin-example 0.1.0' in out and 'toolbox_plugin_example' in out
    assert f'{os.cpu_count()} logical' in out
    cuda_line = next(line for line in out.splitlines() if line.startswith('  cuda '))
    assert ('not available' in cuda_line) != torch.cuda.is_available()
    assert 'failed plugins: 0' in out
