"""Hooks: RNG state in checkpoints, so that a resumed run continues like an uninterrupted one."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook

from toolbox.engine.runner import to_safe_types
from toolbox.registry import HOOKS


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the Python, NumPy and torch (CPU and CUDA) RNG states with every checkpoint and
    restore them on resume.

    mmengine restores model, optimizer, schedulers, iteration and (through the seeded sampler)
    the data order, but not the random generators that drive augmentation in the main process.
    Being the last hook before saving, it also converts the checkpoint to weights_only-safe
    types (see :mod:`toolbox.engine.runner`).
    """

    priority = 'LOWEST'  # runs last, so it can convert what other hooks added

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = dict(python=random.getstate(), numpy=np.random.get_state(),
                     torch=torch.get_rng_state())
        if torch.cuda.is_available():
            state['cuda'] = torch.cuda.get_rng_state_all()
        checkpoint.setdefault('meta', {})['rng_state'] = state
        checkpoint.update(to_safe_types(checkpoint))  # last hook: make it weights_only-loadable

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('meta', {}).get('rng_state')
        if state is None or not getattr(runner, '_resuming', False):
            return
        random.setstate(state['python'])
        np.random.set_state(state['numpy'])
        torch.set_rng_state(state['torch'])
        if 'cuda' in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])
