"""From a config file to a ready Runner: the one place where mmengine is set up.

Handles plugin discovery, the default scope, distributed initialisation on CPU (gloo) and GPU
(nccl), and the model wrapper mmengine needs for CPU DDP.
"""
from __future__ import annotations

import difflib
import os
import os.path as osp
import subprocess

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
               'experiment_name', 'model_wrapper_cfg', 'custom_imports', 'per_sample_seeding')


class ConfigError(ValueError):
    """A config file or an override is wrong; the message names the file or the key."""


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
    number of workers) unless the config sets ``per_sample_seeding = False``.
    """
    import toolbox  # noqa: F401  (registers the core components)
    from toolbox.engine.runner import ToolboxRunner
    load_plugins()
    if cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(cfg.filename or 'config'))[0]
        cfg.work_dir = osp.join('work_dirs', name)
    os.makedirs(cfg.work_dir, exist_ok=True)
    custom_hooks = list(cfg.get('custom_hooks', []))
    for hook in ('RNGStateHook', 'ModelDataAgreementHook'):
        if not any(h.get('type') == hook for h in custom_hooks):
            custom_hooks.append(dict(type=hook))
    cfg.custom_hooks = custom_hooks
    if cfg.get('train_dataloader') and cfg.get('per_sample_seeding', True):
        cfg.train_dataloader = seeded_train_dataloader(cfg.train_dataloader)
    return ToolboxRunner.from_cfg(cfg)
