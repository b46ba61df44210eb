"""Class statistics of what a training loader draws, through dataset wrappers.

The toolbox's datasets count their classes themselves (``class_counts()``, cached, see
:class:`~toolbox.datasets.DetectionDataset` and :class:`~toolbox.datasets.BaseSegDataset`).
:func:`dataset_class_counts` extends that to mmengine's wrappers, counting what one epoch over
the wrapper yields, repeats included:

* ``ConcatDataset`` (and torch's): the element-wise sum of its parts' counts (VOC07+12);
* ``RepeatDataset``: every image ``times`` times;
* ``ClassBalancedDataset`` (repeat factor sampling, LVIS): every image as many times as its
  index appears in ``repeat_indices``.

Repeats are counted because the class-frequency-aware losses model the label distribution the
network is *trained* on: Balanced Softmax adds ``log(n_c)`` to compensate exactly the prior of
the training stream. If an oversampling wrapper has already flattened the tail, the original
counts would compensate a second time and over-boost the rare classes; a uniform repeat
(``RepeatDataset``) multiplies every count by the same factor and changes nothing.
"""
from __future__ import annotations

import inspect

import numpy as np
from mmengine.dataset import ClassBalancedDataset, RepeatDataset
from torch.utils.data import ConcatDataset

from .seeding import SeededDataset


def check_repeats(repeats, num_images: int, owner: str) -> np.ndarray:
    """``repeats`` as a (num_images,) int64 array of non-negative draw counts, or a clear
    ``ValueError`` naming ``owner``."""
    repeats = np.asarray(repeats)
    if repeats.shape != (num_images,):
        raise ValueError(f'{owner}.class_counts: repeats must have shape ({num_images},), one '
                         f'count per image, got {repeats.shape}')
    if repeats.size and (repeats.min() < 0 or not np.array_equal(repeats, np.round(repeats))):
        raise ValueError(f'{owner}.class_counts: repeats must be non-negative integers')
    return repeats.astype(np.int64)


def _leaves(dataset, repeats) -> list[tuple[object, np.ndarray | None]]:
    """The datasets under the wrappers, each with the number of times an epoch over
    ``dataset`` draws each of its images (None: once each)."""
    if isinstance(dataset, SeededDataset):  # per-sample seeding changes nothing drawn
        return _leaves(dataset.dataset, repeats)
    if hasattr(dataset, 'full_init'):
        dataset.full_init()  # wrappers build their index maps here; a no-op when done
    if isinstance(dataset, ConcatDataset):
        leaves, start = [], 0
        for part in dataset.datasets:
            stop = start + len(part)
            leaves += _leaves(part, None if repeats is None else repeats[start:stop])
            start = stop
        return leaves
    if isinstance(dataset, RepeatDataset):
        inner_len = len(dataset.dataset)
        inner = np.full(inner_len, dataset.times, np.int64) if repeats is None else \
            repeats.reshape(dataset.times, inner_len).sum(0)  # index i draws image i % len
        return _leaves(dataset.dataset, inner)
    if isinstance(dataset, ClassBalancedDataset):
        inner = np.bincount(np.asarray(dataset.repeat_indices, np.int64), weights=repeats,
                            minlength=len(dataset.dataset))
        return _leaves(dataset.dataset, inner.astype(np.int64))
    return [(dataset, repeats)]


def _classes(dataset):
    classes = getattr(dataset, 'metainfo', {}).get('classes')
    return None if classes is None else tuple(classes)


def _leaf_counts(dataset, repeats) -> dict:
    if repeats is None:
        return dataset.class_counts()
    if repeats.size and (repeats == repeats[0]).all():  # uniform: scale the cached counts
        return {key: value * int(repeats[0]) for key, value in dataset.class_counts().items()}
    if 'repeats' not in inspect.signature(dataset.class_counts).parameters:
        raise TypeError(f'{type(dataset).__name__}.class_counts() takes no repeats, which a '
                        f'ClassBalancedDataset around it needs (images drawn unevenly)')
    return dataset.class_counts(repeats=repeats)


def check_class_counts_support(dataset) -> list[tuple[object, np.ndarray | None]]:
    """Check, without counting, that :func:`dataset_class_counts` can count ``dataset``:
    every dataset under the wrappers has ``class_counts()`` and they share one class list.

    Returns the ``(dataset, repeats)`` leaves. Raises ``TypeError`` naming the dataset class
    that has no ``class_counts()`` and ``ValueError`` naming two parts whose
    ``metainfo['classes']`` differ (their counts cannot be added).
    """
    leaves = _leaves(dataset, None)
    for leaf, _ in leaves:
        if not callable(getattr(leaf, 'class_counts', None)):
            inside = '' if leaf is dataset else f' (inside {type(dataset).__name__})'
            raise TypeError(f'the dataset {type(leaf).__name__}{inside} has no class_counts(), '
                            f'so its class statistics are unknown')
    first = leaves[0][0]
    for leaf, _ in leaves[1:]:
        if _classes(leaf) != _classes(first):
            raise ValueError(f'{type(dataset).__name__}: parts with different class lists cannot '
                             f'be counted together: {type(first).__name__} has '
                             f'{_classes(first)}, {type(leaf).__name__} has {_classes(leaf)}')
    return leaves


def dataset_class_counts(dataset) -> dict:
    """Class statistics of one epoch over ``dataset``, through wrappers (module docstring).

    Returns the dict of the underlying datasets' ``class_counts()`` (e.g.
    ``instance_counts`` (C,), ``image_counts`` (C,), ``num_images``), summed over the parts of a
    concatenation and weighted by the wrappers' repeats; ``num_images`` is then the number of
    images drawn per epoch, ``len(dataset)``. A plain dataset gives its own (cached) dict.
    Errors: see :func:`check_class_counts_support`; parts whose counts have different keys
    (a detection and a segmentation dataset) raise ``ValueError``.
    """
    leaves = check_class_counts_support(dataset)
    if len(leaves) == 1:
        return _leaf_counts(*leaves[0])
    counts = [_leaf_counts(leaf, repeats) for leaf, repeats in leaves]
    for (leaf, _), part in zip(leaves[1:], counts[1:]):
        if part.keys() != counts[0].keys():
            raise ValueError(f'{type(dataset).__name__}: {type(leaves[0][0]).__name__} counts '
                             f'{sorted(counts[0])}, {type(leaf).__name__} counts '
                             f'{sorted(part)}; they cannot be added')
    return {key: sum(part[key] for part in counts) for key in counts[0]}
