"""Data samples: the per-image container passed between dataset, model and metric.

Built on ``mmengine.structures`` as OpenMMLab users expect. Fields:

* ``gt_instances`` / ``pred_instances`` (:class:`InstanceData`): ``bboxes`` float32 (N, 4) in
  ``xyxy`` absolute pixels, 0-based, in the frame of the *current* image (predictions are
  rescaled to the original image by the detector); ``labels`` int64 (N,), 0-based contiguous
  class indices; ``scores`` float32 (N,) for predictions.
* ``ignored_instances`` (:class:`InstanceData`): boxes marked ``difficult``/``iscrowd``.
* ``gt_sem_seg`` / ``pred_sem_seg``: ``data`` int64 class map, (1, H, W) in a
  :class:`PixelData` for images, (1, D, H, W) in a :class:`VolumeData` for volumes;
  ground-truth voxels equal to :data:`IGNORE_INDEX` (255) count in no loss and no metric.
* ``seg_logits`` (:class:`PixelData` (C, H, W) or :class:`VolumeData` (C, D, H, W)): float
  logits of a prediction, in the same frame as ``pred_sem_seg``.
* metainfo of an image: ``img_id``, ``img_path``, ``ori_shape`` (h, w), ``img_shape`` (h, w)
  after resize, ``scale_factor`` (w_scale, h_scale), ``flip``, ``flip_direction``,
  ``pad_shape``, ``batch_input_shape``.
* metainfo of a volume (spatial axes (D, H, W) are the NIfTI array axes (i, j, k)):
  ``img_path``, ``seg_map_path``, ``ori_shape`` (D, H, W) as loaded, ``img_shape`` (D, H, W)
  after the transforms (the valid, unpadded region), ``pad_shape`` and ``batch_input_shape``
  (D, H, W), ``affine`` (4, 4) of the file, ``spacing`` (3,) current and ``ori_spacing`` (3,)
  loaded voxel sizes in mm, ``flip_axes`` (spatial axes flipped by the pipeline).
"""
from __future__ import annotations

import numpy as np
import torch
from mmengine.structures import BaseDataElement, InstanceData, PixelData

#: Segmentation label of pixels that count nowhere (object boundaries, void, padding). The
#: default of every ``ignore_index`` / ``seg_pad_val`` in the toolbox; 255 is the VOC / mmseg
#: convention and fits a uint8 PNG.
IGNORE_INDEX = 255


class VolumeData(BaseDataElement):
    """Voxel-level annotations or predictions of a volume: the 3D counterpart of
    :class:`PixelData` (which holds only (C, H, W) maps).

    Every data field is a ``torch.Tensor`` or ``np.ndarray`` of shape (C, D, H, W) (channel
    first; class maps have C = 1, logits C = num_classes), and all fields share the same
    spatial shape (D, H, W), returned by :attr:`shape`. Anything else raises ``ValueError``
    naming the field. Metainfo is free-form, as in every ``BaseDataElement``.

    Example:
        >>> labels = VolumeData(data=torch.zeros(1, 8, 16, 16, dtype=torch.long))
        >>> labels.shape
        (8, 16, 16)
    """

    def __setattr__(self, name: str, value):
        if name in ('_metainfo_fields', '_data_fields'):
            super().__setattr__(name, value)  # BaseDataElement keeps them immutable
            return
        if not isinstance(value, (torch.Tensor, np.ndarray)):
            raise ValueError(f'VolumeData.{name} must be a torch.Tensor or np.ndarray of shape '
                             f'(C, D, H, W), got {type(value).__name__}')
        if value.ndim != 4:
            raise ValueError(f'VolumeData.{name} must have 4 dims (C, D, H, W), got shape '
                             f'{tuple(value.shape)}')
        shape = self.shape
        if shape is not None and tuple(value.shape[1:]) != shape:
            raise ValueError(f'VolumeData.{name} has spatial shape {tuple(value.shape[1:])} '
                             f'but the other fields have {shape}')
        super().__setattr__(name, value)

    @property
    def shape(self) -> tuple[int, int, int] | None:
        """The common spatial shape (D, H, W) of the fields, ``None`` while there are none."""
        if len(self._data_fields) == 0:
            return None
        return tuple(self.values()[0].shape[1:])


#: What ``gt_sem_seg`` / ``pred_sem_seg`` / ``seg_logits`` may hold: images or volumes.
SEG_TYPES: tuple[type, ...] = (PixelData, VolumeData)


class DataSample(BaseDataElement):
    """One image's annotations and predictions (see module docstring for fields)."""

    @property
    def gt_instances(self) -> InstanceData:
        return self._gt_instances

    @gt_instances.setter
    def gt_instances(self, value: InstanceData):
        self.set_field(value, '_gt_instances', dtype=InstanceData)

    @gt_instances.deleter
    def gt_instances(self):
        del self._gt_instances

    @property
    def pred_instances(self) -> InstanceData:
        return self._pred_instances

    @pred_instances.setter
    def pred_instances(self, value: InstanceData):
        self.set_field(value, '_pred_instances', dtype=InstanceData)

    @pred_instances.deleter
    def pred_instances(self):
        del self._pred_instances

    @property
    def ignored_instances(self) -> InstanceData:
        return self._ignored_instances

    @ignored_instances.setter
    def ignored_instances(self, value: InstanceData):
        self.set_field(value, '_ignored_instances', dtype=InstanceData)

    @ignored_instances.deleter
    def ignored_instances(self):
        del self._ignored_instances

    @property
    def gt_sem_seg(self) -> PixelData | VolumeData:
        return self._gt_sem_seg

    @gt_sem_seg.setter
    def gt_sem_seg(self, value: PixelData | VolumeData):
        self.set_field(value, '_gt_sem_seg', dtype=SEG_TYPES)

    @gt_sem_seg.deleter
    def gt_sem_seg(self):
        del self._gt_sem_seg

    @property
    def pred_sem_seg(self) -> PixelData | VolumeData:
        return self._pred_sem_seg

    @pred_sem_seg.setter
    def pred_sem_seg(self, value: PixelData | VolumeData):
        self.set_field(value, '_pred_sem_seg', dtype=SEG_TYPES)

    @pred_sem_seg.deleter
    def pred_sem_seg(self):
        del self._pred_sem_seg

    @property
    def seg_logits(self) -> PixelData | VolumeData:
        return self._seg_logits

    @seg_logits.setter
    def seg_logits(self, value: PixelData | VolumeData):
        self.set_field(value, '_seg_logits', dtype=SEG_TYPES)

    @seg_logits.deleter
    def seg_logits(self):
        del self._seg_logits
