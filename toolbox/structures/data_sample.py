"""Data samples: the per-image container passed between dataset, model and metric.

Built on ``mmengine.structures`` as OpenMMLab users expect. Fields:

* ``gt_instances`` / ``pred_instances`` (:class:`InstanceData`): ``bboxes`` float32 (N, 4) in
  ``xyxy`` absolute pixels, 0-based, in the frame of the *current* image (predictions are
  rescaled to the original image by the detector); ``labels`` int64 (N,), 0-based contiguous
  class indices; ``scores`` float32 (N,) for predictions.
* ``ignored_instances`` (:class:`InstanceData`): boxes marked ``difficult``/``iscrowd``.
* ``gt_sem_seg`` / ``pred_sem_seg`` (:class:`PixelData`): ``data`` int64 (1, H, W) class map;
  ground-truth pixels equal to :data:`IGNORE_INDEX` (255) count in no loss and no metric.
* metainfo: ``img_id``, ``img_path``, ``ori_shape`` (h, w), ``img_shape`` (h, w) after resize,
  ``scale_factor`` (w_scale, h_scale), ``flip``, ``flip_direction``, ``pad_shape``,
  ``batch_input_shape``.
"""
from mmengine.structures import BaseDataElement, InstanceData, PixelData

#: Segmentation label of pixels that count nowhere (object boundaries, void, padding). The
#: default of every ``ignore_index`` / ``seg_pad_val`` in the toolbox; 255 is the VOC / mmseg
#: convention and fits a uint8 PNG.
IGNORE_INDEX = 255


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
    def gt_sem_seg(self) -> PixelData:
        return self._gt_sem_seg

    @gt_sem_seg.setter
    def gt_sem_seg(self, value: PixelData):
        self.set_field(value, '_gt_sem_seg', dtype=PixelData)

    @gt_sem_seg.deleter
    def gt_sem_seg(self):
        del self._gt_sem_seg

    @property
    def pred_sem_seg(self) -> PixelData:
        return self._pred_sem_seg

    @pred_sem_seg.setter
    def pred_sem_seg(self, value: PixelData):
        self.set_field(value, '_pred_sem_seg', dtype=PixelData)

    @pred_sem_seg.deleter
    def pred_sem_seg(self):
        del self._pred_sem_seg
