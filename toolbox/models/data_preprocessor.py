"""Batch data preprocessor: move to device, BGR->RGB, normalise, pad into one batch tensor."""
import torch.nn.functional as F
from mmengine.model import ImgDataPreprocessor
from mmengine.structures import PixelData

from toolbox.registry import MODELS
from toolbox.structures import IGNORE_INDEX


@MODELS.register_module()
class DataPreprocessor(ImgDataPreprocessor):
    """Normalise and pad a list of (C, H, W) images into a (B, C, H_pad, W_pad) float tensor.

    Padding goes to the bottom/right, so box coordinates are unchanged. Each data sample gets
    ``batch_input_shape`` and ``pad_shape`` (h, w) in its metainfo; ``gt_sem_seg`` maps of the
    image's size are padded with ``seg_pad_value`` (the ignore index) to the batch shape, maps in
    the original frame (loaded after a test-time resize) are left alone.

    Args:
        mean, std: per-channel statistics in the channel order *after* ``bgr_to_rgb``.
        bgr_to_rgb: images are loaded as BGR by OpenCV; ImageNet statistics are RGB.
        pad_size_divisor: pad H and W up to a multiple of this (e.g. 32 for an FPN).
        pad_value: value of padded image pixels (after normalisation).
        seg_pad_value: value of padded segmentation pixels (``IGNORE_INDEX``, 255).
    """

    def __init__(self, mean=None, std=None, bgr_to_rgb=False, pad_size_divisor=1, pad_value=0,
                 seg_pad_value=IGNORE_INDEX, non_blocking=False):
        super().__init__(mean=mean, std=std, pad_size_divisor=pad_size_divisor,
                         pad_value=pad_value, bgr_to_rgb=bgr_to_rgb, non_blocking=non_blocking)
        self.seg_pad_value = seg_pad_value

    def forward(self, data: dict, training: bool = False) -> dict:
        data = super().forward(data, training)
        inputs, data_samples = data['inputs'], data.get('data_samples')
        if data_samples is None:
            return data
        batch_shape = tuple(inputs.shape[-2:])
        for sample in data_samples:
            sample.set_metainfo(dict(batch_input_shape=batch_shape,
                                     pad_shape=batch_shape))
            # a map loaded after the test-time Resize stays in the original frame: only a map
            # that moved with the image (same size as it) is padded like the image
            if 'gt_sem_seg' in sample and \
                    tuple(sample.gt_sem_seg.data.shape[-2:]) == tuple(sample.img_shape):
                seg = sample.gt_sem_seg.data
                pad_h, pad_w = batch_shape[0] - seg.shape[-2], batch_shape[1] - seg.shape[-1]
                if pad_h or pad_w:
                    sample.gt_sem_seg = PixelData(  # PixelData cannot change its size
                        data=F.pad(seg, (0, pad_w, 0, pad_h), value=self.seg_pad_value),
                        metainfo=sample.gt_sem_seg.metainfo)
        return dict(inputs=inputs, data_samples=data_samples)

