"""Per-sample seeding of the training data: exact resume for any number of loader workers.

mmengine seeds each loader worker once, with ``seed + worker_id``. The random augmentation of
a sample therefore depends on which worker loads it and on everything that worker loaded
before; with persistent workers that history spans epochs, and none of it is in a checkpoint,
so a resumed run augments differently from the uninterrupted one (measured: 124 of 144 weight
tensors differ after one resumed epoch with two persistent workers). With non-persistent
workers every epoch also repeats the previous epoch's augmentations.

Here the random state is a function of the sample's place in the stream instead:

* :class:`SeededSampler` wraps the configured sampler and yields :class:`SeededIndex` values,
  ints that carry ``seed = hash(base seed, epoch, rank, position in the epoch)``;
* :class:`SeededDataset` wraps the training dataset and, before loading a sample, seeds
  Python's ``random``, NumPy's global generator and torch's from that seed.

A sample's augmentation is then the same whichever worker loads it, for any ``num_workers``,
persistent or not, in a resumed run and in DDP (the rank is part of the hash, so ranks do
not repeat each other). Epoch-based loops resume at epoch boundaries (``set_epoch``);
iteration-based loops replay the sampler from the start and skip the trained batches, so the
positions line up too. :func:`seeded_train_dataloader` applies both wrappers to a
``train_dataloader`` config; ``build_runner`` does this unless the config sets
``per_sample_seeding = False``.

With ``num_workers=0`` the main process loads the data; its own generators (dropout, ...)
are saved before and restored after each sample, so the model's randomness is untouched.
"""
from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Dataset, Sampler, get_worker_info

from toolbox.registry import DATA_SAMPLERS, DATASETS


class SeededIndex(int):
    """A dataset index carrying the seed of that sample's augmentation (``.seed``, uint32)."""

    seed: int

    def __new__(cls, index: int, seed: int):
        obj = super().__new__(cls, index)
        obj.seed = seed
        return obj

    def __reduce__(self):  # sent to the workers through a pickle
        return SeededIndex, (int(self), self.seed)


def sample_seed(base_seed: int, epoch: int, rank: int, position: int) -> int:
    """The uint32 seed of the ``position``-th sample drawn by ``rank`` in ``epoch``."""
    return int(np.random.SeedSequence([base_seed, epoch, rank, position]).generate_state(1)[0])


@DATA_SAMPLERS.register_module()
class SeededSampler(Sampler):
    """Yield the wrapped sampler's indices as :class:`SeededIndex` (module docstring).

    Args:
        sampler: config of the wrapped sampler (built with ``dataset`` and ``seed`` like any
            sampler) or a sampler.
        dataset: the dataset; a :class:`SeededDataset` is unwrapped for the inner sampler.
        seed: base seed; ``None`` draws one and synchronises it across ranks, as mmengine's
            samplers do.
    """

    def __init__(self, sampler: dict | Sampler, dataset, seed: int | None = None):
        inner_dataset = dataset.dataset if isinstance(dataset, SeededDataset) else dataset
        self.sampler = DATA_SAMPLERS.build(
            sampler, default_args=dict(dataset=inner_dataset, seed=seed)) \
            if isinstance(sampler, dict) else sampler
        self.seed = sync_random_seed() if seed is None else seed
        self.rank = get_dist_info()[0]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[SeededIndex]:
        for position, index in enumerate(self.sampler):
            yield SeededIndex(index, sample_seed(self.seed, self.epoch, self.rank, position))

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name):  # e.g. the inner sampler's state for resuming
        if name == 'sampler':
            raise AttributeError(name)
        return getattr(self.sampler, name)


@DATASETS.register_module()
class SeededDataset(Dataset):
    """Seed the random generators from a :class:`SeededIndex` before loading each sample.

    Every other attribute (``metainfo``, ``class_counts``, ``get_data_info``, ...) is the
    wrapped dataset's. A plain ``int`` index loads without seeding.

    Args:
        dataset: config of the wrapped dataset, or a dataset.
    """

    def __init__(self, dataset: dict | Dataset):
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset

    def full_init(self) -> None:
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):
        if name == 'dataset':
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index):
        seed = getattr(index, 'seed', None)
        if seed is None:
            return self.dataset[index]
        if get_worker_info() is not None:  # a worker process: its generators are its own
            _seed_all(seed)
            return self.dataset[int(index)]
        saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            _seed_all(seed)
            return self.dataset[int(index)]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def seeded_train_dataloader(dataloader_cfg: dict) -> dict:
    """``train_dataloader`` config with its dataset and sampler wrapped for per-sample seeding
    (unchanged if already wrapped, or if it gives built objects instead of configs)."""
    dataset, sampler = dataloader_cfg.get('dataset'), dataloader_cfg.get('sampler')
    if not isinstance(dataset, dict) or not isinstance(sampler, dict) \
            or dataset.get('type') in ('SeededDataset', SeededDataset):
        return dataloader_cfg
    out = dict(dataloader_cfg)
    out['dataset'] = dict(type='SeededDataset', dataset=dataset)
    out['sampler'] = dict(type='SeededSampler', sampler=sampler)
    return out
