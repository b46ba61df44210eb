"""Instance masks in the detection data path (COCO segmentation -> ``gt_masks`` -> geometric
transforms -> ``gt_instances.masks``) and the Copy-Paste transform, on hand-made rectangles
whose masks and boxes are known to the pixel, a generated COCO dataset with polygons, and
coco128-seg when it is present."""
import json
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from pycocotools import mask as mask_utils

from toolbox.datasets import AnnotationError, CocoDataset
from toolbox.datasets.transforms import (Albu, CopyPaste, Expand, LoadAnnotations,
                                         MinIoURandomCrop, MixUp, Mosaic, PackInputs, Pad,
                                         RandomAffine, RandomChoiceResize, RandomCrop, RandomFlip,
                                         RandomResize, RandomSizeCrop, Resize)
from toolbox.datasets.transforms.copy_paste import mask_boxes
from toolbox.datasets.transforms.geometric import resize_masks
from toolbox.engine import load_config
from toolbox.registry import DATASETS, MODELS

from .helpers import assert_one_sgd_step_is_finite

from .conftest import REPO_ROOT, shared_data

RECTS = [(5, 10, 30, 40), (50, 0, 80, 25), (0, 45, 20, 60)]  # (x1, y1, x2, y2) in a 60x80 image


def rect_results(rects=RECTS, size=(60, 80), labels=None, ignore=None, seed=0):
    """Results with a random (h, w, 3) image and one rectangle mask per box (pixels x1..x2-1,
    y1..y2-1), so that each mask's tight box is its box."""
    h, w = size
    masks = np.zeros((len(rects), h, w), np.uint8)
    for k, (x1, y1, x2, y2) in enumerate(rects):
        masks[k, y1:y2, x1:x2] = 1
    return dict(img=np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8),
                img_shape=(h, w), img_path=f'rects{seed}.jpg',
                gt_bboxes=np.array(rects, np.float32).reshape(-1, 4),
                gt_bboxes_labels=np.array(labels if labels is not None else range(len(rects)),
                                          np.int64),
                gt_ignore_flags=np.array(ignore or [False] * len(rects), bool), gt_masks=masks)


def assert_masks_fit_boxes(results, atol=0.0):
    masks, boxes = results['gt_masks'], results['gt_bboxes']
    assert masks.shape == (len(boxes),) + results['img'].shape[:2]
    assert len(boxes) == len(results['gt_bboxes_labels']) == len(results['gt_ignore_flags'])
    np.testing.assert_allclose(mask_boxes(masks), boxes, atol=atol)


# ------------------------------------------------------------------------------- loading
def test_mask_boxes_are_tight_continuous_boxes_and_zero_for_empty_masks():
    masks = np.zeros((3, 6, 8), bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 5, 7] = True
    np.testing.assert_array_equal(mask_boxes(masks), [[2, 1, 5, 3], [7, 5, 8, 6], [0, 0, 0, 0]])
    assert mask_boxes(np.zeros((0, 6, 8), np.uint8)).shape == (0, 4)


def test_coco128_masks_equal_pycocotools_and_fit_their_boxes():
    from pycocotools.coco import COCO
    root = shared_data('coco128-seg')
    ann_file = root / 'annotations' / 'instances_train2017.json'
    dataset = DATASETS.build(dict(  # the registry's scope: our LoadAnnotations, not mmcv's
        type='CocoDataset', ann_file=str(ann_file), data_prefix=dict(img=str(root / 'train2017')),
        data_check=False, pipeline=[dict(type='LoadImageFromFile'),
                                    dict(type='LoadAnnotations', with_bbox=True, with_mask=True)]))
    first = dataset[0]
    coco = COCO(str(ann_file))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[first['img_id']]))
    assert first['gt_masks'].shape == (len(anns), 480, 640) == (8, 480, 640)
    assert first['gt_masks'].dtype == np.uint8
    for ann, mask in zip(anns, first['gt_masks']):  # the loader keeps the json's order
        np.testing.assert_array_equal(mask, coco.annToMask(ann))
    assert_masks_fit_boxes(first, atol=2.0)
    # every image: polygon extents are the json boxes, rasterised tips may lose a few pixels
    dataset.pipeline.transforms.pop(0)  # annotations only, no image decoding
    errors = np.concatenate([np.abs(mask_boxes(r['gt_masks']) - r['gt_bboxes']).max(1)
                             for r in (dataset[i] for i in range(len(dataset)))])
    assert len(errors) == 929 and errors.max() < 5 and (errors <= 2).mean() > 0.97


def _write_coco(path, annotations, width=8, height=6):
    path.write_text(json.dumps(dict(
        images=[dict(id=1, file_name='a.jpg', width=width, height=height)],
        annotations=annotations, categories=[dict(id=1, name='thing')])))
    return str(path)


def test_polygon_compressed_and_uncompressed_rle_masks_and_a_missing_one(tmp_path):
    truth = np.zeros((6, 8), np.uint8)
    truth[1:3, 2:5] = 1
    compressed = mask_utils.encode(np.asfortranarray(truth))
    compressed['counts'] = compressed['counts'].decode()  # as json stores it
    flat = truth.ravel(order='F')  # uncompressed RLE: run lengths, column-major, from 0s
    changes = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    box = [2, 1, 3, 2]
    ann_file = _write_coco(tmp_path / 'a.json', [
        dict(id=1, image_id=1, category_id=1, bbox=box, segmentation=compressed),
        dict(id=2, image_id=1, category_id=1, bbox=box, iscrowd=1,
             segmentation=dict(size=[6, 8], counts=counts)),
        dict(id=3, image_id=1, category_id=1, bbox=box, segmentation=[[2, 1, 5, 1, 5, 3, 2, 3]]),
        dict(id=4, image_id=1, category_id=1, bbox=box)])
    dataset = CocoDataset(ann_file=ann_file, data_check=False, pipeline=[])
    instances = dataset.get_data_info(0)['instances']
    assert instances[1]['mask'] == dict(size=[6, 8], counts=counts)  # raw, not decoded
    assert 'mask' not in instances[3]
    results = LoadAnnotations(with_mask=True)(dict(dataset.get_data_info(0),
                                                   instances=instances[:3]))
    np.testing.assert_array_equal(results['gt_masks'], np.stack([truth] * 3))
    assert results['gt_ignore_flags'].tolist() == [False, True, False]
    with pytest.raises(ValueError, match=r"a\.jpg: instance 3 \(annotations\[3\]\) has no mask; "
                                         r'with_mask=True needs COCO segmentation'):
        LoadAnnotations(with_mask=True)(dataset.get_data_info(0))
    with pytest.raises(ValueError, match=r'read as \(5, 8\).*says \(6, 8\)'):
        LoadAnnotations(with_mask=True)(dict(dataset.get_data_info(0), instances=instances[:3],
                                             ori_shape=(5, 8)))
    wrong_size = dict(instances[0], mask=dict(compressed, size=[8, 6]))
    with pytest.raises(ValueError, match=r'instance 0.*RLE size \[8, 6\] is not the image'):
        LoadAnnotations(with_mask=True)(dict(dataset.get_data_info(0), instances=[wrong_size]))
    for polygon in ([2, 1, 5, 1, 5, float('nan')], [2, 1, 5, 1, 1e9, 3]):  # before pycocotools
        broken = dict(instances[2], mask=[polygon])
        with pytest.raises(ValueError, match=r'instance 0 .*coordinates must be finite and '
                                             r'within one image size of the 8x6 image'):
            LoadAnnotations(with_mask=True)(dict(dataset.get_data_info(0), instances=[broken]))
    bad = _write_coco(tmp_path / 'b.json', [dict(id=1, image_id=1, category_id=1, bbox=box,
                                                 segmentation='polygon')])
    with pytest.raises(AnnotationError, match=r'annotations\[0\]: field segmentation must be'):
        CocoDataset(ann_file=bad, data_check=False, pipeline=[])


# --------------------------------------------------------------------- geometric transforms
@pytest.mark.parametrize('transform, shape', [
    (Resize(scale=(53, 37), keep_ratio=False), (37, 53)),
    (Resize(scale=(200, 150), keep_ratio=True), (150, 200)),
    (RandomResize(scale=(80, 60), ratio_range=(0.7, 0.7)), (42, 56)),
    (RandomChoiceResize(scales=[(131, 97)], keep_ratio=False), (97, 131))])
def test_resizes_move_masks_within_a_pixel_of_the_boxes(transform, shape):
    out = transform(rect_results())
    assert out['img'].shape[:2] == shape and out['gt_masks'].dtype == np.uint8
    assert_masks_fit_boxes(out, atol=1.0)
    empty = transform(rect_results(rects=[]))
    assert empty['gt_masks'].shape == (0,) + shape


def test_resize_of_more_masks_than_opencv_channels_equals_one_at_a_time():
    masks = (np.random.default_rng(0).random((300, 20, 30)) > 0.5).astype(np.uint8)
    resized = resize_masks(masks, 17, 41)
    assert resized.shape == (300, 41, 17) and resized.dtype == np.uint8
    one_by_one = np.stack([cv2.resize(m, (17, 41), interpolation=cv2.INTER_NEAREST_EXACT)
                           for m in masks])
    np.testing.assert_array_equal(resized, one_by_one)


@pytest.mark.parametrize('direction, axes', [('horizontal', (2,)), ('vertical', (1,)),
                                             ('diagonal', (1, 2))])
def test_flips_move_masks_with_the_boxes(direction, axes):
    results = rect_results()
    out = RandomFlip(prob=1.0, direction=direction)(rect_results())
    np.testing.assert_array_equal(out['gt_masks'], np.flip(results['gt_masks'], axes))
    assert_masks_fit_boxes(out)
    assert RandomFlip(prob=1.0, direction=direction)(rect_results(rects=[]))['gt_masks'].shape \
        == (0, 60, 80)


def test_random_size_crop_crops_masks_and_drops_them_with_their_boxes():
    dropped = 0
    for seed in range(20):
        np.random.seed(seed)
        out = RandomSizeCrop(min_size=20, max_size=40)(rect_results())
        assert_masks_fit_boxes(out)  # rectangles: the clipped box is the cropped mask's box
        dropped += 3 - len(out['gt_bboxes'])
    assert dropped > 0
    np.random.seed(0)
    assert RandomSizeCrop(20, 40)(rect_results(rects=[]))['gt_masks'].shape[0] == 0


def test_pad_fills_masks_with_zeros_and_segmentation_crop_crops_masks_without_boxes():
    out = Pad(size=(100, 70))(rect_results())
    assert out['gt_masks'].shape == (3, 70, 100) and out['gt_masks'][:, 60:].sum() == 0
    assert out['gt_masks'][:, :, 80:].sum() == 0
    assert_masks_fit_boxes(out)
    results = rect_results()
    masks_only = dict(img=results['img'], gt_masks=results['gt_masks'])
    np.random.seed(0)
    cropped = RandomCrop(crop_size=(30, 40))(masks_only)
    assert cropped['gt_masks'].shape == (3, 30, 40) and cropped['img'].shape[:2] == (30, 40)


def test_ssd_expand_and_crop_move_masks():
    for seed in range(10):
        np.random.seed(seed)
        expanded = Expand(mean=(0, 0, 0), ratio_range=(1.5, 2.0), prob=1.0)(rect_results())
        assert_masks_fit_boxes(expanded)
        cropped = MinIoURandomCrop()(rect_results())
        assert_masks_fit_boxes(cropped)


def test_mosaic_affine_and_mixup_refuse_instance_masks():
    results = rect_results()
    with pytest.raises(ValueError, match='Mosaic moves images and boxes only.*instance masks'):
        Mosaic(img_scale=(64, 64))(dict(results, mix_results=[rect_results()] * 3))
    with pytest.raises(ValueError, match='RandomAffine .*gt_masks'):
        RandomAffine()(rect_results())
    plain = {k: v for k, v in results.items() if k != 'gt_masks'}
    with pytest.raises(ValueError, match='MixUp .*gt_masks'):  # masks in the other sample
        MixUp(img_scale=(64, 64))(dict(plain, mix_results=[rect_results()]))


def test_albu_keeps_masks_of_the_boxes_it_keeps():
    out = Albu([dict(type='HorizontalFlip', p=1.0)])(rect_results())
    assert_masks_fit_boxes(out)
    cropped = Albu([dict(type='Crop', x_min=40, y_min=0, x_max=80, y_max=60)])(rect_results())
    assert cropped['gt_bboxes_labels'].tolist() == [1]  # only the second rectangle is inside
    assert_masks_fit_boxes(cropped)
    empty = Albu([dict(type='Crop', x_min=0, y_min=0, x_max=40, y_max=30)])(
        rect_results(rects=[]))
    assert empty['gt_masks'].shape == (0, 30, 40)


def test_pack_inputs_splits_masks_like_the_boxes():
    packed = PackInputs()(rect_results(ignore=[False, True, False]))['data_samples']
    assert packed.gt_instances.masks.dtype == torch.bool
    assert tuple(packed.gt_instances.masks.shape) == (2, 60, 80)
    assert tuple(packed.ignored_instances.masks.shape) == (1, 60, 80)
    assert packed.ignored_instances.masks[0, 0:25, 50:80].all()
    assert packed.ignored_instances.masks.sum() == 30 * 25
    assert 'masks' not in PackInputs()({k: v for k, v in rect_results().items()
                                        if k != 'gt_masks'})['data_samples'].gt_instances


# ----------------------------------------------------------------------------- CopyPaste
def copy_paste_pair():
    """A 64x64 destination and source whose rectangles overlap in known ways."""
    dst = rect_results(rects=[(4, 4, 14, 14),      # A: under the source's P -> dropped
                              (20, 20, 60, 40),    # B: left half under Q -> [40, 20, 60, 40]
                              (0, 50, 8, 64)],     # C: untouched
                       size=(64, 64), labels=[0, 1, 2], ignore=[False, False, True], seed=1)
    src = rect_results(rects=[(0, 0, 20, 20), (20, 10, 40, 50)], size=(64, 64), labels=[3, 4],
                       ignore=[False, True], seed=2)
    return dst, src


def paste_all(results):
    with mock.patch.object(CopyPaste, '_draw_selection', lambda self, n: np.arange(n)):
        return CopyPaste()(results)


def test_copy_paste_composites_pixels_drops_covered_objects_and_shrinks_half_covered_ones():
    dst, src = copy_paste_pair()
    out = paste_all(dict(dst, mix_results=[src]))
    composite = src['gt_masks'].any(0)
    np.testing.assert_array_equal(out['img'][composite], src['img'][composite])
    np.testing.assert_array_equal(out['img'][~composite], dst['img'][~composite])
    assert out['img'].dtype == np.uint8 and out['img_shape'] == (64, 64)
    np.testing.assert_array_equal(out['gt_bboxes'], [[40, 20, 60, 40], [0, 50, 8, 64],
                                                     [0, 0, 20, 20], [20, 10, 40, 50]])
    assert out['gt_bboxes_labels'].tolist() == [1, 2, 3, 4]
    assert out['gt_ignore_flags'].tolist() == [False, True, False, True]
    assert out['gt_masks'].dtype == np.uint8
    assert_masks_fit_boxes(out)
    np.testing.assert_array_equal(out['gt_masks'][2:], src['gt_masks'])
    assert out['gt_masks'][0].sum() == 20 * 20  # B keeps its uncovered right half


def test_copy_paste_keeps_barely_moved_or_large_objects_and_always_drops_empty_ones():
    # D (200 px) loses a 5 px strip: its box moves 5 <= 10 -> kept although 150 px <= 300;
    # E (200 px) loses 12 columns: moved 12 > 10 and 80 px <= 300 left -> dropped;
    # F (800 px) loses 20 columns: moved 20 > 10 but 400 px > 300 left -> kept
    dst = rect_results(rects=[(10, 0, 30, 10), (40, 0, 60, 10), (0, 30, 40, 50)],
                       size=(64, 64), seed=3)
    src = rect_results(rects=[(10, 0, 15, 10), (40, 0, 52, 10), (0, 30, 20, 50)],
                       size=(64, 64), labels=[5, 6, 7], seed=4)
    out = paste_all(dict(dst, mix_results=[src]))
    assert out['gt_bboxes_labels'].tolist() == [0, 2, 5, 6, 7]
    np.testing.assert_array_equal(out['gt_bboxes'][:2], [[15, 0, 30, 10], [20, 30, 40, 50]])
    # a fully covered object goes even when every threshold would keep it
    covered = rect_results(rects=[(10, 0, 15, 10)], size=(64, 64), seed=5)
    with mock.patch.object(CopyPaste, '_draw_selection', lambda self, n: np.arange(n)):
        kept_none = CopyPaste(bboxes_occluded_thr=1000, mask_occluded_thr=0)(
            dict(covered, mix_results=[src]))
    assert kept_none['gt_bboxes_labels'].tolist() == [5, 6, 7]


def test_copy_paste_draws_are_seeded_and_the_count_covers_zero_to_the_cap():
    dst, src = copy_paste_pair()

    def run(seed, transform=CopyPaste()):
        np.random.seed(seed)
        return transform(dict(dst, mix_results=[src]))

    first, again = run(7), run(7)
    for key in ('img', 'gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags', 'gt_masks'):
        np.testing.assert_array_equal(first[key], again[key])
    pasted = [int((run(seed)['gt_bboxes_labels'] >= 3).sum()) for seed in range(60)]
    assert set(pasted) == {0, 1, 2}  # uniform over [0, min(2, 100)]
    capped = [int((run(seed, CopyPaste(max_num_pasted=1))['gt_bboxes_labels'] >= 3).sum())
              for seed in range(30)]
    assert set(capped) == {0, 1}
    nothing = run(next(s for s, n in enumerate(pasted) if n == 0))
    np.testing.assert_array_equal(nothing['img'], dst['img'])
    assert nothing['gt_bboxes_labels'].tolist() == [0, 1, 2]


def test_copy_paste_crops_or_pads_a_source_of_another_size():
    dst = rect_results(rects=[(0, 0, 10, 10)], size=(64, 64), seed=6)
    # 48x80: columns >= 64 are cut (the third object entirely), rows 48..63 are padding
    src = rect_results(rects=[(30, 20, 40, 30), (50, 30, 75, 48), (66, 0, 80, 10)],
                       size=(48, 80), labels=[1, 2, 3], seed=7)
    out = paste_all(dict(dst, mix_results=[src]))
    np.testing.assert_array_equal(out['gt_bboxes'], [[0, 0, 10, 10], [30, 20, 40, 30],
                                                     [50, 30, 64, 48]])
    assert out['gt_bboxes_labels'].tolist() == [0, 1, 2]
    assert_masks_fit_boxes(out)
    np.testing.assert_array_equal(out['img'][30:48, 50:64], src['img'][30:48, 50:64])
    np.testing.assert_array_equal(out['img'][48:], dst['img'][48:])


def test_copy_paste_needs_masks_and_a_source():
    dst, src = copy_paste_pair()
    no_masks = {k: v for k, v in dst.items() if k != 'gt_masks'}
    with pytest.raises(ValueError, match=r'CopyPaste: the destination .* has no gt_masks'):
        CopyPaste()(dict(no_masks, mix_results=[src]))
    with pytest.raises(ValueError, match=r'CopyPaste: the source .* has no gt_masks'):
        CopyPaste()(dict(dst, mix_results=[no_masks]))
    with pytest.raises(ValueError, match='run it inside MultiImageMixDataset'):
        CopyPaste()(dst)
    with pytest.raises(ValueError, match='does not update segmentation maps'):
        CopyPaste()(dict(dst, gt_seg_map=np.zeros((64, 64)), mix_results=[src]))
    assert repr(CopyPaste(50)) == ('CopyPaste(max_num_pasted=50, bboxes_occluded_thr=10, '
                                   'mask_occluded_thr=300)')
    np.random.seed(0)
    assert [len(CopyPaste().get_indexes(range(5))) for _ in range(3)] == [1, 1, 1]


# ------------------------------------------------- a generated COCO dataset with polygons
@pytest.fixture(scope='module')
def polygon_coco(tmp_path_factory):
    """8 images 96x96, 2-3 objects each (rectangles and triangles of 3 classes, drawn in
    their class's colour), as COCO json with polygon segmentations."""
    root = tmp_path_factory.mktemp('polygons')
    (root / 'images').mkdir()
    rng = np.random.default_rng(0)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images, annotations = [], []
    for image_id in range(1, 9):
        img = np.full((96, 96, 3), 60, np.uint8)
        for _ in range(int(rng.integers(2, 4))):
            label = int(rng.integers(0, 3))
            x, y = rng.integers(0, 60, 2)
            w, h = rng.integers(12, 36, 2)
            points = [[x, y], [x + w, y], [x + w, y + h]] + ([[x, y + h]] if label else [])
            cv2.fillPoly(img, [np.array(points, np.int32)], colours[label])
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                    category_id=label + 1, bbox=[int(x), int(y), int(w), int(h)],
                                    segmentation=[[int(v) for p in points for v in p]]))
        cv2.imwrite(str(root / 'images' / f'{image_id}.png'), img)
        images.append(dict(id=image_id, file_name=f'{image_id}.png', width=96, height=96))
    categories = [dict(id=k + 1, name=n) for k, n in enumerate(('triangle', 'box', 'square'))]
    (root / 'train.json').write_text(json.dumps(dict(images=images, annotations=annotations,
                                                     categories=categories)))
    return root


def lsj_copy_paste_dataset(root, size=64):
    inner = dict(type='CocoDataset', data_root=str(root), ann_file='train.json',
                 data_prefix=dict(img='images/'), data_check=False,
                 filter_cfg=dict(filter_empty_gt=True), pipeline=[
                     dict(type='LoadImageFromFile'),
                     dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                     dict(type='RandomResize', scale=(size, size), ratio_range=(0.8, 1.25)),
                     dict(type='RandomSizeCrop', min_size=size, max_size=size),
                     dict(type='RandomFlip', prob=0.5), dict(type='Pad', size=(size, size))])
    return DATASETS.build(dict(type='MultiImageMixDataset', dataset=inner,
                               pipeline=[dict(type='CopyPaste'), dict(type='PackInputs')]))


def test_copy_paste_in_the_mix_wrapper_packs_masks_that_fit_the_image(polygon_coco):
    dataset = lsj_copy_paste_dataset(polygon_coco)
    assert len(dataset) == 8
    for idx in range(4):
        np.random.seed(idx)
        packed = dataset[idx]
        gt = packed['data_samples'].gt_instances
        assert tuple(packed['inputs'].shape) == (3, 64, 64)
        assert gt.masks.dtype == torch.bool and tuple(gt.masks.shape) == (len(gt), 64, 64)
        assert len(gt) == len(gt.bboxes) == len(gt.labels) > 0
        assert gt.bboxes.min() >= 0 and gt.bboxes.max() <= 64
        # every mask lies inside its box (kept objects: the tight box; pasted: their box)
        tight = torch.from_numpy(mask_boxes(gt.masks.numpy()))
        inside = gt.masks.flatten(1).any(1)
        assert ((tight[inside, :2] >= gt.bboxes[inside, :2] - 1).all() and
                (tight[inside, 2:] <= gt.bboxes[inside, 2:] + 1).all())


def test_retinanet_train_step_on_batches_packed_with_masks(polygon_coco):
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'))
    dataset = lsj_copy_paste_dataset(polygon_coco)
    np.random.seed(0)
    torch.manual_seed(0)
    batch = pseudo_collate([dataset[i] for i in range(2)])
    assert all('masks' in s.gt_instances for s in batch['data_samples'])
    model = MODELS.build(cfg.model)
    model.train()
    processed = model.data_preprocessor(batch, training=True)
    assert tuple(processed['data_samples'][0].gt_instances.masks.shape[1:]) == (64, 64)
    assert_one_sgd_step_is_finite(model, batch)


def test_the_coco128_copy_paste_config_builds_its_dataset_and_yields_a_sample():
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_320_copypaste_coco128.py'))
    dataset_cfg = cfg.train_dataloader.dataset
    assert dataset_cfg.type == 'MultiImageMixDataset'
    assert [t['type'] for t in dataset_cfg.pipeline] == ['CopyPaste', 'PackInputs']
    dataset_cfg.dataset.data_root = str(shared_data('coco128-seg'))
    dataset = DATASETS.build(dataset_cfg)
    assert len(dataset) == 126 and len(dataset.metainfo['classes']) == 80  # 2 without objects
    np.random.seed(0)
    packed = dataset[0]
    gt = packed['data_samples'].gt_instances
    assert tuple(packed['inputs'].shape) == (3, 320, 320) and len(gt) > 0
    assert tuple(gt.masks.shape) == (len(gt), 320, 320) and gt.masks.dtype == torch.bool
    assert gt.bboxes.min() >= 0 and gt.bboxes.max() <= 320 and gt.labels.max() < 80
