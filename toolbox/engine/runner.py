"""The toolbox's Runner: mmengine's, with safe checkpoint loading and atomic saving.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; torch >= 2.6 defaults it to
True, which cannot unpickle mmengine's resume checkpoints (numpy arrays, ``HistoryBuffer``).
Here every checkpoint is loaded with ``weights_only=True``, for ``load_from`` and ``resume``
alike: before saving, the few non-tensor objects mmengine puts in a checkpoint (numpy arrays
and scalars, message-hub history buffers) are converted to plain containers by
:func:`to_safe_types`, and :func:`from_safe_types` converts them back when resuming. Third-party
files that need full unpickling are refused with torch's error naming the offending class.

Checkpoints are written to ``<name>.tmp`` and renamed into place, so an interrupted save never
leaves a truncated ``.pth`` behind.
"""
from __future__ import annotations

import os
import os.path as osp
from collections import Counter, OrderedDict

import numpy as np
import torch
from mmengine.dist import master_only
from mmengine.logging import HistoryBuffer
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from toolbox.registry import RUNNERS


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


@RUNNERS.register_module()
class ToolboxRunner(Runner):
    """mmengine ``Runner`` with weights-only loading and atomic saving (module docstring)."""

    _resuming = False

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

    @master_only
    def save_checkpoint(self, out_dir: str, filename: str, *args, **kwargs):
        tmp_name = filename + '.tmp'
        super().save_checkpoint(out_dir, tmp_name, *args, **kwargs)
        os.replace(osp.join(out_dir, tmp_name), osp.join(out_dir, filename))
