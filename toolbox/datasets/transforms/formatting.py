"""Packing: a results dict -> ``dict(inputs=Tensor (C, H, W), data_samples=DataSample)``."""
import numpy as np
import torch
from mmcv.transforms import BaseTransform

from toolbox.registry import TRANSFORMS
from toolbox.structures import DataSample, InstanceData, PixelData


@TRANSFORMS.register_module()
class PackInputs(BaseTransform):
    """Pack the image as a (C, H, W) tensor (dtype kept; normalisation happens in the data
    preprocessor) and annotations into a :class:`DataSample`.

    Boxes with ``gt_ignore_flags`` go to ``ignored_instances``, the others to ``gt_instances``.
    ``gt_seg_map`` becomes ``gt_sem_seg`` (int64 (1, H, W)).
    """

    def __init__(self, meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                                  'flip', 'flip_direction', 'pad_shape')):
        self.meta_keys = meta_keys

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 2:
            img = img[..., None]
        inputs = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        sample = DataSample()
        if 'gt_bboxes' in results:
            ignore = results.get('gt_ignore_flags', np.zeros(len(results['gt_bboxes']), bool))
            for field, keep in (('gt_instances', ~ignore), ('ignored_instances', ignore)):
                instances = InstanceData()
                instances.bboxes = torch.from_numpy(results['gt_bboxes'][keep]).float()
                instances.labels = torch.from_numpy(results['gt_bboxes_labels'][keep]).long()
                setattr(sample, field, instances)
        if 'gt_seg_map' in results:
            sample.gt_sem_seg = PixelData(
                data=torch.from_numpy(np.ascontiguousarray(results['gt_seg_map'])[None]).long())
        meta = {k: results[k] for k in self.meta_keys if k in results}
        meta.setdefault('scale_factor', (1.0, 1.0))
        meta.setdefault('pad_shape', tuple(results['img'].shape[:2]))
        sample.set_metainfo(meta)
        return dict(inputs=inputs, data_samples=sample)
