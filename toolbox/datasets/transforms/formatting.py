"""Packing: a results dict -> ``dict(inputs=Tensor, data_samples=DataSample)``; images become
(C, H, W) tensors, volumes (C, D, H, W)."""
import numpy as np
import torch
from mmcv.transforms import BaseTransform

from toolbox.registry import TRANSFORMS
from toolbox.structures import DataSample, InstanceData, PixelData, VolumeData


@TRANSFORMS.register_module()
class PackInputs(BaseTransform):
    """Pack the image or volume as a tensor (dtype kept; normalisation happens in the data
    preprocessor) and annotations into a :class:`DataSample`.

    * An image ``img`` (H, W, C) or (H, W), channel-last as OpenCV loads it, becomes ``inputs``
      (C, H, W); ``gt_seg_map`` (H, W) becomes ``gt_sem_seg`` :class:`PixelData` int64
      (1, H, W). Boxes with ``gt_ignore_flags`` go to ``ignored_instances``, the others to
      ``gt_instances``; instance masks ``gt_masks`` (N, H, W), when present, go with their
      boxes as ``masks``, a bool tensor (N_kept, H, W) in the frame of the packed image (not
      padded to the batch shape by the data preprocessor; the box detectors do not read
      them). ``scale_factor`` defaults to (1.0, 1.0).
    * A volume (``results['spatial_dims'] == 3``; ``img`` float32 (C, D, H, W), channel-first)
      is packed as it is: ``inputs`` (C, D, H, W); ``gt_seg_map`` (D, H, W) becomes
      ``gt_sem_seg`` :class:`VolumeData` int64 (1, D, H, W).

    ``pad_shape`` defaults to the spatial shape of ``img``. A *list* of results dicts (a
    multi-sample crop such as ``RandCropByPosNegLabel(num_samples > 1)``) gives a list of
    packed dicts, one training sample each.

    Args:
        meta_keys: results keys copied into the sample's metainfo when present; the default
            covers images (``img_id``, ``scale_factor``, ``flip``, ...) and volumes
            (``seg_map_path``, ``affine``, ``spacing``, ``ori_spacing``, ``flip_axes``).
    """

    def __init__(self, meta_keys=('img_id', 'img_path', 'seg_map_path', 'ori_shape', 'img_shape',
                                  'scale_factor', 'flip', 'flip_direction', 'pad_shape',
                                  'affine', 'spacing', 'ori_spacing', 'flip_axes')):
        self.meta_keys = meta_keys

    def __call__(self, results):
        if isinstance(results, (list, tuple)):
            return [self.transform(one) for one in results]
        return self.transform(results)

    def transform(self, results: dict) -> dict:
        img = results['img']
        volume = results.get('spatial_dims') == 3
        if volume:
            if img.ndim != 4:
                raise ValueError(f"PackInputs: {results.get('img_path')}: a volume "
                                 f'(spatial_dims=3) must be (C, D, H, W), got shape {img.shape}')
            inputs = torch.from_numpy(np.ascontiguousarray(img))
            spatial = tuple(img.shape[1:])
        else:
            if img.ndim == 2:
                img = img[..., None]
            inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
            spatial = tuple(img.shape[:2])
        sample = DataSample()
        if 'gt_bboxes' in results:
            ignore = results.get('gt_ignore_flags', np.zeros(len(results['gt_bboxes']), bool))
            if 'gt_masks' in results and len(results['gt_masks']) != len(results['gt_bboxes']):
                raise ValueError(f"PackInputs: {results.get('img_path')}: "
                                 f"{len(results['gt_masks'])} masks for "
                                 f"{len(results['gt_bboxes'])} boxes")
            for field, keep in (('gt_instances', ~ignore), ('ignored_instances', ignore)):
                instances = InstanceData()
                instances.bboxes = torch.from_numpy(results['gt_bboxes'][keep]).float()
                instances.labels = torch.from_numpy(results['gt_bboxes_labels'][keep]).long()
                if 'gt_masks' in results:
                    instances.masks = torch.from_numpy(
                        np.ascontiguousarray(results['gt_masks'][keep])).bool()
                setattr(sample, field, instances)
        if 'gt_seg_map' in results:
            seg = torch.from_numpy(np.ascontiguousarray(results['gt_seg_map'])[None]).long()
            sample.gt_sem_seg = VolumeData(data=seg) if volume else PixelData(data=seg)
        meta = {k: results[k] for k in self.meta_keys if k in results}
        if not volume:
            meta.setdefault('scale_factor', (1.0, 1.0))
        meta.setdefault('pad_shape', spatial)
        sample.set_metainfo(meta)
        return dict(inputs=inputs, data_samples=sample)
