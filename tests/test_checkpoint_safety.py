"""Checkpoint saving that loses nothing: a save killed at any step, or a full disk, always
leaves a loadable checkpoint that ``--resume`` finds (docs/reliability.md)."""
import errno
import io
import os
import os.path as osp
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from torch import nn

from toolbox.engine import build_runner
from toolbox.engine import runner as runner_module
from toolbox.engine.runner import CheckpointHook, find_resume_checkpoint, is_loadable_checkpoint
from toolbox.registry import DATASETS, MODELS


@MODELS.register_module()
class _ToyRegressor(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=((out - torch.stack(data_samples)) ** 2).mean())
        return out


@DATASETS.register_module()
class _ToyData(torch.utils.data.Dataset):
    metainfo = dict(classes=('a',))

    def __len__(self):
        return 8

    def __getitem__(self, index):
        x = torch.tensor([float(index), 1.0])
        return dict(inputs=x, data_samples=x.sum(0, keepdim=True))


def _cfg(work_dir, max_epochs, max_keep_ckpts=1, resume=False):
    return Config(dict(
        model=dict(type='_ToyRegressor'), work_dir=str(work_dir),
        train_dataloader=dict(dataset=dict(type='_ToyData'), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1,
                                           max_keep_ckpts=max_keep_ckpts),
                           logger=dict(type='LoggerHook', interval=1)),
        default_scope='toolbox', resume=resume, load_from=None, randomness=dict(seed=0),
        log_level='WARNING'))


def _checkpoint_epoch(path):
    return torch.load(path, map_location='cpu', weights_only=True)['meta']['epoch']


def test_the_toolbox_checkpoint_hook_replaces_mmengines(tmp_path):
    runner = build_runner(_cfg(tmp_path, 3))
    assert any(type(h) is CheckpointHook for h in runner.hooks)
    runner.train()
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith('.pth')) == ['epoch_3.pth']
    assert open(tmp_path / 'last_checkpoint').read() == str(tmp_path / 'epoch_3.pth')


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (a BaseException, which only the cleanup
    code under test sees, in its ``except BaseException``)."""


_ENOSPC = OSError(errno.ENOSPC, 'No space left on device')


def _fail_when(real, condition, error):
    def wrapper(*args, **kwargs):
        if condition(*args):
            raise error
        return real(*args, **kwargs)
    return wrapper


def _partial_torch_save(error):
    """torch.save that writes half of the bytes, then dies."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise error
    return save


def _injections(work_dir):
    """Each kills (or fills the disk during) the save of epoch 3 at one step, in order."""
    new_ckpt = str(work_dir / 'epoch_3.pth')
    always = lambda *args: True  # noqa: E731
    return {
        'kill during the write': (torch, 'save', _partial_torch_save(_Killed())),
        'full disk during the write': (torch, 'save', _partial_torch_save(_ENOSPC)),
        'full disk at the fsync of the checkpoint': (
            runner_module, 'fsync_file', _fail_when(None, always, _ENOSPC)),
        'kill at the rename of the checkpoint': (os, 'replace', _fail_when(
            os.replace, lambda src, dst: src.endswith('epoch_3.pth.tmp'), _Killed())),
        'kill after the rename, before the pointer': (
            runner_module, 'fsync_dir', _fail_when(None, always, _Killed())),
        'full disk while writing the pointer': (os, 'fsync', _fail_when(
            os.fsync, lambda fd: osp.exists(new_ckpt), _ENOSPC)),
        'kill at the rename of the pointer': (os, 'replace', _fail_when(
            os.replace, lambda src, dst: src.endswith('last_checkpoint.tmp'), _Killed())),
        'kill while deleting the old checkpoint': (os, 'remove', _fail_when(
            os.remove, lambda path, *a: str(path).endswith('.pth'), _Killed())),
    }


CASES = sorted(_injections(Path('.')))


@pytest.fixture(scope='module')
def two_epochs(tmp_path_factory):
    """Work dirs after two epochs, with max_keep_ckpts 1 and 2 (copied by each test)."""
    dirs = {}
    for keep in (1, 2):
        work_dir = tmp_path_factory.mktemp(f'keep{keep}')
        build_runner(_cfg(work_dir, 2, keep)).train()
        dirs[keep] = work_dir
    return dirs


def _copy_work_dir(src, dst):
    shutil.copytree(src, dst, dirs_exist_ok=True)
    pointer = dst / 'last_checkpoint'
    pointer.write_text(pointer.read_text().replace(str(src), str(dst)))


@pytest.mark.parametrize('max_keep_ckpts', [1, 2])
@pytest.mark.parametrize('case', CASES)
def test_a_save_killed_at_any_step_leaves_a_checkpoint_that_resume_finds(
        tmp_path, monkeypatch, two_epochs, case, max_keep_ckpts):
    _copy_work_dir(two_epochs[max_keep_ckpts], tmp_path)
    module, name, failure = _injections(tmp_path)[case]
    monkeypatch.setattr(module, name, failure)
    with pytest.raises((_Killed, OSError)):
        build_runner(_cfg(tmp_path, 3, max_keep_ckpts, resume=True)).train()
    monkeypatch.undo()

    found = find_resume_checkpoint(str(tmp_path))
    assert found is not None and is_loadable_checkpoint(found)
    assert _checkpoint_epoch(found) in (2, 3)
    if not case.startswith('kill'):  # a full disk: the failed file is removed at once
        assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]
    resumed = build_runner(_cfg(tmp_path, 3, max_keep_ckpts, resume=True))
    resumed.train()
    assert resumed.epoch == 3
    assert not [f for f in os.listdir(tmp_path) if f.endswith('.tmp')]  # cleaned up
    # a kill between the save and the rotation may leave one checkpoint too many, never fewer
    assert len([f for f in os.listdir(tmp_path) if f.endswith('.pth')]) <= max_keep_ckpts + 1


@pytest.mark.parametrize('pointer', ['missing', 'empty', 'deleted file', 'broken file'])
def test_resume_falls_back_to_the_newest_loadable_checkpoint(tmp_path, pointer, caplog):
    build_runner(_cfg(tmp_path, 2, max_keep_ckpts=2)).train()
    last = tmp_path / 'last_checkpoint'
    if pointer == 'missing':
        last.unlink()
        expected = 2
    elif pointer == 'empty':
        last.write_text('')
        expected = 2
    elif pointer == 'deleted file':
        (tmp_path / 'epoch_2.pth').unlink()
        expected = 1
    else:
        data = (tmp_path / 'epoch_2.pth').read_bytes()
        (tmp_path / 'epoch_2.pth').write_bytes(data[: len(data) // 3])
        expected = 1
    found = find_resume_checkpoint(str(tmp_path))
    assert osp.basename(found) == f'epoch_{expected}.pth'
    runner = build_runner(_cfg(tmp_path, 3, max_keep_ckpts=2, resume=True))
    runner.train()
    assert runner.epoch == 3


def test_nothing_to_resume_starts_from_scratch(tmp_path):
    assert find_resume_checkpoint(str(tmp_path)) is None
    (tmp_path / 'epoch_1.pth').write_bytes(b'not a checkpoint')
    assert find_resume_checkpoint(str(tmp_path)) is None
