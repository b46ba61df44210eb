"""The multi-image mixing wrapper (Mosaic, MixUp) and the hook that turns mixing off for the
last epochs (YOLOX practice: the last epochs train on plain images, whose statistics the
test images share).

A config wraps the detection dataset, whose own pipeline stops after loading (and resizing),
and moves the rest of the training pipeline to the wrapper::

    train_dataloader = dict(dataset=dict(
        type='MultiImageMixDataset',
        dataset=dict(type='VOCDataset', ..., pipeline=[
            dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
            dict(type='Resize', scale=(320, 320), keep_ratio=True)]),
        pipeline=[dict(type='Mosaic', img_scale=(320, 320)),
                  dict(type='RandomAffine', border=(-160, -160)),
                  dict(type='MixUp', img_scale=(320, 320), ratio_range=(0.8, 1.6)),
                  dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]))
    custom_hooks = [dict(type='MixSwitchHook', num_last_epochs=2)]
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from numbers import Integral

from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch.utils.data import Dataset

from toolbox.registry import DATASETS, HOOKS, TRANSFORMS


@DATASETS.register_module()
class MultiImageMixDataset(Dataset):
    """Run ``pipeline`` on samples of ``dataset``, giving mixing transforms other samples.

    ``dataset[idx]`` (the inner dataset's own pipeline applied) is passed through each
    transform of ``pipeline`` in order. Before a transform that has
    ``get_indexes(dataset) -> list[int]`` (:class:`~toolbox.datasets.transforms.Mosaic`,
    :class:`~toolbox.datasets.transforms.MixUp`), the samples at those indexes of the inner
    dataset are loaded and passed as ``results['mix_results']``; the key is removed after the
    transform. A transform that returns ``None`` is called again (the mixing samples are kept),
    at most ``max_refetch`` times, then ``RuntimeError``. Transforms whose class name is in
    ``skip_type_keys`` are skipped; :meth:`update_skip_type_keys` changes that at run time
    (:class:`MixSwitchHook`).

    Length, ``metainfo``, ``get_data_info`` and every other attribute (``class_counts``,
    ``get_cat_ids``, ...) are the inner dataset's.

    Args:
        dataset: config of the inner dataset, or a dataset.
        pipeline: transform configs, or transforms.
        skip_type_keys: class names of the transforms to skip.
        max_refetch: how many times a transform returning ``None`` is tried.
        lazy_init: leave the inner dataset's ``full_init`` to the first use.
    """

    def __init__(self, dataset: dict | Dataset, pipeline: Sequence[dict | Callable],
                 skip_type_keys: Sequence[str] | None = None, max_refetch: int = 15,
                 lazy_init: bool = False):
        if max_refetch < 1:
            raise ValueError(f'MultiImageMixDataset: max_refetch must be at least 1, got '
                             f'{max_refetch}')
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.pipeline = [TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline]
        not_callable = [t for t in self.pipeline if not callable(t)]
        if not_callable:
            raise TypeError(f'MultiImageMixDataset: pipeline items must be transform configs '
                            f'or callables, got {not_callable}')
        self.pipeline_types = [type(t).__name__ for t in self.pipeline]
        self.skip_type_keys: tuple[str, ...] = ()
        self.update_skip_type_keys(skip_type_keys or ())
        self.max_refetch = max_refetch
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    def full_init(self) -> None:
        if self._fully_initialized:
            return
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()
        self._fully_initialized = True

    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(self.dataset.metainfo)

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(idx)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        if name == 'dataset':  # not set yet (unpickling): do not recurse
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def update_skip_type_keys(self, skip_type_keys: Sequence[str]) -> None:
        """Skip the transforms of these class names from now on (in this process: see
        :class:`MixSwitchHook` for the loader's worker processes)."""
        if isinstance(skip_type_keys, str) or not all(isinstance(k, str) for k in skip_type_keys):
            raise TypeError(f'skip_type_keys must be a sequence of transform class names, got '
                            f'{skip_type_keys!r}')
        self.skip_type_keys = tuple(skip_type_keys)

    def __getitem__(self, idx: int):
        self.full_init()
        results = copy.deepcopy(self.dataset[idx])
        for transform, name in zip(self.pipeline, self.pipeline_types):
            if name in self.skip_type_keys:
                continue
            if hasattr(transform, 'get_indexes'):
                indexes = transform.get_indexes(self.dataset)
                indexes = [indexes] if isinstance(indexes, Integral) else list(indexes)
                results['mix_results'] = [copy.deepcopy(self.dataset[i]) for i in indexes]
            for _ in range(self.max_refetch):
                updated = transform(copy.deepcopy(results))
                if updated is not None:
                    break
            else:
                raise RuntimeError(f'MultiImageMixDataset: {name} returned None '
                                   f'{self.max_refetch} times for sample {idx} '
                                   f'(max_refetch={self.max_refetch})')
            results = updated
            if isinstance(results, dict):
                results.pop('mix_results', None)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(dataset={type(self.dataset).__name__}, '
                f'len={len(self)}, pipeline={self.pipeline_types}, '
                f'skip_type_keys={self.skip_type_keys})')


def find_mix_datasets(dataset) -> list[MultiImageMixDataset]:
    """Every :class:`MultiImageMixDataset` in ``dataset``, through wrappers that keep their
    parts in ``dataset`` (``SeededDataset``, ``RepeatDataset``, ``ClassBalancedDataset``) or
    ``datasets`` (``ConcatDataset``)."""
    if isinstance(dataset, MultiImageMixDataset):
        return [dataset]
    attributes = getattr(dataset, '__dict__', {})  # not getattr: wrappers forward lookups
    parts = ([attributes['dataset']] if attributes.get('dataset') is not None else []) + \
        list(attributes.get('datasets') or [])
    return [found for part in parts for found in find_mix_datasets(part)]


@HOOKS.register_module()
class MixSwitchHook(Hook):
    """For the last ``num_last_epochs`` epochs, skip the mixing transforms of the training
    dataset's :class:`MultiImageMixDataset` (YOLOX trains its last 15 of 300 epochs on plain
    images).

    At the start of every epoch from ``max_epochs - num_last_epochs`` on (0-based, so also
    after a resume past that point) the wrapper's ``skip_type_keys`` become
    ``skip_type_keys``. Worker processes hold their own copy of the dataset: with
    ``persistent_workers`` they would keep mixing, so the loader's iterator is dropped when the
    keys change and the epoch starts new workers with the updated dataset (measured in
    ``tests/test_mix_transforms.py``). Works with epoch-based training loops.

    Args:
        num_last_epochs: how many final epochs train without mixing.
        skip_type_keys: class names of the transforms to skip then.
    """

    def __init__(self, num_last_epochs: int = 15,
                 skip_type_keys: Sequence[str] = ('Mosaic', 'RandomAffine', 'MixUp')):
        if num_last_epochs < 0:
            raise ValueError(f'MixSwitchHook: num_last_epochs must be >= 0, got '
                             f'{num_last_epochs}')
        self.num_last_epochs = num_last_epochs
        self.skip_type_keys = tuple(skip_type_keys)

    def before_train_epoch(self, runner) -> None:
        if runner.epoch < runner.max_epochs - self.num_last_epochs:
            return
        loader = runner.train_dataloader
        targets = find_mix_datasets(loader.dataset)
        if not targets:
            raise TypeError(f'MixSwitchHook: the training dataset '
                            f'{type(loader.dataset).__name__} has no MultiImageMixDataset '
                            f'to switch; remove the hook or wrap the dataset')
        if all(set(t.skip_type_keys) == set(self.skip_type_keys) for t in targets):
            return
        for target in targets:
            target.update_skip_type_keys(self.skip_type_keys)
            if not set(self.skip_type_keys) & set(target.pipeline_types):
                print_log(f'MixSwitchHook: none of {list(self.skip_type_keys)} is in the '
                          f'pipeline {target.pipeline_types}: nothing is switched off',
                          logger='current', level=logging.WARNING)
        if getattr(loader, 'persistent_workers', False) and getattr(loader, 'num_workers', 0):
            loader._iterator = None  # the next iter() starts workers with the updated dataset
        print_log(f'MixSwitchHook: epoch {runner.epoch + 1} of {runner.max_epochs}: skipping '
                  f'{list(self.skip_type_keys)} from now on', logger='current')
