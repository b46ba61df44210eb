"""Annotation converters to COCO json (Pascal VOC xml, labelme json, YOLO txt) and a COCO validator.

Every converter returns a :class:`Conversion`: the COCO dict (``images``, ``annotations``,
``categories``), every problem found (:class:`~toolbox.datasets.checks.DataProblem`: file,
field or line, message) and how many images and annotations were left out. With
``skip_invalid=False`` (the default) any problem raises :class:`ConversionError` listing all of
them at once; with ``skip_invalid=True`` the offending annotations (or images) are dropped and
counted. ``tools/dataset_converters/to_coco.py`` is the command line.

Conventions of the output (what :class:`~toolbox.datasets.CocoDataset` reads back):

* categories: ids ``1..C`` in the order of ``classes`` when given (names not in it are
  problems), otherwise the sorted distinct names found (YOLO: the names list, id = index + 1);
* images: ids ``1..N`` in listing order, ``file_name`` relative to the image root, ``width`` /
  ``height`` from the annotation where it has them, otherwise from the image header (PIL, no
  decoding, the size :mod:`toolbox.datasets.checks` compares with);
* ``bbox`` is COCO ``[x, y, w, h]`` in 0-based continuous pixels, so that ``[x, y, x + w, y + h]``
  is the toolbox's ``xyxy``. VOC boxes are 1-based inclusive pixel indices, converted as
  :class:`~toolbox.datasets.VOCDataset` converts them (``x = xmin - 1``, ``w = xmax - xmin + 1``):
  VOC ``[1, W]`` covers ``[0, W]``. labelme points are already continuous 0-based coordinates;
  YOLO's normalised ``cx cy w h`` are multiplied by the image size;
* ``area`` is ``w * h`` for boxes and the polygon's (shoelace) area for labelme polygons, which
  also keep their ``segmentation``;
* VOC ``difficult`` objects: our COCO reader honours ``iscrowd`` only (it becomes
  ``ignore_flag``, exactly what VOCDataset makes of ``difficult``; COCO evaluation ignores
  detections matched to them), so ``difficult='ignore'`` (default) writes ``iscrowd=1``;
  ``'keep'`` writes ``iscrowd=0`` (trained and evaluated as ordinary boxes), ``'drop'`` leaves
  them out. Every VOC annotation also carries ``difficult`` (0 / 1) for other readers.

A box is a problem when a coordinate is not finite, when it is degenerate (VOC: ``xmax <= xmin``
or ``ymax <= ymin`` on the raw values, as VOCDataset judges; the others: zero or negative width
or height), or when it lies more than ``box_tolerance`` pixels outside its image (the data
check's default slack, so that converted files pass ``tools/check_dataset.py``).
"""
from __future__ import annotations

import json
import os
import os.path as osp
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from toolbox.structures import voc_to_xyxy, xywh_to_xyxy, xyxy_to_xywh

from .checks import DataProblem, probe_image

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
DIFFICULT_MODES = ('ignore', 'keep', 'drop')


class ConversionError(ValueError):
    """A conversion found problems; ``problems`` lists every one (file, field, message)."""

    def __init__(self, source: str, problems: list[DataProblem], limit: int = 50):
        self.problems = problems
        lines = [f'  {p}' for p in problems[:limit]]
        if len(problems) > limit:
            lines.append(f'  ... and {len(problems) - limit} more')
        super().__init__(f'{source}: {len(problems)} problem(s), nothing written:\n'
                         + '\n'.join(lines) + '\nFix them, or pass skip_invalid=True '
                         '(--skip-invalid) to leave the offending annotations out (counted).')


@dataclass
class Conversion:
    """The result of a conversion: ``coco`` (the dict to write), ``problems`` (each one found;
    only non-empty with ``skip_invalid``), and the numbers of images and annotations left out
    because of them."""
    coco: dict
    problems: list[DataProblem] = field(default_factory=list)
    dropped_images: int = 0
    dropped_annotations: int = 0

    def summary(self) -> str:
        coco = self.coco
        text = (f"{len(coco['images'])} images, {len(coco['annotations'])} annotations, "
                f"{len(coco['categories'])} categories")
        if self.problems:
            text += (f'; {len(self.problems)} problem(s): dropped {self.dropped_annotations} '
                     f'annotations and {self.dropped_images} images')
        return text


@dataclass
class _Collected:
    """What a parser read, before the shared (vectorised) box checks.

    ``images``: dicts ``file_name, width, height`` (None: read the header), ``img_path``,
    ``ann_file``. Boxes (one entry each): ``box_image`` index into ``images``, ``box_raw``
    coordinates in the source's own convention, ``box_name`` class name, ``box_where`` field
    or line, ``box_extra`` fields copied into the annotation. ``bad_images`` are dropped with
    their boxes.
    """
    images: list[dict] = field(default_factory=list)
    box_image: list[int] = field(default_factory=list)
    box_raw: list[list[float]] = field(default_factory=list)
    box_name: list[str] = field(default_factory=list)
    box_where: list[str] = field(default_factory=list)
    box_extra: list[dict] = field(default_factory=list)
    problems: list[DataProblem] = field(default_factory=list)
    bad_images: set = field(default_factory=set)
    dropped_lines: int = 0  # annotations left out before they became a box
    unread_images: int = 0  # annotation files too broken to name their image

    def problem(self, file: str, where: str, message: str, image: str = '') -> None:
        self.problems.append(DataProblem(file, where, message, image or file))

    def add_box(self, image: int, raw, name, where: str, **extra) -> None:
        self.box_image.append(image)
        self.box_raw.append(raw)
        self.box_name.append(name)
        self.box_where.append(where)
        self.box_extra.append(extra)


def _resolve_classes(classes) -> list[str] | None:
    """``classes``: None, a sequence of names, or a file (one name per line, or a YOLO / mmdet
    style yaml with ``names`` as a list or an ``{index: name}`` mapping)."""
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        path = os.fspath(classes)
        if path.endswith(('.yaml', '.yml')):
            import yaml
            with open(path, encoding='utf-8') as f:
                names = (yaml.safe_load(f) or {}).get('names')
            if isinstance(names, dict):
                names = [names[k] for k in sorted(names, key=int)]
            if not isinstance(names, list):
                raise ValueError(f'{path}: field names must be a list or an index -> name '
                                 f'mapping')
            return [str(n) for n in names]
        with open(path, encoding='utf-8') as f:
            return [line.strip() for line in f if line.strip()]
    names = [str(n) for n in classes]
    if len(set(names)) != len(names):
        raise ValueError(f'classes has duplicate names: {names}')
    return names


def _image_size(collected: _Collected, index: int) -> None:
    """Fill a missing width / height from the image header, or mark the image bad."""
    image = collected.images[index]
    if image['width'] and image['height']:
        return
    probe = probe_image(image['img_path'], decode=False)
    if 'error' in probe:
        collected.problem(image['ann_file'], 'image', f"{image['img_path']}: {probe['error']} "
                          '(its size is not in the annotation, so it is read from the image)',
                          image['img_path'])
        collected.bad_images.add(index)
        return
    image['width'], image['height'] = probe['width'], probe['height']


def _polygon_areas(points: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Shoelace areas of polygons stored back to back: ``points`` (P, 2), ``sizes`` (K,) vertex
    counts summing to P -> (K,) areas."""
    if len(sizes) == 0:
        return np.zeros(0)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    following = np.arange(len(points)) + 1
    following[starts + sizes - 1] = starts  # each polygon's last vertex closes onto its first
    cross = points[:, 0] * points[following, 1] - points[following, 0] * points[:, 1]
    return np.abs(np.add.reduceat(cross, starts)) / 2


def _finish(collected: _Collected, source: str, to_xyxy, degenerate, classes, *,
            skip_invalid: bool, box_tolerance: float, areas=None) -> Conversion:
    """The checks every format shares, vectorised over all boxes, then the COCO dict.

    ``to_xyxy``: (N, 4) raw -> (N, 4) 0-based ``xyxy``, given the (N, 2) ``[width, height]`` of
    each box's image; ``degenerate``: (N, 4) raw -> (N,) bool; ``areas``: (N,) polygon areas
    with NaN for plain boxes.
    """
    images = collected.images
    raw = np.array(collected.box_raw, np.float64).reshape(-1, 4)
    image_of = np.array(collected.box_image, np.int64)
    names = collected.box_name
    problems = collected.problems
    keep = np.ones(len(raw), bool)
    if collected.bad_images:
        keep &= ~np.isin(image_of, sorted(collected.bad_images))

    if classes is None:
        classes = sorted({n for n, k in zip(names, keep) if k})
    label_of = {name: k for k, name in enumerate(classes)}
    labels = np.array([label_of.get(n, -1) for n in names], np.int64)

    def report(mask, message_of):
        for k in np.flatnonzero(mask & keep):
            image = images[image_of[k]]
            problems.append(DataProblem(image['ann_file'], collected.box_where[k], message_of(k),
                                        image['img_path']))

    report(labels < 0, lambda k: f'class {names[k]!r} is not in classes {list(classes)}')
    keep &= labels >= 0
    finite = np.isfinite(raw).all(1)
    report(~finite, lambda k: f'coordinates {raw[k].tolist()} are not all finite numbers')
    keep &= finite
    raw = np.where(finite[:, None], raw, 0.0)
    image_sizes = np.array([[image['width'] or 0, image['height'] or 0] for image in images],
                           np.float64).reshape(-1, 2)
    sizes = image_sizes[image_of]  # (N, 2) [width, height] of each box's image
    xyxy = to_xyxy(raw, sizes)
    flat = degenerate(raw)
    report(flat, lambda k: f'degenerate box {raw[k].tolist()} (zero or negative width or '
                           f'height)')
    keep &= ~flat
    tol = float(box_tolerance)
    outside = (xyxy[:, 0] < -tol) | (xyxy[:, 1] < -tol) | \
        (xyxy[:, 2] > sizes[:, 0] + tol) | (xyxy[:, 3] > sizes[:, 1] + tol)
    report(outside, lambda k: f'box {xyxy[k].tolist()} (xyxy, 0-based) lies outside the '
                              f'{sizes[k, 0]:g}x{sizes[k, 1]:g} image')
    keep &= ~outside

    if problems and not skip_invalid:
        raise ConversionError(source, problems)
    kept_images = [k for k in range(len(images)) if k not in collected.bad_images]
    image_id = {k: new_id for new_id, k in enumerate(kept_images, 1)}
    xywh = xyxy_to_xywh(xyxy)
    box_area = xywh[:, 2] * xywh[:, 3]
    if areas is not None:
        box_area = np.where(np.isnan(areas), box_area, areas)
    annotations = [dict(dict(id=n, image_id=image_id[int(image_of[k])],
                             category_id=int(labels[k]) + 1, bbox=xywh[k].tolist(),
                             area=float(box_area[k]), iscrowd=0), **collected.box_extra[k])
                   for n, k in enumerate(np.flatnonzero(keep), 1)]
    coco = dict(
        images=[dict(id=image_id[k], file_name=images[k]['file_name'],
                     width=int(images[k]['width']), height=int(images[k]['height']))
                for k in kept_images],
        annotations=annotations,
        categories=[dict(id=k + 1, name=name) for k, name in enumerate(classes)])
    return Conversion(coco, problems,
                      dropped_images=len(images) - len(kept_images) + collected.unread_images,
                      dropped_annotations=int((~keep).sum()) + collected.dropped_lines)


def _voc_degenerate(raw: np.ndarray) -> np.ndarray:
    return (raw[:, 2] <= raw[:, 0]) | (raw[:, 3] <= raw[:, 1])


def _xyxy_degenerate(xyxy: np.ndarray) -> np.ndarray:
    return (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])


def voc_to_coco(root: str, split: str | None = None, classes=None, *,
                ann_dir: str = 'Annotations', img_dir: str = 'JPEGImages',
                difficult: str = 'ignore', skip_invalid: bool = False,
                box_tolerance: float = 1.0) -> Conversion:
    """Pascal VOC xml -> COCO.

    Args:
        root: the VOC-style folder (``VOCdevkit/VOC2007``) holding ``ann_dir`` and ``img_dir``.
        split: an image-id list (``ImageSets/Main/train.txt``, relative to ``root`` or
            absolute; first token of each line); None: every ``ann_dir/*.xml``, sorted.
        classes: names (or a file of names) fixing the category order; None: sorted names found.
        difficult: ``'ignore'`` | ``'keep'`` | ``'drop'`` (module docstring).

    ``file_name`` is relative to ``root/img_dir``: ``<id>.jpg`` as VOCDataset reads it, or the
    xml's ``filename`` when only that exists.
    """
    if difficult not in DIFFICULT_MODES:
        raise ValueError(f'difficult must be one of {DIFFICULT_MODES}, got {difficult!r}')
    classes = _resolve_classes(classes)
    ann_root, img_root = osp.join(root, ann_dir), osp.join(root, img_dir)
    if split is not None:
        list_path = split if osp.isabs(split) else osp.join(root, split)
        with open(list_path, encoding='utf-8') as f:
            img_ids = [line.split()[0] for line in f if line.strip()]
    else:
        img_ids = sorted(name[:-4] for name in os.listdir(ann_root) if name.endswith('.xml'))
    collected = _Collected()
    for img_id in img_ids:
        xml_path = osp.join(ann_root, f'{img_id}.xml')
        index = len(collected.images)
        image = dict(file_name=f'{img_id}.jpg', width=None, height=None,
                     img_path=osp.join(img_root, f'{img_id}.jpg'), ann_file=xml_path)
        collected.images.append(image)
        try:
            tree = ET.parse(xml_path).getroot()
        except (ET.ParseError, OSError) as exc:
            collected.problem(xml_path, 'xml', f'cannot be parsed ({exc})')
            collected.bad_images.add(index)
            continue
        objects = tree.findall('object')
        if not osp.isfile(image['img_path']):
            named = (tree.findtext('filename') or '').strip()
            if named and osp.isfile(osp.join(img_root, named)):
                image.update(file_name=named, img_path=osp.join(img_root, named))
            else:
                alternative = f' nor {named!r} (its filename field)' if named else ''
                collected.problem(xml_path, 'filename', f'the image {img_id}.jpg{alternative} '
                                  f'does not exist in {img_root}', image['img_path'])
                collected.bad_images.add(index)
                collected.dropped_lines += len(objects)
                continue
        for axis in ('width', 'height'):
            text = tree.findtext(f'size/{axis}')
            try:
                value = int(float(text)) if text is not None else 0
            except ValueError:
                collected.problem(xml_path, f'size/{axis}', f'{text!r} is not a number',
                                  image['img_path'])
                collected.bad_images.add(index)
                value = 0
            image[axis] = value if value > 0 else None  # absent or 0: read from the image
        if index in collected.bad_images:
            collected.dropped_lines += len(objects)
            continue
        _image_size(collected, index)
        for k, obj in enumerate(objects):
            name = (obj.findtext('name') or '').strip()
            is_difficult = int((obj.findtext('difficult') or '0').strip() == '1')
            if is_difficult and difficult == 'drop':
                continue
            try:
                coords = [float(obj.findtext(f'bndbox/{t}'))
                          for t in ('xmin', 'ymin', 'xmax', 'ymax')]
            except (TypeError, ValueError):
                collected.problem(xml_path, f'object[{k}].bndbox', 'missing, or a coordinate '
                                  'is not a number', image['img_path'])
                collected.dropped_lines += 1
                continue
            collected.add_box(index, coords, name, f'object[{k}].bndbox',
                              iscrowd=int(is_difficult and difficult == 'ignore'),
                              difficult=is_difficult)
    return _finish(collected, root, lambda raw, sizes: voc_to_xyxy(raw), _voc_degenerate,
                   classes, skip_invalid=skip_invalid, box_tolerance=box_tolerance)


def labelme_to_coco(ann_dir: str, img_root: str | None = None, classes=None, *,
                    skip_invalid: bool = False, box_tolerance: float = 1.0) -> Conversion:
    """labelme json (one file per image, every ``*.json`` of ``ann_dir``, sorted) -> COCO.

    ``rectangle`` shapes (two corners, any order) become boxes; ``polygon`` shapes (three or
    more points) become their bounding box with the polygon as ``segmentation`` and its area.
    Other shape types (circle, line, point, ...) are problems. Each shape is one annotation.
    The image is ``imagePath`` relative to the json file; ``file_name`` is relative to
    ``img_root`` (default ``ann_dir``). Sizes come from ``imageWidth`` / ``imageHeight``.
    """
    classes = _resolve_classes(classes)
    img_root = ann_dir if img_root is None else img_root
    collected = _Collected()
    polygon_points, polygon_sizes, polygon_boxes = [], [], []
    for json_name in sorted(n for n in os.listdir(ann_dir) if n.endswith('.json')):
        json_path = osp.join(ann_dir, json_name)
        try:
            with open(json_path, encoding='utf-8') as f:
                doc = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            collected.problem(json_path, 'json', f'not valid json ({exc})')
            collected.unread_images += 1
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get('imagePath'), str):
            collected.problem(json_path, 'imagePath', 'missing: a labelme file names its image')
            collected.unread_images += 1
            continue
        img_path = osp.normpath(osp.join(ann_dir, doc['imagePath'].replace('\\', '/')))
        index = len(collected.images)
        collected.images.append(dict(
            file_name=osp.relpath(img_path, img_root).replace(os.sep, '/'),
            width=doc.get('imageWidth'), height=doc.get('imageHeight'), img_path=img_path,
            ann_file=json_path))
        shapes = doc.get('shapes', [])
        if not isinstance(shapes, list):
            collected.problem(json_path, 'shapes', 'must be a list', img_path)
            collected.bad_images.add(index)
            continue
        if not osp.isfile(img_path):
            collected.problem(json_path, 'imagePath', f'the image {img_path} does not exist',
                              img_path)
            collected.bad_images.add(index)
        for axis, key in (('width', 'imageWidth'), ('height', 'imageHeight')):
            value = doc.get(key)
            if value is not None and not (isinstance(value, int) and value > 0):
                collected.problem(json_path, key, f'{value!r} is not a positive integer',
                                  img_path)
                collected.bad_images.add(index)
        if index in collected.bad_images:
            collected.dropped_lines += len(shapes)
            continue
        _image_size(collected, index)
        for k, shape in enumerate(shapes):
            where = f'shapes[{k}]'
            if not isinstance(shape, dict):
                shape = {}
            kind = shape.get('shape_type') or 'polygon'  # labelme's default before 3.x
            label = shape.get('label')
            try:
                points = np.array(shape['points'], np.float64)
            except (KeyError, TypeError, ValueError):
                points = np.zeros((0, 3))
            if not isinstance(label, str) or not label:
                collected.problem(json_path, f'{where}.label', 'missing or not a string',
                                  img_path)
            elif kind not in ('rectangle', 'polygon'):
                collected.problem(json_path, f'{where}.shape_type', f'{kind!r} is not '
                                  "supported (only 'rectangle' and 'polygon')", img_path)
            elif points.ndim != 2 or points.shape[1] != 2 or \
                    len(points) < (2 if kind == 'rectangle' else 3) or \
                    (kind == 'rectangle' and len(points) != 2):
                expected = 'two [x, y] corners' if kind == 'rectangle' else \
                    'three or more [x, y] points'
                collected.problem(json_path, f'{where}.points', f'a {kind} needs {expected}, '
                                  f'got {shape.get("points")!r}', img_path)
            else:
                box = [*points.min(0), *points.max(0)]
                extra = {}
                if kind == 'polygon':
                    extra['segmentation'] = [points.reshape(-1).tolist()]
                    polygon_points.append(points)
                    polygon_sizes.append(len(points))
                    polygon_boxes.append(len(collected.box_raw))
                collected.add_box(index, box, label, f'{where}.points', **extra)
                continue
            collected.dropped_lines += 1
    areas = np.full(len(collected.box_raw), np.nan)
    if polygon_boxes:
        points = np.concatenate(polygon_points)
        areas[polygon_boxes] = _polygon_areas(np.where(np.isfinite(points), points, 0.0),
                                              np.array(polygon_sizes))
    return _finish(collected, ann_dir, lambda raw, sizes: raw, _xyxy_degenerate, classes,
                   skip_invalid=skip_invalid, box_tolerance=box_tolerance, areas=areas)


def _yolo_to_xyxy(raw: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(N, 4) normalised ``cx cy w h`` and (N, 2) image ``[width, height]`` -> pixel ``xyxy``."""
    scale = np.concatenate([sizes, sizes], 1)
    corner = raw.copy()
    corner[:, :2] = raw[:, :2] - raw[:, 2:] / 2
    return xywh_to_xyxy(corner) * scale


def yolo_to_coco(img_dir: str, label_dir: str | None = None, classes=None, *,
                 skip_invalid: bool = False, box_tolerance: float = 1.0) -> Conversion:
    """YOLO txt -> COCO.

    Every image of ``img_dir`` (suffixes ``IMAGE_SUFFIXES``, sorted) is an image; its labels are
    ``label_dir/<stem>.txt`` (default: next to it), one ``class cx cy w h`` line per box, the
    box normalised by the image size. An image without a label file has no objects (YOLO's
    convention); a label file without an image is a problem. ``classes``: the names (index k
    is class k), or a ``classes.txt`` / ``data.yaml`` path; None: ``classes.txt`` in
    ``label_dir`` or ``img_dir``. Category ids are the class index + 1.
    """
    label_dir = img_dir if label_dir is None else label_dir
    if classes is None:
        found = [p for p in (osp.join(label_dir, 'classes.txt'), osp.join(img_dir, 'classes.txt'))
                 if osp.isfile(p)]
        if not found:
            raise FileNotFoundError(f'no classes.txt in {label_dir} or {img_dir}: give the '
                                    f'class names (classes=[...] or a classes.txt / data.yaml)')
        classes = found[0]
    classes = _resolve_classes(classes)
    stems = {osp.splitext(n)[0]: n for n in sorted(os.listdir(img_dir))
             if n.lower().endswith(IMAGE_SUFFIXES)}
    collected = _Collected()
    for name in sorted(os.listdir(label_dir)):
        stem, suffix = osp.splitext(name)
        if suffix == '.txt' and name != 'classes.txt' and stem not in stems:
            label_path = osp.join(label_dir, name)
            collected.problem(label_path, 'image', f'no image {stem}.* ({"/".join(IMAGE_SUFFIXES)}'
                              f') in {img_dir}')
            with open(label_path, encoding='utf-8') as f:
                collected.dropped_lines += sum(1 for line in f if line.strip())
    for stem, img_name in sorted(stems.items()):
        label_path = osp.join(label_dir, f'{stem}.txt')
        index = len(collected.images)
        img_path = osp.join(img_dir, img_name)
        collected.images.append(dict(file_name=img_name, width=None, height=None,
                                     img_path=img_path, ann_file=label_path))
        _image_size(collected, index)
        if not osp.isfile(label_path):
            continue
        with open(label_path, encoding='utf-8') as f:
            lines = f.read().splitlines()
        for line_no, line in enumerate(lines, 1):
            fields = line.split()
            if not fields:
                continue
            where = f'line {line_no}'
            try:
                numbers = [float(v) for v in fields]
            except ValueError:
                numbers = None
            if numbers is None or len(fields) != 5:
                collected.problem(label_path, where, f'expected 5 numbers "class cx cy w h", '
                                  f'got {line.strip()!r}', img_path)
                collected.dropped_lines += 1
                continue
            class_index = numbers[0]
            if not (np.isfinite(class_index) and class_index == int(class_index) and
                    0 <= class_index < len(classes)):
                collected.problem(label_path, where, f'class {fields[0]} is not an index into '
                                  f'the {len(classes)} names {classes}', img_path)
                collected.dropped_lines += 1
                continue
            collected.add_box(index, numbers[1:], classes[int(class_index)], where)
    return _finish(collected, img_dir, _yolo_to_xyxy,
                   lambda raw: (raw[:, 2] <= 0) | (raw[:, 3] <= 0), classes,
                   skip_invalid=skip_invalid, box_tolerance=box_tolerance)


def write_coco(coco: dict, path: str) -> None:
    """Write ``coco`` as json atomically (a temporary file renamed over ``path``)."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(coco, f)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
