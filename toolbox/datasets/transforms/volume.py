"""Volume (3D, N-D) transforms for medical segmentation: NIfTI loading, intensity, resampling,
padding, foreground-aware cropping, flips and 90-degree rotations.

Conventions of a volume sample in the ``results`` dict (others rely on them):

* ``img``: float32 (C, D, H, W), **channel-first** (unlike 2D images, (H, W, C)). The spatial
  axes are the NIfTI array axes (i, j, k) exactly as nibabel returns them (no transpose, no
  reorientation), so ``affine`` maps (i, j, k, 1) to world millimetres.
* ``gt_seg_map``: int64 (D, H, W) class indices; ``IGNORE_INDEX`` (255) counts nowhere.
* ``spatial_dims = 3``; ``img_path`` / ``seg_map_path``; ``ori_shape`` (D, H, W) as loaded;
  ``img_shape`` (D, H, W) of the valid (unpadded) region now; ``pad_shape`` (D, H, W) after a
  padding transform; ``affine`` (4, 4) float64 of the file (never changed);
  ``spacing`` (3,) float64 current voxel size in mm; ``ori_spacing`` (3,) as loaded.
* Padding is always added at the END of each spatial axis (like 2D bottom/right) and leaves
  ``img_shape`` alone, so a test-time prediction maps back to the original frame by cropping to
  ``img_shape`` and resizing to ``ori_shape`` (``F.interpolate`` with ``align_corners=False``,
  the convention :class:`Spacing` resamples with).
* Random transforms draw from numpy's global RNG (``np.random``), which the runner seeds (per
  data-loader worker too), so pipelines are reproducible.

:class:`RandCropByPosNegLabel` with ``num_samples > 1`` returns a *list* of results dicts
(MONAI's behaviour); every transform of this module and ``PackInputs`` map themselves over such
a list, and ``collate_fn=dict(type='flatten_collate')`` makes each element one sample of the
batch.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.transforms import BaseTransform

from toolbox.plugins import require
from toolbox.registry import TRANSFORMS
from toolbox.structures import IGNORE_INDEX


def _where(results: dict) -> str:
    return str(results.get('img_path') or results.get('seg_map_path') or 'a volume sample')


def _spatial_shape(results: dict, owner: str) -> tuple[int, ...]:
    """Spatial shape of ``results['img']`` (C, *spatial), or of ``gt_seg_map`` without image."""
    if 'img' in results:
        img = results['img']
        if img.ndim < 2:
            raise ValueError(f'{owner}: {_where(results)}: img must be channel-first '
                             f'(C, *spatial), got shape {img.shape}')
        return tuple(img.shape[1:])
    if 'gt_seg_map' in results:
        return tuple(results['gt_seg_map'].shape)
    raise KeyError(f'{owner} needs img or gt_seg_map: put it after LoadVolume')


def _as_tuple(value, n: int, name: str, owner: str, kind=int) -> tuple:
    values = (value,) * n if np.isscalar(value) else tuple(value)
    if len(values) != n:
        raise ValueError(f'{owner}: {name} must be a number or {n} numbers, got {value!r}')
    return tuple(kind(v) for v in values)


def _pad_end(results: dict, target: Sequence[int], pad_val: float, seg_pad_val: int) -> None:
    """Pad ``img`` (C, *spatial) and ``gt_seg_map`` (*spatial) at the end of each spatial axis
    up to ``target`` (no axis shrinks); sets ``pad_shape``. ``img_shape`` is unchanged."""
    shape = np.array(_spatial_shape(results, 'pad'))
    after = np.maximum(np.asarray(target) - shape, 0)
    widths = [(0, int(a)) for a in after]
    if after.any():
        if 'img' in results:
            results['img'] = np.pad(results['img'], [(0, 0)] + widths,
                                    constant_values=pad_val)
        if 'gt_seg_map' in results:
            results['gt_seg_map'] = np.pad(results['gt_seg_map'], widths,
                                           constant_values=seg_pad_val)
    results['pad_shape'] = tuple(int(s) for s in shape + after)


class VolumeTransform(BaseTransform):
    """Base of the volume transforms: ``transform(results: dict)`` is applied to one sample,
    or to each element of a list of samples (the output of a multi-sample crop)."""

    def __call__(self, results):
        if isinstance(results, list):
            out = []
            for item in results:
                item = self.transform(item)
                out.extend(item if isinstance(item, list) else [item])
            return out
        return self.transform(results)


class _NiftiCache:
    """Decoded arrays keyed by path, for ``cache=True`` (no eviction: for datasets that fit in
    memory; each data-loader worker process holds its own copy)."""

    def __init__(self):
        self.store: dict = {}


@TRANSFORMS.register_module()
class LoadVolume(VolumeTransform):
    """Read ``results['img_path']`` (NIfTI, via nibabel) into ``img`` float32 (C, D, H, W).

    A 3D file (i, j, k) gets a leading channel axis (C = 1); a 4D file (i, j, k, c) (MSD's
    multi-modal tasks) has its 4th axis moved to the channels. Intensities are nibabel's
    ``get_fdata`` (``scl_slope`` / ``scl_inter`` applied). Sets ``ori_shape`` = ``img_shape``
    = (D, H, W), ``affine`` (4, 4) float64 (``nibabel``'s ``img.affine``), ``spacing`` =
    ``ori_spacing`` (3,) float64 (the header's ``get_zooms()[:3]``) and ``spatial_dims = 3``.

    Args:
        cache: keep every decoded volume in memory, keyed by path ("cached loading"): the
            second epoch decodes nothing. No eviction; each data-loader worker keeps its own
            cache. Callers receive a copy, so in-place transforms never alter the cache.

    Errors name the file: unreadable, not 3D/4D, non-positive voxel size (header field
    ``pixdim``).
    """

    def __init__(self, cache: bool = False):
        self.cache = _NiftiCache() if cache else None

    def _read(self, path: str):
        if self.cache is not None and path in self.cache.store:
            return self.cache.store[path]
        nib = require('nibabel', 'LoadVolume', extra='medical')
        try:
            nii = nib.load(path)
            data = nii.get_fdata(dtype=np.float32, caching='unchanged')
        except Exception as exc:  # nibabel raises several types (FileNotFoundError, ImageFileError)
            raise OSError(f'cannot read volume {path!r}: {exc}') from exc
        if data.ndim == 3:
            data = data[None]
        elif data.ndim == 4:
            data = np.moveaxis(data, 3, 0)
        else:
            raise ValueError(f'{path}: expected a 3D (i, j, k) or 4D (i, j, k, channel) volume, '
                             f'got shape {data.shape}')
        spacing = np.asarray(nii.header.get_zooms()[:3], dtype=np.float64)
        if not (np.isfinite(spacing).all() and (spacing > 0).all()):
            raise ValueError(f'{path}: header field pixdim gives voxel size {spacing.tolist()}; '
                             f'expected 3 positive numbers')
        entry = (np.ascontiguousarray(data, dtype=np.float32),
                 np.asarray(nii.affine, dtype=np.float64), spacing)
        if self.cache is not None:
            self.cache.store[path] = entry
        return entry

    def transform(self, results: dict) -> dict:
        data, affine, spacing = self._read(results['img_path'])
        results['img'] = data.copy()
        shape = tuple(int(s) for s in data.shape[1:])
        results['ori_shape'] = shape
        results['img_shape'] = shape
        results['affine'] = affine.copy()
        results['spacing'] = spacing.copy()
        results['ori_spacing'] = spacing.copy()
        results['spatial_dims'] = 3
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(cache={self.cache is not None})'


@TRANSFORMS.register_module()
class LoadVolumeAnnotation(VolumeTransform):
    """Read ``results['seg_map_path']`` (NIfTI class map) into ``gt_seg_map`` int64 (D, H, W).

    The map must be 3D (or 4D with a single 4th entry), hold integer values (stored as any
    dtype; MSD stores float32) and, after :class:`LoadVolume`, have the image's spatial shape.

    Args:
        cache: as :class:`LoadVolume`.
    """

    def __init__(self, cache: bool = False):
        self.cache = _NiftiCache() if cache else None

    def _read(self, path: str) -> np.ndarray:
        if self.cache is not None and path in self.cache.store:
            return self.cache.store[path]
        nib = require('nibabel', 'LoadVolumeAnnotation', extra='medical')
        try:
            raw = np.asanyarray(nib.load(path).dataobj)
        except Exception as exc:
            raise OSError(f'cannot read label volume {path!r}: {exc}') from exc
        if raw.ndim == 4 and raw.shape[3] == 1:
            raw = raw[..., 0]
        if raw.ndim != 3:
            raise ValueError(f'{path}: a label volume must be 3D (i, j, k), got shape '
                             f'{raw.shape}')
        if raw.dtype.kind == 'f':
            rounded = np.rint(raw)
            if not np.array_equal(rounded, raw):
                bad = np.unique(raw[rounded != raw])[:5].tolist()
                raise ValueError(f'{path}: label values must be integers, found {bad}')
            raw = rounded
        seg = np.ascontiguousarray(raw, dtype=np.int64)
        if self.cache is not None:
            self.cache.store[path] = seg
        return seg

    def transform(self, results: dict) -> dict:
        path = results.get('seg_map_path')
        if not path:
            raise KeyError(f'LoadVolumeAnnotation: {_where(results)} has no seg_map_path '
                           f'(an unlabelled split such as MSD "test" has no labels)')
        seg = self._read(path).copy()
        if 'img' in results and tuple(results['img'].shape[1:]) != seg.shape:
            raise ValueError(f'{path}: label shape {seg.shape} differs from the image '
                             f'{results.get("img_path")!r} spatial shape '
                             f'{tuple(results["img"].shape[1:])}')
        results['gt_seg_map'] = seg
        results.setdefault('seg_fields', [])
        if 'gt_seg_map' not in results['seg_fields']:
            results['seg_fields'].append('gt_seg_map')
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(cache={self.cache is not None})'


@TRANSFORMS.register_module()
class ScaleIntensityRange(VolumeTransform):
    """Linear map of ``img`` from [a_min, a_max] to [b_min, b_max], then clip to it (MONAI's
    ``ScaleIntensityRange``): ``(x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min``.
    Computed in float32 (the image's dtype), as MONAI does. ``a_min == a_max`` is refused."""

    def __init__(self, a_min: float, a_max: float, b_min: float = 0.0, b_max: float = 1.0,
                 clip: bool = True):
        if a_max == a_min:
            raise ValueError(f'ScaleIntensityRange: a_min == a_max ({a_min}) divides by zero')
        self.a_min, self.a_max = float(a_min), float(a_max)
        self.b_min, self.b_max = float(b_min), float(b_max)
        self.clip = clip

    def transform(self, results: dict) -> dict:
        img = results['img'].astype(np.float32, copy=False)
        img = (img - np.float32(self.a_min)) / np.float32(self.a_max - self.a_min)
        img = img * np.float32(self.b_max - self.b_min) + np.float32(self.b_min)
        if self.clip:
            img = np.clip(img, min(self.b_min, self.b_max), max(self.b_min, self.b_max))
        results['img'] = img.astype(np.float32, copy=False)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(a_min={self.a_min}, a_max={self.a_max}, '
                f'b_min={self.b_min}, b_max={self.b_max}, clip={self.clip})')


@TRANSFORMS.register_module()
class NormalizeIntensity(VolumeTransform):
    """Z-score ``img`` (C, *spatial), as MONAI's ``NormalizeIntensity`` (no subtrahend/divisor).

    With ``nonzero=True`` the mean and (population) standard deviation are computed over the
    non-zero voxels only, and only those are changed (zeros stay 0); otherwise over all voxels.
    ``channel_wise=True`` uses statistics per channel; ``False`` one set over all channels. A
    standard deviation of 0 is replaced by 1; a channel without selected voxels is unchanged.
    Statistics are accumulated in float64, the result is float32.
    """

    def __init__(self, nonzero: bool = True, channel_wise: bool = True):
        self.nonzero = nonzero
        self.channel_wise = channel_wise

    def transform(self, results: dict) -> dict:
        img = results['img'].astype(np.float32, copy=False)
        flat = img.reshape(img.shape[0] if self.channel_wise else 1, -1)  # (groups, voxels)
        mask = flat != 0 if self.nonzero else np.ones(flat.shape, dtype=bool)
        count = mask.sum(1, keepdims=True)
        safe = np.maximum(count, 1)
        mean = np.where(mask, flat, 0).sum(1, keepdims=True, dtype=np.float64) / safe
        var = (np.where(mask, flat - mean, 0) ** 2).sum(1, keepdims=True) / safe
        std = np.sqrt(var)
        std[std == 0] = 1.0
        normed = ((flat - mean) / std).astype(np.float32)
        out = np.where(mask & (count > 0), normed, flat)
        results['img'] = out.reshape(img.shape)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(nonzero={self.nonzero}, channel_wise={self.channel_wise})'


def _nearest_exact_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output voxel when ``n_in`` voxels are resampled to ``n_out`` with
    voxel centres aligned (torch's ``nearest-exact``): ``min(floor((j + 0.5) n_in / n_out),
    n_in - 1)``."""
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64),
                      n_in - 1)


@TRANSFORMS.register_module()
class Spacing(VolumeTransform):
    """Resample ``img`` and ``gt_seg_map`` to the voxel size ``pixdim`` (mm), axis-aligned.

    The field of view is kept: an axis of ``n`` voxels of size ``s`` becomes
    ``m = max(1, round(n * s / pixdim))`` voxels, and the voxel centres are aligned as by
    ``F.interpolate(..., align_corners=False)`` (output voxel ``j`` samples input position
    ``(j + 0.5) * n / m - 0.5``). The image uses ``img_mode`` (``'trilinear'``; ``'nearest'``
    or ``'area'`` also accepted), the label map exact nearest neighbour with the same centre
    alignment (torch's ``'nearest-exact'``; torch's plain ``'nearest'`` is shifted by up to
    half an input voxel), computed by integer indexing so labels are never converted to float.

    ``spacing`` becomes the voxel size actually obtained, ``s * n / m`` (equal to ``pixdim``
    up to the rounding of ``m``); ``img_shape`` (and ``pad_shape``, dropped) the new shape.
    ``affine`` stays the file's; ``resampled_affine`` (4, 4) maps the new voxel grid to world
    mm (composed with any earlier ``resampled_affine``; the later random crops, flips and
    rotations of training do not update it). A ``pixdim`` entry <= 0 keeps that
    axis' spacing (MONAI's convention). Resample before any padding or cropping.

    Args:
        pixdim: target voxel size, a number or (3,) in mm.
        img_mode: ``F.interpolate`` mode of the image.
    """

    def __init__(self, pixdim, img_mode: str = 'trilinear'):
        self.pixdim = np.asarray(_as_tuple(pixdim, 3, 'pixdim', 'Spacing', float))
        if img_mode not in ('trilinear', 'nearest', 'nearest-exact', 'area'):
            raise ValueError(f"Spacing: img_mode must be 'trilinear', 'nearest', "
                             f"'nearest-exact' or 'area', got {img_mode!r}")
        self.img_mode = img_mode

    def transform(self, results: dict) -> dict:
        if 'spacing' not in results:
            raise KeyError(f'Spacing: {_where(results)} has no spacing; put it after LoadVolume')
        shape = np.array(_spatial_shape(results, 'Spacing'))
        if len(shape) != 3:
            raise ValueError(f'Spacing: {_where(results)}: expected 3 spatial axes, got '
                             f'{tuple(shape)}')
        spacing = np.asarray(results['spacing'], dtype=np.float64)
        target = np.where(self.pixdim > 0, self.pixdim, spacing)
        new_shape = np.maximum(1, np.round(shape * spacing / target)).astype(np.int64)
        ratio = shape / new_shape  # input voxels per output voxel
        if (new_shape != shape).any():
            size = tuple(int(s) for s in new_shape)
            if 'img' in results:
                img = torch.from_numpy(np.ascontiguousarray(results['img'], np.float32))[None]
                kwargs = dict(align_corners=False) if self.img_mode == 'trilinear' else {}
                results['img'] = F.interpolate(img, size=size, mode=self.img_mode,
                                               **kwargs)[0].numpy()
            if 'gt_seg_map' in results:
                index = [_nearest_exact_index(int(n), int(m)) for n, m in zip(shape, new_shape)]
                results['gt_seg_map'] = np.ascontiguousarray(
                    results['gt_seg_map'][np.ix_(*index)])
        # i_old = ratio * j_new + (ratio - 1) / 2
        grid = np.eye(4)
        grid[:3, :3] = np.diag(ratio)
        grid[:3, 3] = (ratio - 1) / 2
        previous = np.asarray(results.get('resampled_affine', results.get('affine', np.eye(4))),
                              dtype=np.float64)
        results['resampled_affine'] = previous @ grid
        results['spacing'] = spacing * ratio
        results['img_shape'] = tuple(int(s) for s in new_shape)
        results.pop('pad_shape', None)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(pixdim={self.pixdim.tolist()}, img_mode={self.img_mode!r})'


@TRANSFORMS.register_module()
class PadToMultiple(VolumeTransform):
    """Pad at the end of each spatial axis to a multiple of ``divisor`` (e.g. the ViT patch
    size 16 of UNETR). ``img`` is filled with ``pad_val``, ``gt_seg_map`` with
    ``seg_pad_val`` (ignored by losses and metrics). Sets ``pad_shape``; ``img_shape`` keeps
    the valid region.

    Args:
        divisor: an int or one per spatial axis.
    """

    def __init__(self, divisor, pad_val: float = 0, seg_pad_val: int = IGNORE_INDEX):
        self.divisor = divisor
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val
        values = (divisor,) if np.isscalar(divisor) else tuple(divisor)
        if not all(int(v) == v and v >= 1 for v in values):
            raise ValueError(f'PadToMultiple: divisor must be positive integers, got {divisor!r}')

    def transform(self, results: dict) -> dict:
        shape = np.array(_spatial_shape(results, 'PadToMultiple'))
        divisor = np.array(_as_tuple(self.divisor, len(shape), 'divisor', 'PadToMultiple'))
        _pad_end(results, -(-shape // divisor) * divisor, self.pad_val, self.seg_pad_val)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(divisor={self.divisor}, pad_val={self.pad_val}, '
                f'seg_pad_val={self.seg_pad_val})')


@TRANSFORMS.register_module()
class SpatialPad(VolumeTransform):
    """Pad at the end of each spatial axis to at least ``size`` (axes already as large are
    left alone; nothing is cropped). Fill values and keys as :class:`PadToMultiple`."""

    def __init__(self, size, pad_val: float = 0, seg_pad_val: int = IGNORE_INDEX):
        self.size = size
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val

    def transform(self, results: dict) -> dict:
        shape = _spatial_shape(results, 'SpatialPad')
        _pad_end(results, _as_tuple(self.size, len(shape), 'size', 'SpatialPad'),
                 self.pad_val, self.seg_pad_val)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, pad_val={self.pad_val}, '
                f'seg_pad_val={self.seg_pad_val})')


@TRANSFORMS.register_module()
class RandCropByPosNegLabel(VolumeTransform):
    """Random ``size`` crops centred on a foreground or a background voxel (MONAI's
    ``RandCropByPosNegLabeld``).

    For each of ``num_samples`` crops: with probability ``pos / (pos + neg)`` the centre is a
    uniformly drawn foreground voxel (``0 < label != ignore_index``), else a uniformly drawn
    background voxel (``label == 0``); if the chosen kind has no voxel the other kind is used
    (if neither exists, e.g. an all-ignored map, any voxel). The centre is then clamped so
    that the crop stays inside: the crop starts at ``clip(centre - size // 2, 0, shape -
    size)`` on each axis (MONAI's centre correction). Voxels labelled ``ignore_index`` are
    never centres.

    A volume smaller than ``size`` along an axis is first padded at the END of that axis
    (``img`` with ``pad_val``, ``gt_seg_map`` with ``seg_pad_val``, ignored by the losses),
    so every crop has exactly ``size`` (MONAI would return a smaller crop there).

    Sets ``img_shape`` = ``size`` (drops ``pad_shape``), ``crop_bbox`` = (start, stop) per
    axis and ``crop_centre`` (the drawn voxel, before clamping, in the padded frame).
    ``num_samples == 1`` returns the results dict; ``num_samples > 1`` returns a list of
    independent results dicts (see the module docstring).

    Args:
        size: crop size (3,) or an int.
        pos, neg: relative weights of foreground and background centres (>= 0, not both 0).
        num_samples: crops per input volume.
    """

    def __init__(self, size, pos: float = 1.0, neg: float = 1.0, num_samples: int = 1,
                 pad_val: float = 0, seg_pad_val: int = IGNORE_INDEX,
                 ignore_index: int = IGNORE_INDEX):
        self.size = size
        if pos < 0 or neg < 0 or pos + neg == 0:
            raise ValueError(f'RandCropByPosNegLabel: pos and neg must be >= 0 and not both 0, '
                             f'got pos={pos}, neg={neg}')
        if int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f'RandCropByPosNegLabel: num_samples must be a positive integer, '
                             f'got {num_samples}')
        self.pos, self.neg = float(pos), float(neg)
        self.num_samples = int(num_samples)
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val
        self.ignore_index = ignore_index

    def transform(self, results: dict):
        if 'gt_seg_map' not in results:
            raise KeyError(f'RandCropByPosNegLabel: {_where(results)} has no gt_seg_map; put '
                           f'it after LoadVolumeAnnotation')
        seg = results['gt_seg_map']
        size = np.array(_as_tuple(self.size, seg.ndim, 'size', 'RandCropByPosNegLabel'))
        if (size < 1).any():
            raise ValueError(f'RandCropByPosNegLabel: size must be positive, got {self.size}')
        _pad_end(results, size, self.pad_val, self.seg_pad_val)
        seg = results['gt_seg_map']
        shape = np.array(seg.shape)
        flat = seg.ravel()
        fg = np.flatnonzero((flat > 0) & (flat != self.ignore_index))
        bg = np.flatnonzero(flat == 0)
        samples = []
        for _ in range(self.num_samples):
            use_fg = np.random.rand() < self.pos / (self.pos + self.neg)
            pool = fg if use_fg else bg
            if pool.size == 0:
                pool = bg if use_fg else fg
            flat_index = pool[np.random.randint(pool.size)] if pool.size else \
                np.random.randint(flat.size)
            centre = np.array(np.unravel_index(flat_index, seg.shape))
            start = np.clip(centre - size // 2, 0, shape - size)
            stop = start + size
            window = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
            out = dict(results) if self.num_samples > 1 else results
            if 'img' in results:
                out['img'] = results['img'][(slice(None),) + window].copy()
            out['gt_seg_map'] = seg[window].copy()
            out['img_shape'] = tuple(int(s) for s in size)
            out.pop('pad_shape', None)
            out['crop_bbox'] = tuple((int(a), int(b)) for a, b in zip(start, stop))
            out['crop_centre'] = tuple(int(c) for c in centre)
            samples.append(out)
        return samples[0] if self.num_samples == 1 else samples

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(size={self.size}, pos={self.pos}, neg={self.neg}, '
                f'num_samples={self.num_samples})')


@TRANSFORMS.register_module()
class RandFlip3D(VolumeTransform):
    """Flip each listed spatial axis independently with probability ``prob``, image and label
    together. ``axes`` are spatial indices (0 = D/i, 1 = H/j, 2 = W/k). The flipped axes are
    recorded in ``flip_axes`` (a tuple, possibly empty). A training-time augmentation: the
    sample's ``img_shape`` becomes the full current shape and ``pad_shape`` is dropped (any
    earlier end padding may now be at the start; its labels are ``seg_pad_val``, ignored)."""

    def __init__(self, prob: float = 0.5, axes: Sequence[int] = (0, 1, 2)):
        if not 0 <= prob <= 1:
            raise ValueError(f'RandFlip3D: prob must be in [0, 1], got {prob}')
        self.prob = float(prob)
        self.axes = tuple(int(a) for a in axes)

    def transform(self, results: dict) -> dict:
        shape = _spatial_shape(results, 'RandFlip3D')
        if any(not 0 <= a < len(shape) for a in self.axes):
            raise ValueError(f'RandFlip3D: axes {self.axes} outside the {len(shape)} spatial axes')
        draws = np.random.rand(len(self.axes)) < self.prob
        flipped = tuple(a for a, d in zip(self.axes, draws) if d)
        if flipped:
            if 'img' in results:
                results['img'] = np.ascontiguousarray(
                    np.flip(results['img'], [a + 1 for a in flipped]))
            if 'gt_seg_map' in results:
                results['gt_seg_map'] = np.ascontiguousarray(
                    np.flip(results['gt_seg_map'], flipped))
        results['flip_axes'] = flipped
        results['img_shape'] = tuple(int(s) for s in shape)
        results.pop('pad_shape', None)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(prob={self.prob}, axes={self.axes})'


@TRANSFORMS.register_module()
class RandRotate90(VolumeTransform):
    """With probability ``prob`` rotate by ``k`` x 90 degrees in the plane of the spatial
    ``axes``, ``k`` uniform in 1..``max_k`` (MONAI's ``RandRotate90``; ``np.rot90`` direction,
    from the first axis towards the second). Image and label rotate together; an odd ``k``
    swaps the two axes' sizes and ``spacing`` entries. Records ``rot90 = (k, axes)`` (k = 0
    when not rotated). Like :class:`RandFlip3D`, sets ``img_shape`` to the full current shape
    and drops ``pad_shape``."""

    def __init__(self, prob: float = 0.1, max_k: int = 3, axes: Sequence[int] = (0, 1)):
        if not 0 <= prob <= 1:
            raise ValueError(f'RandRotate90: prob must be in [0, 1], got {prob}')
        if int(max_k) != max_k or max_k < 1:
            raise ValueError(f'RandRotate90: max_k must be a positive integer, got {max_k}')
        axes = tuple(int(a) for a in axes)
        if len(axes) != 2 or axes[0] == axes[1]:
            raise ValueError(f'RandRotate90: axes must be two different spatial axes, got {axes}')
        self.prob, self.max_k, self.axes = float(prob), int(max_k), axes

    def transform(self, results: dict) -> dict:
        shape = _spatial_shape(results, 'RandRotate90')
        if any(not 0 <= a < len(shape) for a in self.axes):
            raise ValueError(f'RandRotate90: axes {self.axes} outside the {len(shape)} spatial '
                             f'axes')
        rotate = np.random.rand() < self.prob
        k = int(np.random.randint(self.max_k)) + 1 if rotate else 0
        if k:
            a, b = self.axes
            if 'img' in results:
                results['img'] = np.ascontiguousarray(np.rot90(results['img'], k, (a + 1, b + 1)))
            if 'gt_seg_map' in results:
                results['gt_seg_map'] = np.ascontiguousarray(
                    np.rot90(results['gt_seg_map'], k, (a, b)))
            if k % 2 and 'spacing' in results:
                spacing = np.array(results['spacing'], dtype=np.float64)
                spacing[[a, b]] = spacing[[b, a]]
                results['spacing'] = spacing
            shape = _spatial_shape(results, 'RandRotate90')
        results['rot90'] = (k, self.axes)
        results['img_shape'] = tuple(int(s) for s in shape)
        results.pop('pad_shape', None)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(prob={self.prob}, max_k={self.max_k}, axes={self.axes})'
