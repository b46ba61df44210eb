"""The toolbox's Runner: mmengine's, with safe checkpoint loading and atomic saving, the loss
contract checked when the model is built, and a short console log head.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; torch >= 2.6 defaults it to
True, which cannot unpickle mmengine's resume checkpoints (numpy arrays, ``HistoryBuffer``).
Here every checkpoint is loaded with ``weights_only=True``, for ``load_from`` and ``resume``
alike: before saving, the few non-tensor objects mmengine puts in a checkpoint (numpy arrays
and scalars, message-hub history buffers) are converted to plain containers by
:func:`to_safe_types`, and :func:`from_safe_types` converts them back when resuming. Third-party
files that need full unpickling are refused with torch's error naming the offending class.

Saving loses nothing (docs/reliability.md): a checkpoint is written to ``<name>.tmp``, fsynced,
renamed into place and its directory fsynced; only then is the ``last_checkpoint`` pointer
replaced (also write, fsync, rename) and are old checkpoints rotated out
(:class:`CheckpointHook`). A kill or a full disk at any point leaves the previous checkpoint
and a pointer to a complete file. ``--resume`` without a path falls back to the newest
loadable checkpoint of the work dir when the pointer is missing, empty or names a missing or
broken file (:func:`find_resume_checkpoint`), and says so; leftover ``.tmp`` files are removed
when training starts.

The console gets a short head: mmengine's environment report (with torch's build
configuration), the full config dump and the hook table (together several hundred lines) go to
the log file ``<work_dir>/<timestamp>/<timestamp>.log`` only, and the console gets one line
saying so (:class:`FileOnlyLogHead`). The config is also written to ``<work_dir>/<name>.py``.
"""
from __future__ import annotations

import glob
import logging
import os
import os.path as osp
from collections import Counter, OrderedDict, deque

import numpy as np
import torch
from mmengine.dist import is_main_process, master_only
from mmengine.hooks import CheckpointHook as MMEngineCheckpointHook
from mmengine.logging import HistoryBuffer, print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from toolbox.models.loss_utils import check_loss_contract
from toolbox.registry import HOOKS, RUNNERS


_MARK = '__toolbox_type__'


def to_safe_types(obj):
    """Recursively replace numpy arrays/scalars and ``HistoryBuffer`` by plain containers that
    ``torch.load(weights_only=True)`` accepts (tuples become lists)."""
    if isinstance(obj, HistoryBuffer):
        return {_MARK: 'HistoryBuffer', 'max_length': obj.max_length,
                'log': obj._log_history.tolist(), 'count': obj._count_history.tolist()}
    if isinstance(obj, np.ndarray):
        return {_MARK: 'ndarray', 'dtype': str(obj.dtype), 'data': obj.tolist()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Counter):  # param schedulers keep milestones in a Counter
        return {_MARK: 'Counter', 'items': [[k, v] for k, v in obj.items()]}
    if isinstance(obj, OrderedDict):  # state dicts: keep the type and torch's _metadata
        out = OrderedDict((k, to_safe_types(v)) for k, v in obj.items())
        if hasattr(obj, '_metadata'):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, dict):
        return {k: to_safe_types(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_safe_types(v) for v in obj)
    return obj


def from_safe_types(obj):
    """Inverse of :func:`to_safe_types`."""
    if isinstance(obj, dict):
        kind = obj.get(_MARK)
        if kind == 'ndarray':
            return np.array(obj['data'], dtype=obj['dtype'])
        if kind == 'HistoryBuffer':
            return HistoryBuffer(obj['log'], obj['count'], obj['max_length'])
        if kind == 'Counter':
            return Counter({k: v for k, v in obj['items']})
        out = type(obj)((k, from_safe_types(v)) for k, v in obj.items())
        if hasattr(obj, '_metadata'):
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(from_safe_types(v) for v in obj)
    return obj


def load_checkpoint_file(filename: str, map_location='cpu') -> dict:
    """``torch.load(weights_only=True)`` of a local checkpoint, safe types restored."""
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    return from_safe_types(torch.load(filename, map_location=map_location, weights_only=True))


def fsync_file(path: str) -> None:
    """Flush ``path``'s data to the disk."""
    with open(path, 'rb+') as f:
        os.fsync(f.fileno())


def fsync_dir(path: str) -> None:
    """Flush a directory entry (a rename inside ``path``) to the disk; a no-op where
    directories cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    """Replace ``path`` by ``text`` atomically: write ``path.tmp``, fsync, rename."""
    tmp = path + '.tmp'
    try:
        with open(tmp, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_dir(osp.dirname(path) or '.')


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def is_loadable_checkpoint(path: str) -> bool:
    """Whether ``path`` is a complete checkpoint that loads with ``weights_only=True``."""
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # noqa: BLE001  (truncated zip, not a checkpoint, unsafe pickle, ...)
        return False
    return isinstance(checkpoint, dict) and 'state_dict' in checkpoint


def find_resume_checkpoint(work_dir: str, logger=None) -> str | None:
    """The checkpoint ``--resume`` (no path) continues from, or None when there is none.

    The file named by ``work_dir/last_checkpoint`` when it loads; otherwise (pointer missing,
    empty, naming a missing or broken file) the newest loadable ``*.pth`` of ``work_dir`` by
    modification time, with a warning naming what was wrong and what is used instead.
    """
    def warn(message):
        print_log(message, logger=logger or 'current', level=30)

    pointer = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
        if named is not None and is_loadable_checkpoint(named):
            return named
        problem = ('is empty' if named is None else f'names {named!r}, which ' +
                   ('does not exist' if not osp.exists(named) else 'does not load'))
    else:
        problem = 'does not exist'
    candidates = sorted(glob.glob(osp.join(work_dir, '*.pth')), key=osp.getmtime, reverse=True)
    for candidate in candidates:
        if candidate != named and is_loadable_checkpoint(candidate):
            warn(f'resume: {pointer} {problem}; resuming from the newest loadable checkpoint '
                 f'{candidate} instead')
            return candidate
    if candidates or named:
        warn(f'resume: {pointer} {problem} and no checkpoint in {work_dir} loads; starting '
             f'from scratch')
    return None


@HOOKS.register_module()
class CheckpointHook(MMEngineCheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) with saving that loses nothing.

    Registered under the same name in the toolbox scope, so every config gets it. The order
    is: write the new checkpoint (atomic, fsynced: :meth:`ToolboxRunner.save_checkpoint`),
    point ``last_checkpoint`` at it (atomic), and only then delete the checkpoints beyond
    ``max_keep_ckpts``. mmengine deletes the old checkpoint first, so with
    ``max_keep_ckpts=1`` a kill or a full disk during the save left no checkpoint at all.
    Leftover ``*.tmp`` files of an interrupted save are removed before training starts.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if is_main_process():
            for leftover in glob.glob(osp.join(self.out_dir, '*.tmp')) + \
                    glob.glob(osp.join(runner.work_dir, 'last_checkpoint.tmp')):
                _remove_quietly(leftover)
                runner.logger.warning(f'removed {leftover}, left by an interrupted save')

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """``save_best='<metric>'``: mmengine's, except that the previous best checkpoint is
        removed after the new one is written, not before."""
        previous = [getattr(self, 'best_ckpt_path', None)] + \
            list(getattr(self, 'best_ckpt_path_dict', {}).values())
        self.best_ckpt_path = None  # mmengine removes the files these name before saving
        self.best_ckpt_path_dict = {k: None for k in getattr(self, 'best_ckpt_path_dict', {})}
        super()._save_best_checkpoint(runner, metrics)
        best = {self.best_ckpt_path} | set(self.best_ckpt_path_dict.values())
        for key, path in zip([None] + list(self.best_ckpt_path_dict), previous):
            if path is None:
                continue
            if key is None and self.best_ckpt_path is None:
                self.best_ckpt_path = path  # not improved: keep pointing at the old best
            elif key is not None and self.best_ckpt_path_dict[key] is None:
                self.best_ckpt_path_dict[key] = path
            elif path not in best and is_main_process() and osp.isfile(path):
                os.remove(path)
                runner.logger.info(f'removed the previous best checkpoint {path}')

    def _save_checkpoint_with_step(self, runner, step, meta):
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        keep = [s for s in self.keep_ckpt_ids if s != step] + [step] \
            if self.max_keep_ckpts > 0 else []
        # the ids go into the checkpoint's message hub: they must already include this one
        runner.message_hub.update_info('keep_ckpt_ids', keep[-self.max_keep_ckpts:]
                                       if self.max_keep_ckpts > 0 else [])
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if self.max_keep_ckpts > 0:
            for old in keep[:-self.max_keep_ckpts]:
                path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
                if osp.isfile(path):
                    os.remove(path)
            self.keep_ckpt_ids = deque(keep[-self.max_keep_ckpts:], self.max_keep_ckpts)


class FileOnlyLogHead(logging.Filter):
    """A console-handler filter that drops mmengine's long log-head records (the environment
    report, the config dump and the hook table); the log file still gets them."""

    PREFIXES = ('\n' + '-' * 60 + '\nSystem environment:', 'Config:\n',
                'Hooks will be executed in the following order')

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.PREFIXES))


@RUNNERS.register_module()
class ToolboxRunner(Runner):
    """mmengine ``Runner`` with weights-only loading, atomic saving, the loss contract checked
    at build time and a short console log head (module docstring)."""

    _resuming = False

    def build_logger(self, log_level='INFO', log_file=None, **kwargs):
        logger = super().build_logger(log_level, log_file, **kwargs)
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler) and not any(
                    isinstance(f, FileOnlyLogHead) for f in handler.filters):
                handler.addFilter(FileOnlyLogHead())
        return logger

    def _log_env(self, env_cfg: dict) -> None:
        super()._log_env(env_cfg)
        log_files = [h.baseFilename for h in self.logger.handlers
                     if isinstance(h, logging.FileHandler)]
        where = log_files[0] if log_files else 'the log file'
        model_cfg = self.cfg.get('model')
        if isinstance(model_cfg, dict):
            model_cfg = model_cfg.get('module', model_cfg)  # inside a TTA wrapper
        preprocessor = (model_cfg.get('data_preprocessor') or {}) \
            if isinstance(model_cfg, dict) else {}
        layout = 'channels-last' if preprocessor.get('channels_last') else 'NCHW'
        self.logger.info(f'torch {torch.__version__}, seed {self._seed}, '
                         f"{self.cfg.get('precision', 'fp32')} {layout}, work dir "
                         f'{self.work_dir}; environment, full config and hook order: {where} '
                         f'(`python -m toolbox.env` prints the environment)')

    def build_model(self, model):
        """mmengine's, then :func:`~toolbox.models.loss_utils.check_loss_contract`: a loss
        that cannot take the keywords its head passes fails here, naming itself."""
        model = super().build_model(model)
        check_loss_contract(model)
        return model

    def resume(self, filename: str, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True, map_location='default') -> None:
        self._resuming = True
        try:
            super().resume(filename, resume_optimizer, resume_param_scheduler, map_location)
        finally:
            self._resuming = False

    def load_checkpoint(self, filename: str, map_location='cpu', strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):
        checkpoint = load_checkpoint_file(filename, map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        checkpoint = _load_checkpoint_to_model(model, checkpoint, strict, revise_keys=revise_keys)
        self._has_loaded = True
        self.logger.info(f'Loaded checkpoint from {filename} (weights_only=True)')
        return checkpoint

    def load_or_resume(self) -> None:
        """mmengine's, except that ``resume=True`` without a file uses
        :func:`find_resume_checkpoint` (fallback to the newest loadable checkpoint)."""
        if not self._has_loaded and self._resume and self._load_from is None:
            resume_from = find_resume_checkpoint(self.work_dir, self.logger)
            if resume_from is not None:
                self.logger.info(f'Auto resumed from the latest checkpoint {resume_from}.')
                self.resume(resume_from)
                self._has_loaded = True
            return None
        return super().load_or_resume()

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs):
        """Write ``filename.tmp``, fsync, rename to ``filename``, fsync the directory; a
        failed write (full disk, ...) removes the partial file and raises."""
        tmp_name = filename + '.tmp'
        tmp_path, path = osp.join(out_dir, tmp_name), osp.join(out_dir, filename)
        try:
            super().save_checkpoint(out_dir, tmp_name, *args, **kwargs)
            fsync_file(tmp_path)
            os.replace(tmp_path, path)
        except BaseException:
            _remove_quietly(tmp_path)
            raise
        fsync_dir(out_dir)
