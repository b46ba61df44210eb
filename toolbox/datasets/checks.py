"""The data pre-flight check: every problem of a dataset found before training, with file and field.

A dataset built with ``data_check`` (the default; ``data_check=False`` turns it off) checks
its samples once, when it is initialised, before a sampler ever reaches them:

* every image opens (missing, empty, not an image), is not larger than ``max_image_pixels``
  (an 8000 x 8000 image would otherwise go into the batch at full size and fail in the
  allocator without a name), and, with ``decode=True``, decodes completely (a truncated JPEG
  otherwise trains as mostly grey fill, with only libjpeg's unnamed warning);
* detection: the size an annotation declares equals the image's; boxes lie inside the image
  (``box_tolerance`` pixels of slack); labels are in ``[0, num_classes)``;
* segmentation: the class map opens, has the image's size, and holds only class indices
  ``0..C-1`` (after ``label_map``) or ``ignore_index``.

Problems raise one :class:`DataCheckError` listing each with its file and field
(``on_error='raise'``, the default), or, with ``on_error='skip'``, the images concerned are
left out and counted in a warning. The per-file results of opening and decoding are cached
(``$TOOLBOX_CACHE_DIR``, default ``~/.cache/toolbox/data_check``) keyed by path, size and
modification time, so a second run only re-reads what changed. ``tools/check_dataset.py
CONFIG`` runs the same check and prints the report.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import warnings
from dataclasses import dataclass

import numpy as np
from mmengine.logging import print_log

DEFAULTS = dict(decode=True, max_image_pixels=40_000_000, on_error='raise', box_tolerance=1.0,
                cache=True)


@dataclass(frozen=True)
class DataProblem:
    """One problem: the file it is in, the field (or ``'image'`` / ``'seg_map'`` for the file
    itself), what is wrong, and the image (``img_path``) it concerns."""
    file: str
    field: str
    message: str
    image: str

    def __str__(self) -> str:
        return f'{self.file}: {self.field}: {self.message}'


class DataCheckError(ValueError):
    """The pre-flight check found problems; ``problems`` lists every one."""

    def __init__(self, owner: str, problems: list[DataProblem], limit: int = 30,
                 every_image: bool = False):
        self.problems = problems
        lines = [f'  {p}' for p in problems[:limit]]
        if len(problems) > limit:
            lines.append(f'  ... and {len(problems) - limit} more')
        images = len({p.image for p in problems})
        advice = ('every image has a problem, so no image is left to skip' if every_image else
                  "or set data_check=dict(on_error='skip') on the dataset to leave these "
                  'images out (counted)')
        super().__init__(
            f'{owner}: the data check found {len(problems)} problem(s) in {images} image(s):\n'
            + '\n'.join(lines) + f'\nFix the data, {advice}, or set data_check=False to skip '
            'the check (see docs/reliability.md).')


def resolve_data_check(data_check) -> dict | None:
    """``True`` / ``None`` / ``False`` / partial dict -> full options dict or None (off)."""
    if data_check is False:
        return None
    options = dict(DEFAULTS)
    if isinstance(data_check, dict):
        unknown = set(data_check) - set(DEFAULTS)
        if unknown:
            raise TypeError(f'data_check got unknown keys {sorted(unknown)}; accepted: '
                            f'{sorted(DEFAULTS)}')
        options.update(data_check)
    elif data_check not in (True, None):
        raise TypeError(f'data_check must be True, False or a dict, got {data_check!r}')
    if options['on_error'] not in ('raise', 'skip'):
        raise ValueError(f"data_check on_error must be 'raise' or 'skip', got "
                         f"{options['on_error']!r}")
    return options


class _ProbeCache:
    """``{path: [size, mtime_ns, decoded, result]}`` in one json per dataset."""

    def __init__(self, key: str, enabled: bool):
        root = os.environ.get('TOOLBOX_CACHE_DIR', osp.join(osp.expanduser('~'), '.cache',
                                                            'toolbox'))
        self.path = osp.join(root, 'data_check',
                             hashlib.sha1(key.encode()).hexdigest()[:16] + '.json')
        self.enabled, self.entries, self.dirty = enabled, {}, False
        if enabled and osp.isfile(self.path):
            try:
                with open(self.path) as f:
                    self.entries = json.load(f)
            except (OSError, ValueError):
                self.entries = {}

    def get(self, path: str, decode: bool, probe):
        try:
            stat = os.stat(path)
            stamp = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            stamp = None
        entry = self.entries.get(path)
        if stamp is not None and entry is not None and entry[:2] == stamp and \
                (entry[2] or not decode):
            return entry[3]
        result = probe(path, decode)
        if stamp is not None and self.enabled:
            self.entries[path] = stamp + [decode, result]
            self.dirty = True
        return result

    def save(self) -> None:
        if not (self.enabled and self.dirty):
            return
        try:
            os.makedirs(osp.dirname(self.path), exist_ok=True)
            tmp = f'{self.path}.{os.getpid()}.tmp'
            with open(tmp, 'w') as f:
                json.dump(self.entries, f)
            os.replace(tmp, self.path)
        except OSError as exc:  # a read-only home directory must not stop training
            print_log(f'data check: cannot write the cache {self.path} ({exc})',
                      logger='current', level=30)


def probe_image(path: str, decode: bool) -> dict:
    """``dict(width, height)`` of an image file, or ``dict(error=...)``; with ``decode`` the
    whole file is decoded (finds truncated and corrupt files)."""
    from PIL import Image, UnidentifiedImageError
    if not osp.isfile(path):
        return dict(error='file does not exist')
    if osp.getsize(path) == 0:
        return dict(error='file is empty')
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as img:
                    width, height = img.size
                    if decode:
                        img.load()
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except UnidentifiedImageError:
        return dict(error='not an image file (cannot identify its format)')
    except (OSError, SyntaxError, ValueError) as exc:  # PIL's errors for broken files
        return dict(error=f'cannot be decoded: truncated or corrupt ({exc})')
    return dict(width=width, height=height)


def probe_seg_map(path: str, decode: bool) -> dict:
    """``dict(width, height, values)`` of a class map (``values``: sorted distinct values,
    only with ``decode``), or ``dict(error=...)``."""
    result = probe_image(path, decode)
    if 'error' in result or not decode:
        return result
    import cv2
    seg = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if seg is None:
        return dict(error='cannot be read as a class map')
    if seg.ndim == 3:
        return dict(error=f'has {seg.shape[2]} channels; a class map has one')
    return dict(result, values=np.unique(seg).astype(int).tolist())


def check_samples(data_list: list[dict], owner: str, num_classes: int, options: dict,
                  ignore_index: int = 255, cache_key: str = '') -> list[DataProblem]:
    """Every problem of ``data_list`` (a dataset's ``data_info`` dicts; see the detection and
    segmentation dataset docstrings). ``owner`` names the dataset in messages."""
    cache = _ProbeCache(cache_key or owner, options['cache'])
    decode, max_pixels = options['decode'], options['max_image_pixels']
    tol = float(options['box_tolerance'])
    problems = []
    for info in data_list:
        img_path = info['img_path']
        ann_file = info.get('ann_path', owner)
        ann_where = info.get('ann_where', '')
        image = cache.get(img_path, decode, probe_image)
        if 'error' in image:
            problems.append(DataProblem(img_path, 'image', image['error'], img_path))
            continue
        width, height = image['width'], image['height']
        if width * height > max_pixels:
            problems.append(DataProblem(img_path, 'image', f'{width}x{height} = '
                                        f'{width * height} pixels is over max_image_pixels '
                                        f'{max_pixels}', img_path))
            continue
        if 'width' in info and (info['width'], info['height']) != (width, height):
            problems.append(DataProblem(ann_file, f'{ann_where}width/height'.lstrip('.'),
                                        f"declares {info['width']}x{info['height']}, the "
                                        f'image {img_path} is {width}x{height}', img_path))
        instances = info.get('instances', [])
        if instances:
            boxes = np.array([i['bbox'] for i in instances], np.float64).reshape(-1, 4)
            labels = np.array([i['bbox_label'] for i in instances], np.int64)
            outside = (boxes[:, 0] < -tol) | (boxes[:, 1] < -tol) | \
                (boxes[:, 2] > width + tol) | (boxes[:, 3] > height + tol)
            for k in np.flatnonzero(outside):
                field = f'{instances[k].get("where", f"instances[{k}]")}.bbox'
                problems.append(DataProblem(ann_file, field, f'box {boxes[k].tolist()} (xyxy) '
                                            f'lies outside the {width}x{height} image',
                                            img_path))
            for k in np.flatnonzero((labels < 0) | (labels >= num_classes)):
                field = f'{instances[k].get("where", f"instances[{k}]")}.label'
                problems.append(DataProblem(ann_file, field, f'label {labels[k]} is not in '
                                            f'[0, {num_classes})', img_path))
        seg_path = info.get('seg_map_path')
        if seg_path is not None:
            seg = cache.get(seg_path, decode, probe_seg_map)
            if 'error' in seg:
                problems.append(DataProblem(seg_path, 'seg_map', seg['error'], img_path))
                continue
            if (seg['width'], seg['height']) != (width, height):
                problems.append(DataProblem(seg_path, 'seg_map', f"is {seg['width']}x"
                                            f"{seg['height']}, the image {img_path} is "
                                            f'{width}x{height}', img_path))
            label_map = info.get('label_map') or {}
            values = {label_map.get(v, v) for v in seg.get('values', [])}
            bad = sorted(v for v in values if not (0 <= v < num_classes or v == ignore_index))
            if bad:
                problems.append(DataProblem(seg_path, 'seg_map', f'values {bad} are neither '
                                            f'classes 0..{num_classes - 1} nor ignore_index '
                                            f'{ignore_index}', img_path))
    cache.save()
    return problems


def apply_data_check(dataset, data_list: list[dict], num_classes: int,
                     ignore_index: int = 255) -> list[dict]:
    """Run the dataset's ``data_check`` on ``data_list``: raise :class:`DataCheckError`, or
    return the list without the images that have problems (``on_error='skip'``)."""
    options = dataset.data_check
    if options is None or not data_list:
        return data_list
    owner = f'{type(dataset).__name__}({dataset.ann_file or dataset.data_prefix})'
    key = f'{dataset.ann_file}|{dataset.data_root}|{sorted(dataset.data_prefix.items())}'
    problems = check_samples(data_list, owner, num_classes, options, ignore_index, key)
    if not problems:
        return data_list
    bad = {p.image for p in problems}
    if options['on_error'] == 'raise' or len(bad) == len(data_list):
        raise DataCheckError(owner, problems, every_image=len(bad) == len(data_list))
    print_log(f'{owner}: data check: {len(bad)} of {len(data_list)} images left out '
              f"(on_error='skip'), {len(problems)} problem(s); first: {problems[0]}",
              logger='current', level=30)
    dataset.data_check_problems = problems
    return [info for info in data_list if info['img_path'] not in bad]
