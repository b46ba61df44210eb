"""Validation of a COCO detection json: every problem of a file in one pass, each with its
file, record and field (``tools/check_dataset.py ANN.json``; the converters' output is checked
with it in the tests)."""
from __future__ import annotations

import json
import os.path as osp

import numpy as np

from toolbox.structures import xywh_to_xyxy

from .checks import DataProblem, probe_image
from .detection import _is_number

def _is_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def validate_coco(coco, img_root: str | None = None, *, decode: bool = False,
                  box_tolerance: float = 1.0) -> list[DataProblem]:
    """Every problem of a COCO detection file, in one pass (nothing stops at the first).

    Args:
        coco: a path to the json, or the loaded dict.
        img_root: where ``file_name`` is relative to; given, each image must exist, open (and
            decode completely with ``decode``) and have its declared size.

    Returns:
        :class:`~toolbox.datasets.checks.DataProblem` s naming the file and the field
        (``images[3].width``, ``annotations[12].bbox`` ...). Checked: top-level lists;
        categories (integer ``id``, unique; ``name`` a unique string); images (``id`` unique,
        ``file_name`` a string, used once, ``width`` / ``height`` positive integers); annotations
        (``id`` present and unique, ``image_id`` and ``category_id`` known, ``bbox`` four finite
        numbers with positive width and height inside the image within ``box_tolerance``,
        ``iscrowd`` 0 or 1, ``area`` a non-negative number, ``segmentation`` polygons of at
        least three points or an RLE dict). An empty list means the file is valid.
    """
    file = coco if isinstance(coco, str) else '<coco dict>'
    problems = []

    def problem(where, message, image=''):
        problems.append(DataProblem(file, where, message, image or file))

    if isinstance(coco, str):
        try:
            with open(coco, encoding='utf-8') as f:
                coco = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            problem('json', f'cannot be read as json ({exc})')
            return problems
    if not isinstance(coco, dict):
        problem('json', f'the top level must be an object, got {type(coco).__name__}')
        return problems
    sections = {}
    for key in ('images', 'annotations', 'categories'):
        value = coco.get(key, [] if key == 'annotations' else None)
        if not isinstance(value, list):
            problem(key, 'missing' if value is None else f'must be a list, got '
                    f'{type(value).__name__}')
            value = []
        sections[key] = value

    cat_ids, cat_names = set(), set()
    for k, cat in enumerate(sections['categories']):
        where = f'categories[{k}]'
        if not isinstance(cat, dict):
            problem(where, 'must be an object')
            continue
        cat_id, name = cat.get('id'), cat.get('name')
        if not isinstance(cat_id, int) or isinstance(cat_id, bool):
            problem(f'{where}.id', f'must be an integer, got {cat_id!r}')
        elif cat_id in cat_ids:
            problem(f'{where}.id', f'{cat_id} is used by an earlier category')
        else:
            cat_ids.add(cat_id)
        if not isinstance(name, str) or not name:
            problem(f'{where}.name', f'must be a non-empty string, got {name!r}')
        elif name in cat_names:
            problem(f'{where}.name', f'{name!r} is used by an earlier category')
        else:
            cat_names.add(name)

    size_of, file_names = {}, set()
    for k, img in enumerate(sections['images']):
        where = f'images[{k}]'
        if not isinstance(img, dict):
            problem(where, 'must be an object')
            continue
        image_id, file_name = img.get('id'), img.get('file_name')
        width, height = img.get('width'), img.get('height')
        valid_size = all(_is_number(v) and v > 0 and v == int(v) for v in (width, height))
        if not _is_id(image_id):
            problem(f'{where}.id', f'must be an integer or a string, got {image_id!r}')
        elif image_id in size_of:
            problem(f'{where}.id', f'{image_id!r} is used by an earlier image')
        else:
            size_of[image_id] = (width, height) if valid_size else None
        for axis, value in (('width', width), ('height', height)):
            if not (_is_number(value) and value > 0 and value == int(value)):
                problem(f'{where}.{axis}', f'must be a positive integer, got {value!r}')
        if not isinstance(file_name, str) or not file_name:
            problem(f'{where}.file_name', f'must be a non-empty string, got {file_name!r}')
            continue
        if file_name in file_names:
            problem(f'{where}.file_name', f'{file_name!r} is used by an earlier image')
        file_names.add(file_name)
        if img_root is not None:
            img_path = osp.join(img_root, file_name)
            probe = probe_image(img_path, decode)
            if 'error' in probe:
                problem(f'{where}.file_name', f'{img_path}: {probe["error"]}', img_path)
            elif valid_size and (probe['width'], probe['height']) != (width, height):
                problem(f'{where}.width/height', f'declares {width}x{height}, the image '
                        f'{img_path} is {probe["width"]}x{probe["height"]}', img_path)

    ann_ids = set()
    boxes, box_sizes, box_where = [], [], []
    for k, ann in enumerate(sections['annotations']):
        where = f'annotations[{k}]'
        if not isinstance(ann, dict):
            problem(where, 'must be an object')
            continue
        ann_id = ann.get('id')
        if not _is_id(ann_id):
            problem(f'{where}.id', f'must be an integer or a string, got {ann_id!r}')
        elif ann_id in ann_ids:
            problem(f'{where}.id', f'{ann_id!r} is used by an earlier annotation')
        else:
            ann_ids.add(ann_id)
        image_id, cat_id = ann.get('image_id'), ann.get('category_id')
        if not _is_id(image_id) or image_id not in size_of:
            problem(f'{where}.image_id', f'{image_id!r} is not the id of an image')
        if not (isinstance(cat_id, int) and not isinstance(cat_id, bool) and cat_id in cat_ids):
            problem(f'{where}.category_id', f'{cat_id!r} is not the id of a category')
        if ann.get('iscrowd', 0) not in (0, 1) or isinstance(ann.get('iscrowd'), bool):
            problem(f'{where}.iscrowd', f"must be 0 or 1, got {ann.get('iscrowd')!r}")
        if 'area' in ann and not (_is_number(ann['area']) and ann['area'] >= 0):
            problem(f'{where}.area', f"must be a non-negative number, got {ann['area']!r}")
        segmentation = ann.get('segmentation')
        if segmentation is not None and not (
                (isinstance(segmentation, dict) and {'size', 'counts'} <= set(segmentation)) or
                (isinstance(segmentation, list) and all(
                    isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and
                    all(_is_number(v) for v in p) for p in segmentation))):
            problem(f'{where}.segmentation', 'must be polygons (lists of at least 3 x, y '
                    'pairs) or an RLE dict with size and counts')
        bbox = ann.get('bbox')
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            problem(f'{where}.bbox', f'must be 4 finite numbers [x, y, width, height], got '
                    f'{bbox!r}')
            continue
        boxes.append(bbox)
        box_sizes.append(size_of.get(image_id) if _is_id(image_id) else None)
        box_where.append(f'{where}.bbox')

    xywh = np.array(boxes, np.float64).reshape(-1, 4)
    known = np.array([s is not None for s in box_sizes], bool)
    sizes = np.array([s if s is not None else (np.inf, np.inf) for s in box_sizes],
                     np.float64).reshape(-1, 2)
    xyxy = xywh_to_xyxy(xywh)
    tol = float(box_tolerance)
    flat = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
    outside = known & ((xyxy[:, 0] < -tol) | (xyxy[:, 1] < -tol) |
                       (xyxy[:, 2] > sizes[:, 0] + tol) | (xyxy[:, 3] > sizes[:, 1] + tol))
    for k in np.flatnonzero(flat | outside):
        message = (f'width and height must be positive, got {xywh[k].tolist()}' if flat[k] else
                   f'box {xywh[k].tolist()} (xywh) lies outside the {sizes[k, 0]:g}x'
                   f'{sizes[k, 1]:g} image')
        problem(box_where[k], message)
    return problems
