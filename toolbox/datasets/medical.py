"""Medical Segmentation Decathlon (MSD) datasets: ``dataset.json`` + NIfTI volumes.

Layout under ``data_root`` (e.g. ``data/hippocampus``, MSD Task04)::

    dataset.json    {"labels": {"0": "background", "1": ...}, "modality": {...},
                     "training": [{"image": "./imagesTr/x.nii.gz",
                                   "label": "./labelsTr/x.nii.gz"}, ...],
                     "test": ["./imagesTs/y.nii.gz", ...]}
    imagesTr/ labelsTr/ imagesTs/

Every sample becomes a ``data_info`` dict::

    dict(img_id, img_path, seg_map_path, case_index)

``img_id`` is the file name without ``.nii.gz`` / ``.nii``; ``seg_map_path`` is ``None`` for
the unlabelled ``test`` split; ``case_index`` is the position in dataset.json's list. The
pipeline (:mod:`toolbox.datasets.transforms.volume`) loads them with ``LoadVolume`` and
``LoadVolumeAnnotation``.

Splits. MSD publishes labels only for its ``training`` list (its ``test`` cases are
unlabelled), so ``train`` / ``val`` are a deterministic held-out split of ``training``:
``perm = numpy.random.default_rng(split_seed).permutation(N)``; the first
``round(val_fraction * N)`` entries of ``perm`` are ``val``, the others ``train``; each split
keeps dataset.json's order. The two are disjoint, together cover all N cases, and depend only
on (N, ``val_fraction``, ``split_seed``), not on the global RNG or the machine (203
hippocampus cases, defaults: 162 train, 41 val). ``all`` is every training case, ``test``
dataset.json's ``test`` list (no labels).

A malformed dataset.json raises :class:`~toolbox.datasets.AnnotationError` naming the file and
the field; missing image or label files raise ``FileNotFoundError`` listing them with their
dataset.json field.
"""
from __future__ import annotations

import json
import os.path as osp

import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from toolbox.registry import DATASETS

from .detection import AnnotationError

SPLITS = ('train', 'val', 'all', 'test')


def _case_id(path: str) -> str:
    name = osp.basename(path)
    for suffix in ('.nii.gz', '.nii'):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return osp.splitext(name)[0]


def parse_decathlon_json(path: str) -> dict:
    """Read and validate an MSD ``dataset.json``.

    Returns:
        ``dict(classes=(names in label order), modality=dict, name=str,
        training=[(image, label), ...], test=[image, ...] or None)``, paths as written in the
        file. ``test`` is ``None`` when the file has no ``test`` field.

    Raises ``FileNotFoundError`` for a missing file and :class:`AnnotationError` (naming the
    file and the field) for invalid json, missing fields, labels whose keys are not the
    integers 0..C-1, or entries without string ``image`` / ``label`` paths.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'DecathlonDataset: {path} does not exist (expected the MSD '
                                f'dataset.json under data_root)')
    try:
        with open(path, encoding='utf-8') as f:
            content = json.load(f)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f'{path}: not valid json ({exc})') from exc
    if not isinstance(content, dict):
        raise AnnotationError(f'{path}: the top level must be an object, got '
                              f'{type(content).__name__}')
    for field in ('labels', 'training'):
        if field not in content:
            raise AnnotationError(f'{path}: missing field {field!r}')

    labels = content['labels']
    if not isinstance(labels, dict) or not labels:
        raise AnnotationError(f'{path}: field labels must be a non-empty object '
                              f'{{"0": "background", ...}}')
    try:
        keyed = {int(k): v for k, v in labels.items()}
    except ValueError as exc:
        raise AnnotationError(f'{path}: field labels: keys must be integers, got '
                              f'{sorted(labels)}') from exc
    if sorted(keyed) != list(range(len(keyed))):
        raise AnnotationError(f'{path}: field labels: keys must be 0..{len(keyed) - 1} '
                              f'(contiguous class indices), got {sorted(keyed)}')
    for k, v in keyed.items():
        if not isinstance(v, str):
            raise AnnotationError(f'{path}: field labels[{k!r}] must be a class name string, '
                                  f'got {v!r}')
    classes = tuple(keyed[k] for k in range(len(keyed)))

    training = content['training']
    if not isinstance(training, list):
        raise AnnotationError(f'{path}: field training must be a list')
    pairs = []
    for k, entry in enumerate(training):
        for field in ('image', 'label'):
            if not isinstance(entry, dict) or not isinstance(entry.get(field), str):
                raise AnnotationError(f'{path}: training[{k}]: field {field!r} must be a path '
                                      f'string, got entry {entry!r}')
        pairs.append((entry['image'], entry['label']))
    declared = content.get('numTraining')
    if isinstance(declared, int) and declared != len(pairs):
        print_log(f'{path}: numTraining is {declared} but training lists {len(pairs)} cases; '
                  f'using the list', logger='current', level=30)

    test = content.get('test')
    if test is not None:
        if not isinstance(test, list):
            raise AnnotationError(f'{path}: field test must be a list')
        images = []
        for k, entry in enumerate(test):
            image = entry.get('image') if isinstance(entry, dict) else entry
            if not isinstance(image, str):
                raise AnnotationError(f'{path}: test[{k}] must be a path string (or an object '
                                      f'with field image), got {entry!r}')
            images.append(image)
        test = images
    modality = content.get('modality', {})
    return dict(classes=classes, modality=modality if isinstance(modality, dict) else {},
                name=str(content.get('name', '')), training=pairs, test=test)


def split_indices(num_cases: int, val_fraction: float = 0.2,
                  split_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The deterministic held-out split of ``num_cases`` training cases (module docstring).

    Returns:
        ``(train, val)``: sorted int64 index arrays, disjoint, together ``0..num_cases-1``;
        ``len(val) == round(val_fraction * num_cases)``.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f'val_fraction must be in [0, 1), got {val_fraction}')
    perm = np.random.default_rng(split_seed).permutation(num_cases)
    num_val = int(round(val_fraction * num_cases))
    return np.sort(perm[num_val:]), np.sort(perm[:num_val])


@DATASETS.register_module()
class DecathlonDataset(BaseDataset):
    """An MSD task (``dataset.json`` + ``imagesTr`` / ``labelsTr`` / ``imagesTs``) as volume
    samples; see the module docstring for the splits and the ``data_info`` fields.

    ``metainfo`` gets ``classes`` (dataset.json ``labels``, index order; background included,
    class 0) and ``modality`` from the file; a ``metainfo`` argument may override them but
    must keep the number of classes. The task name is ``self.decathlon['name']``.

    Args (besides mmengine ``BaseDataset``'s; ``data_root`` is required):
        ann_file: the json, relative to ``data_root`` (default ``dataset.json``).
        split: ``'train'``, ``'val'``, ``'all'`` (train + val) or ``'test'`` (unlabelled).
        val_fraction: share of the training list held out as ``val``, in [0, 1).
        split_seed: seed of the split permutation (not the global RNG).
        check_files: verify at construction that every listed file exists.
    """

    METAINFO: dict = dict(classes=())

    def __init__(self, data_root: str, ann_file: str = 'dataset.json', split: str = 'train',
                 val_fraction: float = 0.2, split_seed: int = 0, check_files: bool = True,
                 metainfo: dict | None = None, **kwargs):
        if split not in SPLITS:
            raise ValueError(f'DecathlonDataset: split must be one of {SPLITS}, got {split!r}')
        if not 0 <= val_fraction < 1:
            raise ValueError(f'DecathlonDataset: val_fraction must be in [0, 1), got '
                             f'{val_fraction}')
        self.split = split
        self.val_fraction = float(val_fraction)
        self.split_seed = int(split_seed)
        self.check_files = check_files
        json_path = ann_file if osp.isabs(ann_file) else osp.join(data_root, ann_file)
        self.decathlon = parse_decathlon_json(json_path)
        self.json_path = json_path
        meta = dict(classes=self.decathlon['classes'], modality=self.decathlon['modality'])
        if metainfo:
            classes = metainfo.get('classes')
            if classes is not None and len(classes) != len(meta['classes']):
                raise ValueError(f"DecathlonDataset: metainfo classes {tuple(classes)} has "
                                 f"{len(classes)} entries but {json_path} field labels has "
                                 f"{len(meta['classes'])}")
            meta.update(metainfo)
        super().__init__(data_root=data_root, ann_file=ann_file, metainfo=meta, **kwargs)

    def _path(self, relative: str) -> str:
        return osp.normpath(relative if osp.isabs(relative) else
                            osp.join(self.data_root, relative))

    def load_data_list(self) -> list[dict]:
        where = self.json_path
        if self.split == 'test':
            if self.decathlon['test'] is None:
                raise AnnotationError(f"{where}: missing field 'test' (split='test' lists the "
                                      f"unlabelled MSD test cases)")
            cases = [(k, self._path(img), None, f'test[{k}]')
                     for k, img in enumerate(self.decathlon['test'])]
        else:
            training = self.decathlon['training']
            if self.split == 'all':
                indices = np.arange(len(training))
            else:
                train, val = split_indices(len(training), self.val_fraction, self.split_seed)
                indices = train if self.split == 'train' else val
            cases = [(int(k), self._path(training[k][0]), self._path(training[k][1]),
                      f'training[{k}]') for k in indices]
        if not cases:
            raise ValueError(f"DecathlonDataset: split {self.split!r} of {where} is empty "
                             f"(val_fraction={self.val_fraction}, "
                             f"{len(self.decathlon['training'])} training cases)")
        if self.check_files:
            missing = [f'{field}.{key}: {path}' for _, img, seg, field in cases
                       for key, path in (('image', img), ('label', seg))
                       if path is not None and not osp.isfile(path)]
            if missing:
                shown = '\n  '.join(missing[:10])
                more = f'\n  ... and {len(missing) - 10} more' if len(missing) > 10 else ''
                raise FileNotFoundError(f'{where}: {len(missing)} listed file(s) do not exist '
                                        f'(split {self.split!r}):\n  {shown}{more}')
        return [dict(img_id=_case_id(img), img_path=img, seg_map_path=seg, case_index=k)
                for k, img, seg, _ in cases]
