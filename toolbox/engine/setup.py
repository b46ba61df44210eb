"""From a config file to a ready Runner: the one place where mmengine is set up.

Handles plugin discovery, the default scope, distributed initialisation on CPU (gloo) and GPU
(nccl), and the model wrapper mmengine needs for CPU DDP.
"""
from __future__ import annotations

import os
import os.path as osp
import subprocess

import torch
from mmengine.config import Config
from mmengine.dist import init_dist, is_distributed

from toolbox.datasets.seeding import seeded_train_dataloader
from toolbox.plugins import load_plugins


def load_config(path: str, cfg_options: dict | None = None) -> Config:
    """Read an mmengine config, apply ``--cfg-options`` overrides, set scope ``toolbox``."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path!r} does not exist')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    cfg.default_scope = 'toolbox'
    return cfg


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
    if not any(h.get('type') == 'RNGStateHook' for h in custom_hooks):
        custom_hooks.append(dict(type='RNGStateHook'))
    cfg.custom_hooks = custom_hooks
    if cfg.get('train_dataloader') and cfg.get('per_sample_seeding', True):
        cfg.train_dataloader = seeded_train_dataloader(cfg.train_dataloader)
    return ToolboxRunner.from_cfg(cfg)
