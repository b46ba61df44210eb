"""Hooks: RNG state in checkpoints (exact resume) and dataset class counts for the losses."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

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


@HOOKS.register_module()
class ClassCountsHook(Hook):
    """Before training, pass ``runner.train_dataloader.dataset.class_counts()`` to every module
    of the model that has ``set_class_counts`` (e.g. :class:`BalancedSoftmaxLoss`).

    The dataset must provide ``class_counts()`` (the toolbox's detection and segmentation
    datasets do; dataset wrappers do not, which raises an error naming the dataset type).
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        dataset = runner.train_dataloader.dataset
        if not hasattr(dataset, 'class_counts'):
            raise TypeError(f'ClassCountsHook: the training dataset {type(dataset).__name__} has '
                            f'no class_counts()')
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        targets = [(name, m) for name, m in model.named_modules()
                   if hasattr(m, 'set_class_counts')]
        if not targets:
            print_log('ClassCountsHook: no module of the model takes class counts',
                      logger='current')
            return
        counts = dataset.class_counts()
        for name, module in targets:
            module.set_class_counts(counts)
        print_log(f'ClassCountsHook: class counts of {type(dataset).__name__} set in '
                  f'{[name for name, _ in targets]}', logger='current')
