"""The batch data preprocessor: normalisation, padding, metainfo and segmentation maps."""
import torch

from toolbox.registry import MODELS
from toolbox.structures import DataSample, PixelData


def _sample(img_shape, seg_shape):
    sample = DataSample(metainfo=dict(img_shape=img_shape))
    sample.gt_sem_seg = PixelData(data=torch.ones(1, *seg_shape, dtype=torch.long))
    return sample


def test_normalise_pad_and_segmentation_maps():
    pre = MODELS.build(dict(type='DataPreprocessor', mean=[10., 20., 30.], std=[2., 2., 2.],
                            bgr_to_rgb=True, pad_size_divisor=8, seg_pad_value=255))
    images = [torch.full((3, 5, 6), 40, dtype=torch.uint8), torch.zeros(3, 9, 4, dtype=torch.uint8)]
    samples = [_sample((5, 6), (5, 6)),    # map moved with the image: padded
               _sample((9, 4), (18, 8))]   # map in the original frame (test-time resize): kept
    out = pre(dict(inputs=images, data_samples=samples), training=False)
    inputs = out['inputs']
    assert inputs.shape == (2, 3, 16, 8)
    # BGR->RGB: channel 0 of the output is the input's channel 2 (value 40) minus mean 10
    assert inputs[0, 0, 0, 0].item() == (40 - 10) / 2
    assert inputs[0, :, 5:, :].eq(0).all()  # padding value after normalisation
    seg0, seg1 = (s.gt_sem_seg.data for s in out['data_samples'])
    assert seg0.shape == (1, 16, 8) and seg0[0, 5:].eq(255).all() and seg0[0, :5, :6].eq(1).all()
    assert seg1.shape == (1, 18, 8) and seg1.eq(1).all()
    assert out['data_samples'][0].batch_input_shape == (16, 8)
