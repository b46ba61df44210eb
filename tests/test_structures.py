"""Box geometry (``toolbox.structures.boxes``) and the ignore label, on hand-computed numbers.

Every box function is checked on numpy and torch, for not modifying its input, on empty and
batched (..., 4) inputs; ``boxes_to_original`` is checked on a hand case and as the inverse of
the real Resize + RandomFlip transforms.
"""
import inspect

import cv2
import numpy as np
import pytest
import torch
import torchvision

from toolbox.datasets import BaseSegDataset, CamVidDataset
from toolbox.datasets.transforms import (Expand, LoadAnnotations, PackInputs, Pad, RandomCrop,
                                         RandomFlip, Resize)
from toolbox.evaluation import IoUMetric, confusion_matrix
from toolbox.models.data_preprocessor import DataPreprocessor
from toolbox.structures import (IGNORE_INDEX, DataSample, box_areas, box_iou, boxes_to_original,
                                clip_boxes, flip_boxes, rescale_boxes, scale_boxes,
                                translate_boxes, voc_to_xyxy, xywh_to_xyxy, xyxy_to_xywh)
from toolbox_plugins.losses.cross_entropy import (BalancedSoftmaxLoss, CrossEntropyLoss,
                                                  cross_entropy)

BOX = [[10.0, 20.0, 30.0, 40.0]]


def _both(values):
    """The same float32 boxes as a numpy array and as a torch tensor."""
    return [np.array(values, np.float32), torch.tensor(values, dtype=torch.float32)]


def _np(x):
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# (function, extra arguments, input, expected output), all hand-computed
CASES = [
    (xywh_to_xyxy, (), BOX, [[10, 20, 40, 60]]),
    (xyxy_to_xywh, (), BOX, [[10, 20, 20, 20]]),
    (voc_to_xyxy, (), [[1, 2, 20, 10]], [[0, 1, 20, 10]]),
    (scale_boxes, ((2.0, 0.5),), BOX, [[20, 10, 60, 20]]),
    (scale_boxes, (3,), BOX, [[30, 60, 90, 120]]),
    (rescale_boxes, ((2.0, 0.5),), BOX, [[5, 40, 15, 80]]),
    (flip_boxes, ((50, 100), 'horizontal'), BOX, [[70, 20, 90, 40]]),
    (flip_boxes, ((50, 100), 'vertical'), BOX, [[10, 10, 30, 30]]),
    (flip_boxes, ((50, 100), 'diagonal'), BOX, [[70, 10, 90, 30]]),
    (flip_boxes, ((50, 100, 3), 'horizontal'), BOX, [[70, 20, 90, 40]]),  # (h, w, c) shape
    (clip_boxes, ((50, 100),), [[-5, 10, 120, 60], [110, 60, 130, 70]],
     [[0, 10, 100, 50], [100, 50, 100, 50]]),  # a box outside becomes degenerate, not removed
    (translate_boxes, ((3, -4),), BOX, [[13, 16, 33, 36]]),
    (box_areas, (), [[0, 0, 10, 5], [2, 2, 2, 8], [4, 4, 2, 8]], [50, 0, -8]),
]


@pytest.mark.parametrize('func, args, boxes, expected', CASES,
                         ids=[f'{c[0].__name__}-{k}' for k, c in enumerate(CASES)])
def test_box_function_on_hand_numbers_numpy_and_torch_without_touching_input(
        func, args, boxes, expected):
    for inp in _both(boxes):
        before = _np(inp).copy()
        out = func(inp, *args)
        assert type(out) is type(inp)
        assert out.dtype == inp.dtype  # float32 stays float32
        np.testing.assert_allclose(_np(out), np.array(expected, np.float32), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(_np(inp), before)  # input not modified in place
        assert out is not inp


@pytest.mark.parametrize('func, args, boxes, expected', CASES,
                         ids=[f'{c[0].__name__}-{k}' for k, c in enumerate(CASES)])
def test_box_function_on_batched_and_empty_boxes(func, args, boxes, expected):
    batched = np.stack([np.array(boxes, np.float32)] * 3)  # (3, N, 4)
    out = func(torch.from_numpy(batched), *args)
    np.testing.assert_allclose(out.numpy(), np.stack([np.array(expected, np.float32)] * 3),
                               atol=1e-6)
    empty = func(np.zeros((0, 4), np.float32), *args)
    assert empty.shape == ((0,) if func is box_areas else (0, 4))


def test_dtypes_lists_and_shapes():
    # float64 keeps its precision; ints and lists become float32; an empty list is (0, 4)
    exact = xywh_to_xyxy(np.array([[0.1, 0.2, 0.3, 0.4]]))
    assert exact.dtype == np.float64 and exact[0, 2] == 0.1 + 0.3
    assert xywh_to_xyxy([[1, 2, 3, 4]]).dtype == np.float32
    assert scale_boxes(torch.tensor([[1, 2, 3, 4]]), (1.5, 1.5)).tolist() == [[1.5, 3, 4.5, 6]]
    assert voc_to_xyxy([]).shape == (0, 4)
    with pytest.raises(ValueError, match=r'\(\.\.\., 4\)'):
        xywh_to_xyxy(np.zeros((2, 3)))
    with pytest.raises(ValueError, match='flip direction'):
        flip_boxes(np.zeros((1, 4)), (10, 10), 'sideways')
    with pytest.raises(ValueError, match='positive'):
        rescale_boxes(np.zeros((1, 4)), (0, 1))


def test_converters_invert_each_other_and_flip_twice_is_identity():
    rng = np.random.RandomState(0)
    xy = rng.uniform(0, 80, (20, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 20, (20, 2))], 1).astype(np.float32)
    for inp in (boxes, torch.from_numpy(boxes)):
        np.testing.assert_allclose(_np(xywh_to_xyxy(xyxy_to_xywh(inp))), boxes, atol=1e-5)
        np.testing.assert_allclose(_np(rescale_boxes(scale_boxes(inp, (0.3, 1.7)), (0.3, 1.7))),
                                   boxes, rtol=1e-6)
        for direction in ('horizontal', 'vertical', 'diagonal'):
            twice = flip_boxes(flip_boxes(inp, (120, 110), direction), (120, 110), direction)
            np.testing.assert_allclose(_np(twice), boxes, atol=1e-5)


def test_torch_functions_are_differentiable():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0]], requires_grad=True)
    flip_boxes(boxes, (50, 100), 'horizontal').sum().backward()
    # x1' = w - x2 and x2' = w - x1: d/dx = -1; y unchanged: d/dy = 1
    assert boxes.grad.tolist() == [[-1.0, 1.0, -1.0, 1.0]]
    boxes.grad = None
    box_areas(xywh_to_xyxy(boxes)).sum().backward()  # area = w * h of an xywh box
    assert boxes.grad.tolist() == [[0.0, 0.0, 40.0, 30.0]]


def test_box_iou_hand_numbers_degenerate_pairs_and_torchvision_parity():
    a = [[0, 0, 10, 10], [3, 3, 3, 3]]
    b = [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10], [3, 3, 3, 3]]
    expected = [[50 / 150, 0, 1, 0], [0, 0, 0, 0]]  # two equal points: empty union -> 0
    for x, y in zip(_both(a), _both(b)):
        np.testing.assert_allclose(_np(box_iou(x, y)), expected, atol=1e-7)
    rng = np.random.RandomState(1)
    xy = rng.uniform(0, 50, (2, 30, 2))
    boxes = torch.from_numpy(np.concatenate([xy, xy + rng.uniform(1, 30, (2, 30, 2))], -1))
    torch.testing.assert_close(box_iou(boxes[0], boxes[1]),
                               torchvision.ops.box_iou(boxes[0], boxes[1]))
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def test_boxes_to_original_hand_case_flip_scale_clip():
    # original 200 x 100 (w x h) resized by (0.5, 0.25) to 100 x 25, then flipped horizontally
    meta = dict(ori_shape=(100, 200), img_shape=(25, 100), scale_factor=(0.5, 0.25), flip=True,
                flip_direction='horizontal')
    pred = [[10, 5, 30, 20], [-2, -1, 10, 26]]
    # unflip in w=100: [70, 5, 90, 20] and [90, -1, 102, 26]; divide by (0.5, 0.25):
    # [140, 20, 180, 80] and [180, -4, 204, 104]; clip to 200 x 100: [180, 0, 200, 100]
    expected = [[140, 20, 180, 80], [180, 0, 200, 100]]
    for inp in _both(pred):
        before = _np(inp).copy()
        out = boxes_to_original(inp, meta)
        np.testing.assert_allclose(_np(out), expected, atol=1e-5)
        np.testing.assert_array_equal(_np(inp), before)
    vertical = dict(meta, flip_direction='vertical')
    # unflip in h=25: [10, 2, 30, 20] -> [10, 5, 30, 23]; divide -> [20, 20, 60, 92]
    np.testing.assert_allclose(boxes_to_original(np.array([[10., 2, 30, 20]]), vertical),
                               [[20, 20, 60, 92]])
    not_flipped = dict(meta, flip=False, flip_direction=None)
    np.testing.assert_allclose(boxes_to_original(np.array([[10., 2, 30, 20]]), not_flipped),
                               [[20, 8, 60, 80]])
    # a data sample works as well as its metainfo; no scale_factor means no resize
    sample = DataSample(metainfo=dict(ori_shape=(10, 10)))
    np.testing.assert_allclose(boxes_to_original(np.array([[-1., 2, 12, 8]]), sample),
                               [[0, 2, 10, 8]])
    with pytest.raises(KeyError, match='ori_shape'):
        boxes_to_original(np.zeros((1, 4)), dict(img_shape=(5, 5)))
    with pytest.raises(KeyError, match='img_shape'):
        boxes_to_original(np.zeros((1, 4)), dict(ori_shape=(5, 5), flip=True))


@pytest.mark.parametrize('direction', ['horizontal', 'vertical', 'diagonal'])
def test_boxes_to_original_inverts_resize_and_flip_transforms(direction):
    boxes = np.array([[4, 6, 50, 30], [0, 0, 80, 60], [33.5, 12.25, 40, 41]], np.float32)
    results = dict(img=np.zeros((60, 80, 3), np.uint8), img_shape=(60, 80), ori_shape=(60, 80),
                   gt_bboxes=boxes.copy(), gt_bboxes_labels=np.zeros(3, np.int64),
                   gt_ignore_flags=np.zeros(3, bool))
    results = Resize(scale=(200, 100), keep_ratio=False)(results)
    results = RandomFlip(prob=1.0, direction=direction)(results)
    packed = PackInputs()(results)['data_samples']
    assert packed.flip and packed.flip_direction == direction
    assert packed.img_shape == (100, 200) and packed.scale_factor == (2.5, 100 / 60)
    back = boxes_to_original(packed.gt_instances.bboxes, packed)
    torch.testing.assert_close(back, torch.from_numpy(boxes), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------ ignore label

def test_ignore_index_is_the_default_everywhere():
    assert IGNORE_INDEX == 255
    assert IoUMetric().ignore_index == IGNORE_INDEX
    assert inspect.signature(confusion_matrix).parameters['ignore_index'].default == IGNORE_INDEX
    assert Pad(size=(4, 4)).seg_pad_val == IGNORE_INDEX
    assert Expand().seg_pad_val == IGNORE_INDEX
    assert RandomCrop(4).ignore_index == IGNORE_INDEX
    assert DataPreprocessor().seg_pad_value == IGNORE_INDEX
    assert CrossEntropyLoss().ignore_index == IGNORE_INDEX
    assert BalancedSoftmaxLoss().ignore_index == IGNORE_INDEX
    assert inspect.signature(cross_entropy).parameters['ignore_index'].default == IGNORE_INDEX
    assert inspect.signature(BaseSegDataset).parameters['ignore_index'].default == IGNORE_INDEX
    camvid = inspect.getsource(CamVidDataset.__init__)
    assert 'IGNORE_INDEX' in camvid and '255' not in camvid
    # the default ignores: 2 of 4 labels ignored, the other 2 are [0 -> class 0, 1 -> class 1]
    loss = cross_entropy(torch.zeros(4, 3), torch.tensor([0, IGNORE_INDEX, 1, IGNORE_INDEX]))
    np.testing.assert_allclose(loss.numpy(), [np.log(3), 0, np.log(3), 0], rtol=1e-6)


def test_pad_fills_the_map_with_the_ignore_index():
    out = Pad(size=(3, 2))(dict(img=np.ones((1, 2, 3), np.uint8),
                                gt_seg_map=np.array([[1, 2]], np.int64)))
    assert out['gt_seg_map'].tolist() == [[1, 2, IGNORE_INDEX], [IGNORE_INDEX] * 3]


def test_reduce_zero_label_maps_zero_and_ignore_to_ignore(tmp_path):
    path = str(tmp_path / 'seg.png')
    cv2.imwrite(path, np.array([[0, 1, 255, 5]], np.uint8))
    out = LoadAnnotations(with_bbox=False, with_seg=True, reduce_zero_label=True)(
        dict(seg_map_path=path))
    assert out['gt_seg_map'].tolist() == [[IGNORE_INDEX, 0, IGNORE_INDEX, 4]]
