"""Class-aware re-sampling of the training stream, selectable in config, DDP-aware, resumable.

* :class:`RepeatFactorSampler` (LVIS, Gupta et al. 2019): class c has image frequency f_c
  (fraction of training images containing it) and repeat factor ``r_c = max(1, sqrt(t / f_c))``;
  image I is repeated ``r_I = max_{c in I} r_c`` times per epoch (1 for an image without
  classes), the fractional part by a Bernoulli draw each epoch (detectron2's stochastic
  rounding), then shuffled.
* :class:`ClassBalancedSampler` (class-aware sampling, Shen et al. 2016): each draw picks a
  class uniformly among the classes present in the data, then an image containing it
  uniformly.

The classes of each image come from the dataset's ``get_cat_ids(idx)`` (detection: the labels
of its boxes; segmentation: the classes present in its map, read once with the cached
``class_counts()``).

Both behave like mmengine's ``DefaultSampler`` (``infinite=False``, for epoch-based loops) or
``InfiniteSampler`` (``infinite=True``, for iteration-based loops): the order of epoch e is a
function of ``(seed, e)`` only (``torch.Generator`` seeded with ``seed + e``), identical on every
rank; rank r takes every world-size-th index from position r, after the epoch is cycled up to a
multiple of the world size. Every epoch has the same length (``epoch_length``, default: the
expected repeated size for repeat factors, ``len(dataset)`` for class-balanced), so schedules
that count iterations per epoch stay valid. Exact resume: an epoch-based loop calls
``set_epoch`` and gets the same order; an iteration-based loop replays the stream from the
start and skips the trained batches; ``state_dict()`` / ``load_state_dict()`` hold
``(seed, epoch)``, all the state there is.

Use in a config::

    train_dataloader = dict(sampler=dict(type='RepeatFactorSampler', repeat_thr=1.0))
"""
from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Sized

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from toolbox.registry import DATA_SAMPLERS


def image_class_matrix(dataset, num_classes: int | None = None) -> np.ndarray:
    """(N, C) bool: image i contains class c, from ``dataset.get_cat_ids(i)``.

    ``num_classes`` defaults to ``len(dataset.metainfo['classes'])``. A dataset without
    ``get_cat_ids`` raises ``TypeError`` naming its class.
    """
    if not callable(getattr(dataset, 'get_cat_ids', None)):
        raise TypeError(f'{type(dataset).__name__} has no get_cat_ids(idx), which class-aware '
                        f'samplers need to know the classes of each image')
    if num_classes is None:
        num_classes = len(dataset.metainfo['classes'])
    cat_ids = [np.asarray(dataset.get_cat_ids(i), np.int64) for i in range(len(dataset))]
    rows = np.repeat(np.arange(len(cat_ids)), [len(c) for c in cat_ids])
    present = np.zeros((len(cat_ids), num_classes), dtype=bool)
    if rows.size:
        present[rows, np.concatenate(cat_ids)] = True
    return present


def repeat_factors(present: np.ndarray, repeat_thr: float) -> np.ndarray:
    """(N,) LVIS repeat factors ``r_I = max(1, max_{c in I} sqrt(t / f_c))`` of an (N, C)
    presence matrix; ``f_c`` is the fraction of the N images that contain class c."""
    num_images = max(present.shape[0], 1)
    freq = present.sum(0) / num_images
    with np.errstate(divide='ignore'):
        class_factor = np.maximum(1.0, np.sqrt(repeat_thr / freq))  # inf for absent classes
    image_factor = np.where(present, class_factor[None], 1.0)
    return image_factor.max(1) if present.shape[1] else np.ones(present.shape[0])


class _ClassAwareSampler(Sampler):
    """Epoch plumbing shared by the class-aware samplers (module docstring): subclasses
    implement :meth:`epoch_indices`."""

    def __init__(self, dataset: Sized, seed: int | None = None, infinite: bool = False,
                 epoch_length: int | None = None):
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.infinite = infinite
        self.epoch = 0
        self.present = image_class_matrix(dataset)
        length = self.default_epoch_length() if epoch_length is None else int(epoch_length)
        if length < 1:
            raise ValueError(f'{type(self).__name__}: epoch_length must be >= 1, got {length}')
        self.epoch_length = length  # draws per epoch, all ranks, before padding
        self.num_samples = math.ceil(length / self.world_size)
        self.total_size = self.num_samples * self.world_size

    def default_epoch_length(self) -> int:
        return len(self.dataset)

    @abc.abstractmethod
    def epoch_indices(self, generator: torch.Generator) -> np.ndarray:
        """The ``epoch_length`` dataset indices of one epoch, drawn with ``generator``."""

    def _all_ranks(self, epoch: int) -> np.ndarray:
        """(total_size,) indices of ``epoch`` for every rank (the same on all ranks): the
        first ``epoch_length`` are the epoch, cycled from its start up to a multiple of the
        world size."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        indices = np.resize(self.epoch_indices(generator), self.epoch_length)
        return np.resize(indices, self.total_size)

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        while True:
            yield from self._all_ranks(epoch)[self.rank::self.world_size].tolist()
            if not self.infinite:
                return
            epoch += 1

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict:
        return dict(seed=self.seed, epoch=self.epoch)

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch = int(state['seed']), int(state['epoch'])


@DATA_SAMPLERS.register_module()
class RepeatFactorSampler(_ClassAwareSampler):
    """LVIS repeat factor sampling (module docstring).

    Args:
        dataset: training dataset with ``get_cat_ids``.
        repeat_thr: t; classes with image frequency below t are oversampled (LVIS: 0.001).
        seed: sampler seed (the runner passes its seed; ``None`` draws one, synchronised over
            ranks).
        infinite: yield epoch after epoch (iteration-based loops) instead of one epoch.
        epoch_length: draws per epoch over all ranks; ``None``: ``round(sum_I r_I)``, the
            expected repeated size. Setting ``len(dataset)`` keeps the iteration budget of
            plain sampling and only changes which images are drawn.
    """

    def __init__(self, dataset: Sized, repeat_thr: float = 0.001, seed: int | None = None,
                 infinite: bool = False, epoch_length: int | None = None):
        self.repeat_thr = repeat_thr
        self._factors = None
        super().__init__(dataset, seed, infinite, epoch_length)

    @property
    def factors(self) -> np.ndarray:
        """(N,) repeat factor of each image."""
        if self._factors is None:
            self._factors = repeat_factors(self.present, self.repeat_thr)
        return self._factors

    def default_epoch_length(self) -> int:
        return max(int(round(self.factors.sum())), 1)

    def epoch_indices(self, generator: torch.Generator) -> np.ndarray:
        factors = torch.from_numpy(self.factors)
        whole = factors.floor()
        extra = torch.rand(len(factors), generator=generator, dtype=torch.float64) \
            < (factors - whole)
        repeats = (whole + extra).long()
        indices = torch.repeat_interleave(torch.arange(len(factors)), repeats)
        return indices[torch.randperm(len(indices), generator=generator)].numpy()


@DATA_SAMPLERS.register_module()
class ClassBalancedSampler(_ClassAwareSampler):
    """Class-aware sampling: a uniform class, then a uniform image containing it, per draw.

    Args:
        dataset, seed, infinite: as :class:`RepeatFactorSampler`.
        epoch_length: draws per epoch over all ranks; ``None``: ``len(dataset)``.
    """

    def __init__(self, dataset: Sized, seed: int | None = None, infinite: bool = False,
                 epoch_length: int | None = None):
        super().__init__(dataset, seed, infinite, epoch_length)
        class_idx, image_idx = np.nonzero(self.present.T)  # images grouped by class
        sizes = np.bincount(class_idx, minlength=self.present.shape[1])
        if not sizes.any():
            raise ValueError(f'ClassBalancedSampler: no image of {type(dataset).__name__} '
                             f'contains any class')
        self.classes = torch.from_numpy(np.flatnonzero(sizes))
        self.sizes = torch.from_numpy(sizes)
        self.offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)[:-1]]))
        self.members = torch.from_numpy(image_idx)

    def epoch_indices(self, generator: torch.Generator) -> np.ndarray:
        draws = self.epoch_length  # independent of the world size: ranks split one stream
        cls = self.classes[torch.randint(len(self.classes), (draws,), generator=generator)]
        pick = (torch.rand(draws, generator=generator, dtype=torch.float64)
                * self.sizes[cls]).long()
        return self.members[self.offsets[cls] + pick].numpy()
