"""Detection datasets (COCO json, Pascal VOC xml) and the transforms that move boxes."""
import json

import numpy as np
import pytest
import torch

from toolbox.datasets import AnnotationError, CocoDataset, VOCDataset
from toolbox.datasets.transforms import (Albu, LoadAnnotations, PackInputs, Pad, RandomFlip,
                                         Resize)

from .conftest import shared_data

BCCD_CLASSES = ('RBC', 'WBC', 'Platelets')


def _write_coco(path, annotations, images=None, categories=None):
    coco = dict(images=images or [dict(id=1, file_name='a.jpg', width=100, height=80),
                                  dict(id=2, file_name='b.jpg', width=50, height=50)],
                annotations=annotations,
                categories=categories or [dict(id=3, name='cat'), dict(id=1, name='dog')])
    path.write_text(json.dumps(coco))
    return str(path)


def test_coco_converts_xywh_sorts_category_ids_and_keeps_crowd_as_ignored(tmp_path):
    ann_file = _write_coco(tmp_path / 'a.json', [
        dict(id=1, image_id=1, bbox=[10, 20, 30, 40], category_id=3),
        dict(id=2, image_id=1, bbox=[0, 0, 5, 5], category_id=1, iscrowd=1),
        dict(id=3, image_id=1, bbox=[1, 1, 0, 5], category_id=1),  # degenerate: skipped
    ])
    ds = CocoDataset(ann_file=ann_file, data_prefix=dict(img='imgs/'), pipeline=[],
                     data_check=False)  # annotations only: no image files
    assert ds.metainfo['classes'] == ('dog', 'cat')  # sorted by category id 1, 3
    assert ds.metainfo['cat_ids'] == [1, 3]
    info = ds.get_data_info(0)
    assert info['img_path'] == 'imgs/a.jpg'
    assert info['instances'][0] == dict(bbox=[10.0, 20.0, 40.0, 60.0], bbox_label=1,
                                        ignore_flag=0, where='annotations[0]')
    assert info['instances'][1]['ignore_flag'] == 1
    assert len(info['instances']) == 2
    assert ds.get_data_info(1)['instances'] == []  # image without objects kept in test mode


def test_coco_filter_empty_gt_drops_images_without_objects(tmp_path):
    ann_file = _write_coco(tmp_path / 'a.json',
                           [dict(id=1, image_id=1, bbox=[10, 20, 30, 40], category_id=3)])
    ds = CocoDataset(ann_file=ann_file, filter_cfg=dict(filter_empty_gt=True), pipeline=[],
                     data_check=False)
    assert len(ds) == 1
    counts = ds.class_counts()
    assert counts['instance_counts'].tolist() == [0, 1] and counts['num_images'] == 1


@pytest.mark.parametrize('broken, field', [
    (dict(images=[dict(id=1, width=3, height=3)], annotations=[], categories=[]), 'file_name'),
    (dict(images=[], annotations=[], categories=[dict(name='x')]), "'id'"),
    (dict(images=[dict(id=1, file_name='a', width=3, height=3)],
          annotations=[dict(image_id=1, category_id=1)], categories=[dict(id=1, name='x')]),
     "annotations[0]: missing field 'bbox'"),
    (dict(images=[], annotations=[]), "'categories'"),
])
def test_coco_malformed_file_names_file_and_field(tmp_path, broken, field):
    path = tmp_path / 'bad.json'
    path.write_text(json.dumps(broken))
    with pytest.raises(AnnotationError) as info:
        CocoDataset(ann_file=str(path), pipeline=[])
    assert str(path) in str(info.value) and field in str(info.value)


def test_voc_on_bccd_is_zero_based_and_counts_degenerate_boxes():
    root = shared_data('bccd')
    ds = VOCDataset(data_root=str(root), ann_file='ImageSets/Main/trainval.txt',
                    data_prefix=dict(img='JPEGImages', ann='Annotations'),
                    metainfo=dict(classes=BCCD_CLASSES), test_mode=True, pipeline=[])
    assert len(ds) == 292
    assert ds.skip_counts == {'degenerate box (xmax <= xmin or ymax <= ymin)': 2}
    first = ds.get_data_info(0)
    assert (first['width'], first['height']) == (640, 480)
    boxes = np.array([i['bbox'] for i in first['instances']])
    assert boxes.min() >= 0 and (boxes[:, 2] > boxes[:, 0]).all()
    counts = ds.class_counts()['instance_counts']
    assert counts[0] > counts[1] > 0 and counts[2] > 0  # RBC dominates


def test_voc_conversion_on_a_hand_written_xml(tmp_path):
    (tmp_path / 'Annotations').mkdir()
    (tmp_path / 'Annotations' / 'x.xml').write_text(
        '<annotation><size><width>20</width><height>10</height></size>'
        '<object><name>WBC</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>2</ymin>'
        '<xmax>20</xmax><ymax>10</ymax></bndbox></object>'
        '<object><name>Alien</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax>'
        '<ymax>3</ymax></bndbox></object></annotation>')
    (tmp_path / 'list.txt').write_text('x\n')
    ds = VOCDataset(data_root=str(tmp_path), ann_file='list.txt',
                    data_prefix=dict(img='JPEGImages', ann='Annotations'),
                    metainfo=dict(classes=BCCD_CLASSES), test_mode=True, pipeline=[],
                    data_check=False)
    assert ds.get_data_info(0)['instances'] == [
        dict(bbox=[0.0, 1.0, 20.0, 10.0], bbox_label=1, ignore_flag=1, where='object[0]')]


def test_voc_missing_bndbox_field_is_named(tmp_path):
    (tmp_path / 'Annotations').mkdir()
    (tmp_path / 'Annotations' / 'x.xml').write_text(
        '<annotation><size><width>20</width><height>10</height></size>'
        '<object><name>WBC</name><bndbox><xmin>1</xmin></bndbox></object></annotation>')
    (tmp_path / 'list.txt').write_text('x\n')
    with pytest.raises(AnnotationError, match=r'x\.xml: object\[0\] field bndbox'):
        VOCDataset(data_root=str(tmp_path), ann_file='list.txt',
                   data_prefix=dict(img='JPEGImages', ann='Annotations'),
                   metainfo=dict(classes=BCCD_CLASSES), pipeline=[])


def _results(h=40, w=60):
    img = np.random.RandomState(0).randint(0, 255, (h, w, 3)).astype(np.uint8)
    return dict(img=img, img_shape=(h, w), ori_shape=(h, w),
                instances=[dict(bbox=[10, 5, 30, 25], bbox_label=2, ignore_flag=0),
                           dict(bbox=[0, 0, 60, 40], bbox_label=0, ignore_flag=1)])


def test_resize_keep_ratio_scales_boxes_and_records_scale_factor():
    results = LoadAnnotations()(_results())
    out = Resize(scale=(120, 120), keep_ratio=True)(results)
    # factor = min(120 / 60, 120 / 40) = 2
    assert out['img'].shape[:2] == (80, 120)
    assert out['scale_factor'] == (2.0, 2.0)
    np.testing.assert_allclose(out['gt_bboxes'][0], [20, 10, 60, 50])


def test_flip_moves_boxes_and_is_an_involution():
    results = LoadAnnotations()(_results())
    flip = RandomFlip(prob=1.0)
    once = flip(dict(results, gt_bboxes=results['gt_bboxes'].copy(), img=results['img'].copy()))
    np.testing.assert_allclose(once['gt_bboxes'][0], [30, 5, 50, 25])
    twice = flip(once)
    np.testing.assert_allclose(twice['gt_bboxes'], results['gt_bboxes'])
    np.testing.assert_array_equal(twice['img'], results['img'])


def test_albu_keeps_boxes_labels_and_flags_in_sync():
    results = LoadAnnotations()(_results())
    albu = Albu([dict(type='HorizontalFlip', p=1.0)])
    out = albu(results)
    np.testing.assert_allclose(out['gt_bboxes'], [[30, 5, 50, 25], [0, 0, 60, 40]])
    assert out['gt_bboxes_labels'].dtype == np.int64
    assert out['gt_bboxes_labels'].tolist() == [2, 0]
    assert out['gt_ignore_flags'].tolist() == [False, True]


def test_albu_crop_drops_boxes_with_their_labels():
    results = LoadAnnotations()(_results())
    out = Albu([dict(type='Crop', x_min=35, y_min=0, x_max=60, y_max=40)])(results)
    assert len(out['gt_bboxes']) == len(out['gt_bboxes_labels']) == len(out['gt_ignore_flags'])
    assert out['gt_bboxes_labels'].tolist() == [0]  # only the big ignored box survives
    assert out['img'].shape[:2] == (40, 25)


def test_albu_repeats_under_the_same_numpy_seed():
    """albumentations would seed itself from OS entropy; the wrapper draws the seed from
    numpy's generator, so a seeded run (and each seeded data-loader worker) repeats."""
    albu = Albu([dict(type='RandomBrightnessContrast', p=1.0),
                 dict(type='HueSaturationValue', p=1.0)])
    img = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)

    def run(seed):
        np.random.seed(seed)
        return [albu(dict(img=img.copy()))['img'] for _ in range(3)]

    first, again, other = run(0), run(0), run(1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1])  # successive calls still differ
    assert not np.array_equal(first[0], other[0])


def test_pack_inputs_splits_ignored_and_pad_divisor():
    results = LoadAnnotations()(_results(h=30, w=50))
    results = Pad(size_divisor=16)(results)
    assert results['img'].shape[:2] == (32, 64)
    packed = PackInputs()(results)
    sample = packed['data_samples']
    assert packed['inputs'].shape == (3, 32, 64) and packed['inputs'].dtype == torch.uint8
    assert sample.gt_instances.labels.tolist() == [2]
    assert sample.ignored_instances.bboxes.tolist() == [[0.0, 0.0, 60.0, 40.0]]


def test_empty_annotations_pack_to_empty_tensors():
    results = LoadAnnotations()(dict(_results(), instances=[]))
    sample = PackInputs()(results)['data_samples']
    assert sample.gt_instances.bboxes.shape == (0, 4)
    assert sample.gt_instances.labels.dtype == torch.int64


def test_unreadable_image_names_the_file(tmp_path):
    from toolbox.datasets.transforms import LoadImageFromFile
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'not a jpeg')
    with pytest.raises(OSError, match='broken.jpg'):
        LoadImageFromFile()(dict(img_path=str(bad)))


def test_demo_dataset_is_deterministic_and_valid(tmp_path, demo_root):
    from toolbox.datasets import make_demo_dataset
    other = make_demo_dataset(str(tmp_path / 'again'), num_train=16, num_val=8)
    for rel in ('coco/annotations/instances_train.json', 'voc/Annotations/val_00003.xml'):
        assert open(f'{demo_root}/{rel}').read() == open(f'{other}/{rel}').read()
    coco = CocoDataset(data_root=f'{demo_root}/coco', ann_file='annotations/instances_val.json',
                       data_prefix=dict(img='val/'), pipeline=[])
    voc = VOCDataset(data_root=f'{demo_root}/voc', ann_file='ImageSets/Main/val.txt',
                     data_prefix=dict(img='JPEGImages', ann='Annotations'),
                     metainfo=dict(classes=('circle', 'square', 'triangle')), pipeline=[])
    # the same boxes through both converters (COCO xywh and VOC 1-based)
    for k in range(len(coco)):
        a = [i['bbox'] for i in coco.get_data_info(k)['instances']]
        b = [i['bbox'] for i in voc.get_data_info(k)['instances']]
        np.testing.assert_allclose(a, b)
