"""ClassCountsHook and ``dataset_class_counts`` through dataset wrappers.

Detection parts are the demo dataset's VOC splits (generated here, small); segmentation parts
are tiny folders of hand-made class maps. Expected counts are either hand-computed or counted
independently from ``get_data_info`` of every index the wrapper yields.
"""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmengine.dataset import BaseDataset, ClassBalancedDataset, ConcatDataset, RepeatDataset
from mmengine.registry import DefaultScope
from torch import nn
from torch.utils.data import ConcatDataset as TorchConcatDataset

from toolbox.datasets import FolderSegDataset, VOCDataset, dataset_class_counts, make_demo_dataset
from toolbox.datasets.demo import DEMO_CLASSES
from toolbox.engine.hooks import ClassCountsHook
from toolbox.registry import DATASETS
from toolbox_plugins.losses.cross_entropy import BalancedSoftmaxLoss


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
    return make_demo_dataset(str(tmp_path_factory.mktemp('demo')), num_train=14, num_val=8,
                             img_size=64, max_objects=4, seed=3)


def _voc(root, split, classes=DEMO_CLASSES):
    return VOCDataset(data_root=f'{root}/voc', ann_file=f'ImageSets/Main/{split}.txt',
                      data_prefix=dict(img='JPEGImages', ann='Annotations'),
                      metainfo=dict(classes=classes), test_mode=True, pipeline=[])


def _brute_force_counts(dataset):
    """Counts of every image the (wrapped) dataset yields, read one index at a time."""
    instance_counts, image_counts = np.zeros(3, np.int64), np.zeros(3, np.int64)
    for idx in range(len(dataset)):
        labels = [i['bbox_label'] for i in dataset.get_data_info(idx)['instances']
                  if not i['ignore_flag']]
        instance_counts += np.bincount(labels, minlength=3)
        image_counts += np.bincount(sorted(set(labels)), minlength=3)
    return instance_counts, image_counts


class _Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.counts = None

    def set_class_counts(self, counts):
        self.counts = counts


def _run_hook(dataset, loss=None):
    """Run the hook on a minimal runner; returns the counts handed to the model."""
    recorder = _Recorder()
    modules = dict(recorder=recorder)
    if loss is not None:
        modules['loss'] = loss
    runner = SimpleNamespace(model=nn.ModuleDict(modules),
                             train_dataloader=SimpleNamespace(dataset=dataset))
    ClassCountsHook().before_train(runner)
    return recorder.counts


def test_concat_dataset_counts_are_the_sum_of_the_parts(demo_root):
    train, val = _voc(demo_root, 'train'), _voc(demo_root, 'val')
    loss = BalancedSoftmaxLoss(count_key='instance_counts')
    counts = _run_hook(ConcatDataset([train, val]), loss)
    a, b = train.class_counts(), val.class_counts()
    for key in ('instance_counts', 'image_counts'):
        np.testing.assert_array_equal(counts[key], a[key] + b[key])
    assert counts['num_images'] == 14 + 8
    assert (counts['instance_counts'] > 0).all()  # every class present: a meaningful sum
    np.testing.assert_array_equal(counts['instance_counts'],
                                  _brute_force_counts(ConcatDataset([train, val]))[0])
    prior = counts['instance_counts'] / counts['instance_counts'].sum()
    torch.testing.assert_close(loss.log_prior, torch.tensor(np.log(prior), dtype=torch.float32))


def test_repeat_and_nested_wrappers_count_what_the_loader_draws(demo_root):
    train, val = _voc(demo_root, 'train'), _voc(demo_root, 'val')
    a, b = train.class_counts(), val.class_counts()
    # as a config builds it (mmengine's classes only take a wrapper as a config dict)
    parts = [dict(type='VOCDataset', data_root=f'{demo_root}/voc',
                  ann_file=f'ImageSets/Main/{split}.txt', metainfo=dict(classes=DEMO_CLASSES),
                  data_prefix=dict(img='JPEGImages', ann='Annotations'), test_mode=True,
                  pipeline=[]) for split in ('train', 'val')]
    with DefaultScope.overwrite_default_scope('toolbox'):
        wrapped = DATASETS.build(dict(type='RepeatDataset', times=3,
                                      dataset=dict(type='ConcatDataset', datasets=parts)))
    tripled = _run_hook(wrapped)
    np.testing.assert_array_equal(tripled['instance_counts'],
                                  3 * (a['instance_counts'] + b['instance_counts']))
    assert tripled['num_images'] == 3 * 22
    # torch's ConcatDataset takes wrappers as parts: train twice + val once
    mixed = TorchConcatDataset([RepeatDataset(train, times=2), val])
    counts = dataset_class_counts(mixed)
    np.testing.assert_array_equal(counts['image_counts'],
                                  2 * a['image_counts'] + b['image_counts'])
    assert counts['num_images'] == len(mixed) == 2 * 14 + 8
    assert train.class_counts() is a  # the cached counts are not changed by the scaling


def test_class_balanced_dataset_counts_oversampled_images_as_often_as_drawn(demo_root):
    train = _voc(demo_root, 'train')
    image_freq = train.class_counts()['image_counts'] / len(train)
    thr = float(np.sort(image_freq)[1])  # the rarest class gets oversampled, the others not
    balanced = ClassBalancedDataset(train, oversample_thr=thr)
    draws = np.bincount(balanced.repeat_indices, minlength=len(train))
    assert len(set(draws.tolist())) > 1  # uneven repeats: not a plain multiple of the counts
    counts = _run_hook(balanced)
    instance_counts, image_counts = _brute_force_counts(balanced)
    np.testing.assert_array_equal(counts['instance_counts'], instance_counts)
    np.testing.assert_array_equal(counts['image_counts'], image_counts)
    assert counts['num_images'] == len(balanced) == draws.sum()
    # oversampling raises the share of the rarest class compared with the plain dataset
    rare = int(np.argmin(image_freq))
    plain = train.class_counts()['instance_counts']
    assert counts['instance_counts'][rare] / counts['instance_counts'].sum() > \
        plain[rare] / plain.sum()


def test_detection_class_counts_with_repeats_hand_case(tmp_path):
    (tmp_path / 'Annotations').mkdir()
    objects = {'a': ['circle', 'circle', 'square'], 'b': ['triangle'], 'c': ['square']}
    for name, classes in objects.items():
        boxes = ''.join(f'<object><name>{c}</name><bndbox><xmin>1</xmin><ymin>1</ymin>'
                        f'<xmax>5</xmax><ymax>5</ymax></bndbox></object>' for c in classes)
        (tmp_path / 'Annotations' / f'{name}.xml').write_text(
            f'<annotation><size><width>9</width><height>9</height></size>{boxes}</annotation>')
    (tmp_path / 'list.txt').write_text('a\nb\nc\n')
    ds = VOCDataset(data_root=str(tmp_path), ann_file='list.txt',
                    data_prefix=dict(img='JPEGImages', ann='Annotations'),
                    metainfo=dict(classes=DEMO_CLASSES), test_mode=True, pipeline=[],
                    data_check=False)
    once = ds.class_counts()
    assert once['instance_counts'].tolist() == [2, 2, 1]
    assert once['image_counts'].tolist() == [1, 2, 1] and once['num_images'] == 3
    # a drawn 3 times, b never, c once: circles 3 * 2, squares 3 * 1 + 1, triangles 0
    weighted = ds.class_counts(repeats=[3, 0, 1])
    assert weighted['instance_counts'].tolist() == [6, 4, 0]
    assert weighted['image_counts'].tolist() == [3, 4, 0] and weighted['num_images'] == 4
    assert ds.class_counts() is once  # repeats do not replace the cache
    with pytest.raises(ValueError, match='shape'):
        ds.class_counts(repeats=[1, 1])
    with pytest.raises(ValueError, match='non-negative integers'):
        ds.class_counts(repeats=[1, -1, 1])


def _write_seg_folder(root, maps):
    (root / 'img').mkdir(parents=True)
    (root / 'ann').mkdir()
    for name, seg in maps.items():
        seg = np.array(seg, np.uint8)
        cv2.imwrite(str(root / 'img' / f'{name}.jpg'), np.zeros((*seg.shape, 3), np.uint8))
        cv2.imwrite(str(root / 'ann' / f'{name}.png'), seg)


def _folder(root, classes=('bg', 'fg')):
    return FolderSegDataset(data_root=str(root), metainfo=dict(classes=classes),
                            data_prefix=dict(img_path='img', seg_map_path='ann'), pipeline=[])


def test_segmentation_parts_sum_pixel_counts_and_repeat(tmp_path):
    _write_seg_folder(tmp_path / 'p', {'x': [[0, 1], [1, 255]]})  # bg 1, fg 2, 1 ignored
    _write_seg_folder(tmp_path / 'q', {'y': [[0, 0], [0, 0]], 'z': [[1, 1], [0, 255]]})
    p, q = _folder(tmp_path / 'p'), _folder(tmp_path / 'q')
    counts = _run_hook(ConcatDataset([p, q]))
    assert counts['pixel_counts'].tolist() == [1 + 4 + 1, 2 + 2]
    assert counts['image_counts'].tolist() == [3, 2] and counts['num_images'] == 3
    repeated = dataset_class_counts(TorchConcatDataset([RepeatDataset(p, times=2), q]))
    assert repeated['pixel_counts'].tolist() == [1 * 2 + 5, 2 * 2 + 2]
    assert q.class_counts(repeats=[0, 3])['pixel_counts'].tolist() == [3, 6]


class _NoCounts(BaseDataset):
    METAINFO = dict(classes=DEMO_CLASSES)

    def load_data_list(self):
        return [dict(img_path='x.jpg', instances=[])]


class _CountsWithoutRepeats(BaseDataset):
    METAINFO = dict(classes=DEMO_CLASSES)

    def load_data_list(self):
        return [dict(img_path=f'{k}.jpg', labels=[k % 3]) for k in range(6)]

    def get_cat_ids(self, idx):
        return self.get_data_info(idx)['labels']

    def class_counts(self):
        return dict(instance_counts=np.array([2, 2, 2]), num_images=6)


def test_a_part_without_class_counts_is_named(demo_root):
    with pytest.raises(TypeError, match='_NoCounts .*inside ConcatDataset.* no class_counts'):
        _run_hook(ConcatDataset([_voc(demo_root, 'val'), _NoCounts(pipeline=[])]))
    with pytest.raises(TypeError, match='ClassCountsHook: the dataset _NoCounts has no'):
        _run_hook(_NoCounts(pipeline=[]))


def test_parts_with_different_class_lists_are_an_error(demo_root, tmp_path):
    val = _voc(demo_root, 'val')
    other = _voc(demo_root, 'train', classes=tuple(reversed(DEMO_CLASSES)))
    concat = ConcatDataset([val, other], ignore_keys=['classes'])  # mmengine lets it pass
    with pytest.raises(ValueError, match="different class lists.*'circle', 'square'.*"
                                         "'triangle', 'square', 'circle'"):
        _run_hook(concat)
    # same class names but counts of different kinds (boxes and pixels) cannot be added
    _write_seg_folder(tmp_path, {'x': [[0, 1], [2, 2]]})
    seg = _folder(tmp_path, classes=DEMO_CLASSES)
    with pytest.raises(ValueError, match='cannot be added'):
        dataset_class_counts(TorchConcatDataset([val, seg]))


def test_uneven_repeats_need_class_counts_that_take_repeats():
    base = _CountsWithoutRepeats(pipeline=[])
    # a RepeatDataset repeats evenly: the part's own counts are scaled
    assert dataset_class_counts(RepeatDataset(base, times=2))['instance_counts'].tolist() == \
        [4, 4, 4]
    balanced = ClassBalancedDataset(base, oversample_thr=0.5)  # class frequency 1/3 < 0.5
    assert len(balanced) == 12  # every image drawn ceil(sqrt(0.5 / (1/3))) = 2 times
    assert dataset_class_counts(balanced)['num_images'] == 12
    uneven = ClassBalancedDataset(_CountsWithoutRepeats(pipeline=[]), oversample_thr=0.5)
    uneven.repeat_indices = [0, 0, 1, 2, 3, 4, 5]  # as if image 0 were oversampled
    with pytest.raises(TypeError, match='_CountsWithoutRepeats.class_counts\\(\\) takes no '
                                        'repeats'):
        dataset_class_counts(uneven)


def test_hook_without_a_target_module_checks_but_does_not_count(demo_root):
    val = _voc(demo_root, 'val')
    runner = SimpleNamespace(model=nn.Linear(2, 2), train_dataloader=SimpleNamespace(dataset=val))
    ClassCountsHook().before_train(runner)
    assert getattr(val, '_class_counts', None) is None  # nothing counted
    with pytest.raises(TypeError, match='_NoCounts'):
        ClassCountsHook().before_train(SimpleNamespace(
            model=nn.Linear(2, 2), train_dataloader=SimpleNamespace(dataset=_NoCounts(
                pipeline=[]))))
