"""From a config file to a ready Runner: the one place where mmengine is set up.

Handles plugin discovery, the default scope, distributed initialisation on CPU (gloo) and GPU
(nccl), the model wrapper mmengine needs for CPU DDP, the log backends (text and json always,
TensorBoard when installed) and the check that the data a run reads exists
(:func:`check_data_paths`, before the Runner and its config dump).
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import os.path as osp
import subprocess
from collections.abc import Iterator, Sequence

import torch
from mmengine.config import Config
from mmengine.dist import init_dist, is_distributed

from toolbox.datasets.seeding import seeded_train_dataloader
from toolbox.plugins import load_plugins


# Top-level keys the Runner and the toolbox read, valid in --cfg-options even when a config
# does not set them.
RUNNER_KEYS = ('model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader',
               'train_cfg', 'val_cfg', 'test_cfg', 'auto_scale_lr', 'optim_wrapper',
               'param_scheduler', 'val_evaluator', 'test_evaluator', 'default_hooks',
               'custom_hooks', 'data_preprocessor', 'load_from', 'resume', 'launcher', 'env_cfg',
               'log_processor', 'log_level', 'visualizer', 'default_scope', 'randomness',
               'experiment_name', 'model_wrapper_cfg', 'custom_imports', 'per_sample_seeding',
               'precision', 'channels_last', 'fuse_conv_bn', 'num_threads', 'compile')


class ConfigError(ValueError):
    """A config file or an override is wrong; the message names the file or the key."""


class DataPathError(FileNotFoundError):
    """A dataset path of the config does not exist; ``missing`` lists
    ``(config key, resolved path)`` for each one."""

    def __init__(self, message: str, missing: list[tuple[str, str]]):
        super().__init__(message)
        self.missing = missing


# Where docs/datasets.md describes each dataset type (download and layout).
DATASET_NAMES = dict(CocoDataset='COCO', VOCDataset='Pascal VOC', VOCSegDataset='Pascal VOC 2012',
                     CamVidDataset='CamVid', DecathlonDataset='the Medical Segmentation Decathlon',
                     FolderSegDataset='a custom dataset')
# The loops each split's dataloader and evaluator belong to.
_SPLIT_KEYS = dict(train=('train_dataloader', None), val=('val_dataloader', 'val_evaluator'),
                   test=('test_dataloader', 'test_evaluator'))


def _dataset_paths(dataset: dict, key: str) -> Iterator[tuple[str, str, str, str]]:
    """``(config key, resolved path, 'file' | 'dir', dataset type)`` of every path a dataset
    config reads, wrappers (``dataset=``, ``datasets=[...]``) included. Paths are resolved as
    mmengine's ``BaseDataset`` does: relative ``ann_file`` and ``data_prefix`` values are
    joined to ``data_root``; a missing ``data_root`` hides the paths under it."""
    if not isinstance(dataset, dict):
        return
    if isinstance(dataset.get('dataset'), dict):
        yield from _dataset_paths(dataset['dataset'], f'{key}.dataset')
    for i, part in enumerate(dataset.get('datasets') or []):
        yield from _dataset_paths(part, f'{key}.datasets[{i}]')
    kind = str(dataset.get('type', ''))
    root = dataset.get('data_root') or ''
    if root:
        yield f'{key}.data_root', osp.abspath(root), 'dir', kind
        if not osp.isdir(root):
            return
    files = [('ann_file', dataset.get('ann_file'))] + [
        (f'extra_ann_files[{i}]', f) for i, f in enumerate(dataset.get('extra_ann_files') or [])]
    for name, value in files:
        if value:
            yield f'{key}.{name}', osp.abspath(osp.join(root, value)), 'file', kind
    for name, value in (dataset.get('data_prefix') or {}).items():
        if isinstance(value, str) and (value or root):
            yield f'{key}.data_prefix.{name}', osp.abspath(osp.join(root, value)), 'dir', kind


def check_data_paths(cfg: Config, splits: Sequence[str] = ('train', 'val')) -> None:
    """Raise :class:`DataPathError` if a path the given splits read does not exist.

    Checked for each split that will run (``'train'``: ``train_dataloader`` and the dataloaders
    of ``custom_hooks`` such as ``ValLossHook``; ``'val'`` / ``'test'``: the dataloader and the
    evaluator's ``ann_file``, when the config has the split's loop): every ``data_root``,
    ``ann_file`` (and ``extra_ann_files``) and ``data_prefix`` entry, resolved against the
    working directory as the datasets resolve them. Run it before the Runner is built: the
    error then comes first, not after the environment report and the config dump, and names
    every missing path with its config key (e.g. ``train_dataloader.dataset.ann_file``) and
    where docs/datasets.md says to get the dataset.
    """
    sources = []
    for split in splits:
        if split not in _SPLIT_KEYS:
            raise ValueError(f'check_data_paths: unknown split {split!r}; one of '
                             f'{sorted(_SPLIT_KEYS)}')
        loader_key, evaluator_key = _SPLIT_KEYS[split]
        if split != 'train' and not cfg.get(f'{split}_cfg'):
            continue
        loader = cfg.get(loader_key) or {}
        sources += list(_dataset_paths(loader.get('dataset'), f'{loader_key}.dataset'))
        evaluators = cfg.get(evaluator_key) if evaluator_key else None
        evaluators = evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]
        for i, evaluator in enumerate(e for e in evaluators if isinstance(e, dict)):
            where = evaluator_key if len(evaluators) == 1 else f'{evaluator_key}[{i}]'
            if evaluator.get('ann_file'):
                sources.append((f'{where}.ann_file', osp.abspath(evaluator['ann_file']), 'file',
                                str(loader.get('dataset', {}).get('type', ''))))
        if split == 'train':
            for i, hook in enumerate(cfg.get('custom_hooks') or []):
                if isinstance(hook.get('dataloader'), dict):
                    sources += list(_dataset_paths(hook['dataloader'].get('dataset'),
                                                   f'custom_hooks[{i}].dataloader.dataset'))
    missing = [(key, path, kind) for key, path, what, kind in sources
               if not (osp.isdir(path) if what == 'dir' else osp.isfile(path))]
    if not missing:
        return
    lines = [f'  {key}: {path} does not exist' for key, path, _ in missing]
    advice = []
    for kind in dict.fromkeys(kind for _, _, kind in missing):
        name = DATASET_NAMES.get(kind, kind.replace('Dataset', '') or 'the dataset')
        advice.append(f'see docs/datasets.md for where to get {name} and its layout')
    if any(f'{osp.sep}data{osp.sep}demo' in path for _, path, _ in missing):
        advice.append('the demo data is generated by `python tools/make_demo_data.py`')
    raise DataPathError(
        f'{cfg.filename or "the config"}: {len(missing)} data path(s) do not exist (relative '
        f'paths are resolved against the working directory {os.getcwd()}):\n' +
        '\n'.join(lines) + '\n' + '; '.join(advice) + '; or point the config at your copy, '
        'e.g. --cfg-options ' + f'{missing[0][0]}=PATH.',
        [(key, path) for key, path, _ in missing])


def tensorboard_available() -> bool:
    """Whether ``tensorboard`` (needed by mmengine's ``TensorboardVisBackend``) is installed."""
    return importlib.util.find_spec('tensorboard') is not None


def with_log_backends(visualizer: dict | None) -> dict:
    """The visualizer config with the toolbox's log backends added.

    mmengine's ``LocalVisBackend`` always (the json scalars next to the text log, which the
    logger writes regardless), and ``TensorboardVisBackend`` when :func:`tensorboard_available`
    (event files under ``<work_dir>/<timestamp>/vis_data``). Backends a config lists are kept.
    """
    visualizer = dict(visualizer or dict(type='Visualizer'))
    backends = [dict(b) for b in visualizer.get('vis_backends') or []]
    types = {b.get('type') for b in backends}
    if 'LocalVisBackend' not in types:
        backends.insert(0, dict(type='LocalVisBackend'))
    if 'TensorboardVisBackend' not in types and tensorboard_available():
        backends.append(dict(type='TensorboardVisBackend'))
    visualizer['vis_backends'] = backends
    return visualizer


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """Read an mmengine config, apply ``--cfg-options`` overrides, set scope ``toolbox``.

    A config is a Python file and is executed as code: load only configs you trust
    (docs/reliability.md). An error while reading it names the file; an override whose
    top-level key is neither in the config nor one the Runner reads (:data:`RUNNER_KEYS`) is
    an error naming the closest valid key (mmengine would add it silently, and a typo such as
    ``optim_wraper.optimizer.lr=0.1`` would change nothing).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path!r} does not exist')
    try:
        cfg = Config.fromfile(path)
    except SyntaxError as exc:
        raise ConfigError(f'config file {path}: syntax error: {exc.msg} (line {exc.lineno} of '
                          f'{exc.filename if exc.filename not in (None, "<unknown>") else path})'
                          ) from exc
    except Exception as exc:  # noqa: BLE001  (a config runs arbitrary code)
        raise ConfigError(f'config file {path}: cannot be read: {type(exc).__name__}: {exc}'
                          ) from exc
    if cfg_options:
        valid = set(cfg.keys()) | set(RUNNER_KEYS)
        for key in cfg_options:
            top = key.split('.')[0]
            if top not in valid:
                close = difflib.get_close_matches(top, sorted(valid), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ''
                raise ConfigError(f'--cfg-options {key}: {top!r} is not a key of {path} nor one '
                                  f'the Runner reads{hint}')
        old_length = _train_length(cfg)
        cfg.merge_from_dict(cfg_options)
        if not any(key.startswith('param_scheduler') for key in cfg_options):
            _stretch_schedules(cfg, old_length, _train_length(cfg))
    cfg.default_scope = 'toolbox'
    return cfg


def _train_length(cfg: Config) -> int | None:
    train_cfg = cfg.get('train_cfg') or {}
    return train_cfg.get('max_epochs', train_cfg.get('max_iters'))


def _stretch_schedules(cfg: Config, old: int | None, new: int | None) -> None:
    """After ``--cfg-options train_cfg.max_epochs=N`` (or ``max_iters``), make the parameter
    schedules that ended with the old training length end with the new one (``end``, and a
    cosine ``T_max`` that spanned to the old end), so that a longer run does not spend its
    extra epochs at the final learning rate. Schedules ending elsewhere (warm-ups) are kept."""
    if old is None or new is None or old == new or not cfg.get('param_scheduler'):
        return
    by_epoch = 'max_epochs' in cfg.train_cfg
    schedulers = cfg.param_scheduler
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        if scheduler.get('end') != old or scheduler.get('by_epoch', True) != by_epoch:
            continue
        begin = scheduler.get('begin', 0)
        scheduler['end'] = new
        if scheduler.get('T_max') == old - begin:
            scheduler['T_max'] = new - begin


def init_distributed(cfg: Config, launcher: str) -> None:
    """Initialise the process group *before* the Runner exists.

    mmengine would initialise it inside the Runner with NCCL; on CPU (gloo) the group must exist
    first and DDP must be built with ``device_ids=None``.
    """
    cfg.launcher = launcher
    if launcher == 'none':
        return
    backend = 'nccl' if torch.cuda.is_available() else 'gloo'
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = backend
    if not is_distributed():
        if backend == 'nccl':
            init_dist(launcher, backend=backend)
        else:  # mmengine's init_dist calls torch.cuda.set_device, which fails without a GPU
            if launcher == 'slurm':
                _slurm_env_to_torch_env()
            torch.distributed.init_process_group(backend='gloo')
    if backend == 'gloo':
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)


def close_distributed() -> None:
    """Wait for every process, then destroy the process group (no-op when not distributed).

    Without it each process tears its gloo group down at interpreter exit while a peer may
    already be gone, and a rank can abort ("terminate called without an active exception",
    SIGABRT) after a run that finished; seen on 2-process CPU runs under load.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _slurm_env_to_torch_env() -> None:
    """Set the variables ``init_process_group(init_method='env://')`` reads from SLURM's."""
    os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
    os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
    os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        hosts = subprocess.run(['scontrol', 'show', 'hostname', os.environ['SLURM_NODELIST']],
                               capture_output=True, text=True, check=True).stdout.split()
        os.environ['MASTER_ADDR'] = hosts[0]


def build_runner(cfg: Config):
    """Build the :class:`~toolbox.engine.runner.ToolboxRunner` for ``cfg``.

    ``cfg.work_dir`` defaults to ``work_dirs/<config name>``. The training loader's random
    augmentation is seeded per sample (:mod:`toolbox.datasets.seeding`: exact resume with any
    number of workers) unless the config sets ``per_sample_seeding = False``. The visualizer
    gets the log backends of :func:`with_log_backends`. Call :func:`check_data_paths` first
    (``tools/train.py`` does) so that missing data is reported before the Runner writes its
    log head. The speed keys (``precision``, ``channels_last``, ``fuse_conv_bn``,
    ``num_threads``) are applied by :func:`~toolbox.engine.precision.apply_speed_options`.
    """
    import toolbox  # noqa: F401  (registers the core components)
    from toolbox.engine.precision import apply_speed_options
    from toolbox.engine.runner import ToolboxRunner
    load_plugins()
    apply_speed_options(cfg)
    if cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(cfg.filename or 'config'))[0]
        cfg.work_dir = osp.join('work_dirs', name)
    os.makedirs(cfg.work_dir, exist_ok=True)
    custom_hooks = list(cfg.get('custom_hooks', []))
    for hook in ('RNGStateHook', 'ModelDataAgreementHook'):
        if not any(h.get('type') == hook for h in custom_hooks):
            custom_hooks.append(dict(type=hook))
    cfg.custom_hooks = custom_hooks
    cfg.visualizer = with_log_backends(cfg.get('visualizer'))
    if cfg.get('train_dataloader') and cfg.get('per_sample_seeding', True):
        cfg.train_dataloader = seeded_train_dataloader(cfg.train_dataloader)
    return ToolboxRunner.from_cfg(cfg)
