"""Batch data preprocessor: move to device, BGR->RGB, normalise, pad into one batch tensor
(images (B, C, H, W) and volumes (B, C, D, H, W))."""
import math

import torch
import torch.nn.functional as F
from mmengine.model import ImgDataPreprocessor
from mmengine.utils import is_seq_of

from toolbox.registry import MODELS
from toolbox.structures import IGNORE_INDEX


@MODELS.register_module()
class DataPreprocessor(ImgDataPreprocessor):
    """Normalise and pad a list of (C, H, W) images into a (B, C, H_pad, W_pad) float tensor,
    or a list of (C, D, H, W) volumes into a (B, C, D_pad, H_pad, W_pad) one.

    Padding goes to the end of every spatial axis (bottom/right for images), so box
    coordinates and voxel indices are unchanged; every spatial size is the batch maximum
    rounded up to a multiple of ``pad_size_divisor``. Each data sample gets
    ``batch_input_shape`` and ``pad_shape`` ((h, w) or (D, H, W)) in its metainfo;
    ``gt_sem_seg`` maps that moved with the input (of the sample's ``img_shape``, or of the
    input's size after a padding transform) are padded with ``seg_pad_value`` (the ignore
    index) to the batch shape, maps in the original frame (loaded after a test-time resize)
    are left alone.

    Images go through mmengine's ``ImgDataPreprocessor`` (BGR->RGB, normalise, pad the last
    two axes). Volumes (5-D batch: a list of 4-D tensors or one 5-D tensor) are handled here:
    cast to float, optional per-channel ``(x - mean) / std`` (usually ``None``: volume intensity
    is normalised in the pipeline), end-padding with ``pad_value``.

    Args:
        mean, std: per-channel statistics in the channel order *after* ``bgr_to_rgb``; any
            number of channels (1 or 3 for images as in mmengine, C for volumes), or ``None``.
        bgr_to_rgb: images are loaded as BGR by OpenCV; ImageNet statistics are RGB. Images
            only: a volume batch with ``bgr_to_rgb=True`` raises ``ValueError``.
        pad_size_divisor: pad every spatial size up to a multiple of this (e.g. 32 for an FPN,
            16 for a UNETR with 16^3 patches).
        pad_value: value of padded image pixels / volume voxels (after normalisation).
        seg_pad_value: value of padded segmentation pixels (``IGNORE_INDEX``, 255).
        channels_last: return image batches in ``torch.channels_last`` (NHWC) memory order
            (same shape and values; see :mod:`toolbox.engine.precision`).
    """

    def __init__(self, mean=None, std=None, bgr_to_rgb=False, pad_size_divisor=1, pad_value=0,
                 seg_pad_value=IGNORE_INDEX, non_blocking=False, channels_last=False):
        if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std)):
            raise ValueError(f'mean and std must both be None or have the same length, got '
                             f'mean={mean!r}, std={std!r}')
        mmengine_stats = mean is not None and len(mean) in (1, 3)
        super().__init__(mean=mean if mmengine_stats else None,
                         std=std if mmengine_stats else None, pad_size_divisor=pad_size_divisor,
                         pad_value=pad_value, bgr_to_rgb=bgr_to_rgb, non_blocking=non_blocking)
        if mean is not None and not mmengine_stats:  # C != 1, 3 channels: same buffers
            self._enable_normalize = True
            self.register_buffer('mean', torch.tensor(mean).view(-1, 1, 1), False)
            self.register_buffer('std', torch.tensor(std).view(-1, 1, 1), False)
        self.seg_pad_value = seg_pad_value
        self.channels_last = channels_last

    def forward(self, data: dict, training: bool = False) -> dict:
        inputs = data['inputs']
        volume = (is_seq_of(inputs, torch.Tensor) and inputs[0].dim() == 4) or \
            (isinstance(inputs, torch.Tensor) and inputs.dim() == 5)
        # spatial size of each input before batching (a map of that size moved with it)
        input_shapes = [tuple(one.shape[1:]) for one in inputs]
        if volume:
            data = self.cast_data(data)
            data['inputs'] = self._stack_volumes(data['inputs'])
            data.setdefault('data_samples', None)
        else:
            data = super().forward(data, training)
            if self.channels_last:
                data['inputs'] = data['inputs'].contiguous(memory_format=torch.channels_last)
        inputs, data_samples = data['inputs'], data.get('data_samples')
        if data_samples is None:
            return data
        batch_shape = tuple(inputs.shape[2:])
        for sample, input_shape in zip(data_samples, input_shapes):
            sample.set_metainfo(dict(batch_input_shape=batch_shape,
                                     pad_shape=batch_shape))
            if 'gt_sem_seg' in sample:
                sample.gt_sem_seg = self._pad_seg(sample.gt_sem_seg, sample, input_shape,
                                                  batch_shape)
        return dict(inputs=inputs, data_samples=data_samples)

    def _stack_volumes(self, volumes) -> torch.Tensor:
        """List of (C, D_i, H_i, W_i) (or a (B, C, D, H, W) tensor) -> float
        (B, C, D_pad, H_pad, W_pad), normalised and end-padded with ``pad_value``."""
        if self._channel_conversion:
            raise ValueError('DataPreprocessor: bgr_to_rgb/rgb_to_bgr apply to images only, '
                             'got a batch of volumes (C, D, H, W)')
        volumes = list(volumes)
        channels = {v.shape[0] for v in volumes}
        if len(channels) != 1:
            raise ValueError(f'DataPreprocessor: volumes of one batch must have the same number '
                             f'of channels, got {sorted(channels)}')
        div = self.pad_size_divisor
        target = [math.ceil(max(v.shape[1 + a] for v in volumes) / div) * div for a in range(3)]
        if self._enable_normalize and self.mean.shape[0] not in (1, volumes[0].shape[0]):
            raise ValueError(f'DataPreprocessor: mean has {self.mean.shape[0]} values but the '
                             f'volumes have {volumes[0].shape[0]} channels')
        batch = volumes[0].new_full((len(volumes), volumes[0].shape[0], *target),
                                    self.pad_value, dtype=torch.float32)
        for k, vol in enumerate(volumes):
            vol = vol.float()
            if self._enable_normalize:  # before padding: padded voxels stay pad_value
                vol = (vol - self.mean.view(-1, 1, 1, 1)) / self.std.view(-1, 1, 1, 1)
            batch[(k, slice(None)) + tuple(slice(0, s) for s in vol.shape[1:])] = vol
        return batch

    def _pad_seg(self, seg, sample, input_shape: tuple, batch_shape: tuple):
        """End-pad a ``gt_sem_seg`` (1, *spatial) that moved with the input to ``batch_shape``
        with ``seg_pad_value``.

        A map that moved with the input has the sample's ``img_shape`` or, after a padding
        step of the pipeline, the input's own spatial size ``input_shape``; a map loaded after
        the test-time Resize stays in the original frame and is left alone.
        """
        data = seg.data
        spatial = tuple(data.shape[1:])
        img_shape = tuple(sample.metainfo.get('img_shape', spatial))
        if spatial not in (img_shape, input_shape) or spatial == batch_shape:
            return seg
        pad = []
        for size, target in zip(reversed(spatial), reversed(batch_shape)):
            pad += [0, target - size]
        # PixelData / VolumeData cannot change their size: a new element of the same type
        return type(seg)(data=F.pad(data, pad, value=self.seg_pad_value), metainfo=seg.metainfo)
