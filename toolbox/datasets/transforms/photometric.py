"""Photometric augmentation and the albumentations bridge.

:class:`Albu` runs an albumentations pipeline with boxes, labels, ignore flags and the
segmentation map passed together, so that geometric albumentations transforms keep them in sync.
"""
import os

import cv2
import numpy as np
from mmcv.transforms import BaseTransform

from toolbox.registry import TRANSFORMS

os.environ.setdefault('NO_ALBUMENTATIONS_UPDATE', '1')  # albumentations goes online at import


@TRANSFORMS.register_module()
class PhotoMetricDistortion(BaseTransform):
    """SSD-style colour jitter on a BGR image, each step with probability 0.5:
    brightness (+-``brightness_delta``), contrast (``contrast_range``, before or after the HSV
    steps at random), saturation (``saturation_range``) and hue (+-``hue_delta`` degrees on
    OpenCV's 0..180 hue scale). Output is float32 in [0, 255]."""

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta=18):
        self.brightness_delta = brightness_delta
        self.contrast_range = contrast_range
        self.saturation_range = saturation_range
        self.hue_delta = hue_delta

    def transform(self, results: dict) -> dict:
        img = results['img'].astype(np.float32)
        rng = np.random
        if rng.rand() < 0.5:
            img += rng.uniform(-self.brightness_delta, self.brightness_delta)
        contrast_first = rng.rand() < 0.5
        if contrast_first and rng.rand() < 0.5:
            img *= rng.uniform(*self.contrast_range)
        do_sat, do_hue = rng.rand() < 0.5, rng.rand() < 0.5
        if do_sat or do_hue:
            hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8),
                               cv2.COLOR_BGR2HSV).astype(np.float32)
            if do_sat:
                hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*self.saturation_range), 0, 255)
            if do_hue:
                hsv[..., 0] = (hsv[..., 0] + rng.uniform(-self.hue_delta, self.hue_delta)) % 180
            img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
        if not contrast_first and rng.rand() < 0.5:
            img *= rng.uniform(*self.contrast_range)
        results['img'] = np.clip(img, 0, 255)
        return results


def _build_albu(cfg):
    import albumentations as A
    cfg = dict(cfg)
    name = cfg.pop('type')
    if not hasattr(A, name):
        raise KeyError(f'albumentations has no transform named {name!r}')
    if 'transforms' in cfg:
        cfg['transforms'] = [_build_albu(t) for t in cfg['transforms']]
    return getattr(A, name)(**cfg)


@TRANSFORMS.register_module()
class Albu(BaseTransform):
    """Apply albumentations transforms, keeping boxes, labels, ignore flags, instance masks
    and the segmentation map in sync.

    Args:
        transforms: list of dicts ``dict(type='<albumentations class>', **kwargs)``.
        min_visibility: boxes keeping less than this fraction of their area after a crop are
            dropped together with their label and flag.

    Boxes go to albumentations as ``pascal_voc`` (absolute ``xyxy``), which is our convention.
    Labels stay int64 arrays. ``gt_masks`` (N, H, W) go as albumentations ``masks`` and are
    kept for the boxes albumentations keeps (matched by index).
    """

    def __init__(self, transforms, min_visibility: float = 0.0):
        import albumentations as A
        self.transforms_cfg = transforms
        self.pipeline = A.Compose(
            [_build_albu(t) for t in transforms],
            bbox_params=A.BboxParams(
                format='pascal_voc', label_fields=['labels', 'ignore_flags', 'instance_index'],
                min_visibility=min_visibility, clip=True))

    def transform(self, results: dict) -> dict:
        img = results['img']
        was_float = img.dtype != np.uint8
        kwargs = dict(image=np.clip(img, 0, 255).astype(np.uint8) if was_float else img)
        has_boxes = 'gt_bboxes' in results
        boxes = results.get('gt_bboxes', np.zeros((0, 4), np.float32))
        kwargs.update(bboxes=boxes, labels=results.get('gt_bboxes_labels',
                                                       np.zeros(0, np.int64)),
                      ignore_flags=results.get('gt_ignore_flags', np.zeros(0, bool)),
                      instance_index=np.arange(len(boxes)))
        masks = results.get('gt_masks')
        if masks is not None and len(masks):  # albumentations cannot stack zero masks
            kwargs['masks'] = masks
        if 'gt_seg_map' in results:
            kwargs['mask'] = results['gt_seg_map']
        # albumentations seeds an unseeded Compose from OS entropy, so a run would not repeat
        # under the same seed: draw its seed from numpy's generator, which the Runner seeds
        # (and mmengine's worker_init_fn seeds per data-loader worker)
        self.pipeline.set_random_seed(int(np.random.randint(2 ** 31)))
        out = self.pipeline(**kwargs)
        results['img'] = out['image']
        results['img_shape'] = out['image'].shape[:2]
        if has_boxes:
            results['gt_bboxes'] = np.asarray(out['bboxes'], np.float32).reshape(-1, 4)
            results['gt_bboxes_labels'] = np.asarray(out['labels'], np.int64).reshape(-1)
            results['gt_ignore_flags'] = np.asarray(out['ignore_flags'], bool).reshape(-1)
        if masks is not None and not len(masks):
            results['gt_masks'] = np.zeros((0,) + out['image'].shape[:2], masks.dtype)
        elif masks is not None:
            moved = np.asarray(out['masks'])
            if has_boxes:  # the masks of the boxes albumentations kept, in their order
                moved = moved[np.asarray(out['instance_index'], np.int64).reshape(-1)]
            results['gt_masks'] = np.ascontiguousarray(moved)
        if 'gt_seg_map' in results:
            results['gt_seg_map'] = out['mask']
        return results
