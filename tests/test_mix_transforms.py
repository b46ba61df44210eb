"""Mosaic, RandomAffine, MixUp, the MultiImageMixDataset wrapper and MixSwitchHook, on
hand-made images whose boxes are known to the pixel."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader, Dataset

from toolbox.datasets import MixSwitchHook, MultiImageMixDataset, SeededDataset
from toolbox.datasets.transforms import MixUp, Mosaic, RandomAffine
from toolbox.datasets.transforms.mix import warp_boxes
from toolbox.engine import load_config
from toolbox.registry import DATASETS, HOOKS, MODELS

from .helpers import assert_one_sgd_step_is_finite

from .conftest import REPO_ROOT, shared_data

BACKGROUND = 50
COLOURS = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255), 3: (255, 255, 0), 4: (0, 255, 255)}


def sample(rects, size=(64, 64), background=BACKGROUND, ignore=None):
    """A (h, w, 3) uint8 image with one solid rectangle per ``(label, (x1, y1, x2, y2))``
    (pixels x1..x2-1, y1..y2-1) and those rectangles as its boxes."""
    h, w = size
    img = np.full((h, w, 3), background, np.uint8)
    for label, (x1, y1, x2, y2) in rects:
        img[y1:y2, x1:x2] = COLOURS[label]
    boxes = np.array([box for _, box in rects], np.float32).reshape(-1, 4)
    labels = np.array([label for label, _ in rects], np.int64)
    flags = np.zeros(len(rects), bool) if ignore is None else np.array(ignore, bool)
    return dict(img=img, img_shape=(h, w), gt_bboxes=boxes, gt_bboxes_labels=labels,
                gt_ignore_flags=flags)


def colour_extent(img, label):
    """``[x1, y1, x2, y2]`` of the pixels of ``label``'s colour (continuous convention)."""
    ys, xs = np.nonzero((img == COLOURS[label]).all(-1))
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def assert_boxes_enclose_their_pixels(results):
    img = results['img']
    for box, label in zip(results['gt_bboxes'], results['gt_bboxes_labels']):
        assert colour_extent(img, label) == box.tolist(), (label, box)
        x1, y1, x2, y2 = box.astype(int)
        assert (img[y1:y2, x1:x2] == COLOURS[label]).all()


def with_others(first, others):
    results = dict(first)
    results['mix_results'] = others
    return results


# ---------------------------------------------------------------------------------- Mosaic
FOUR = [sample([(0, (5, 20, 40, 60))]), sample([(1, (10, 10, 30, 30))]),
        sample([(2, (0, 0, 20, 64))]), sample([(3, (30, 40, 64, 64))])]


def test_mosaic_places_four_images_around_the_centre_and_boxes_enclose_their_pixels():
    # centre 0.75 * 64 = 48 on a 128x128 canvas: the top-left image spans x, y in [-16, 48)
    # and loses its first 16 columns and rows; the bottom-right one spans [48, 112)
    out = Mosaic(img_scale=(64, 64), center_ratio_range=(0.75, 0.75))(with_others(
        FOUR[0], FOUR[1:]))
    assert out['img'].shape == (128, 128, 3) and out['img_shape'] == (128, 128)
    np.testing.assert_array_equal(out['gt_bboxes'], [[0, 4, 24, 44],      # (5, 20, 40, 60) - 16
                                                     [58, 0, 78, 14],     # + (48, -16), clipped
                                                     [0, 48, 4, 112],     # + (-16, 48), clipped
                                                     [78, 88, 112, 112]])  # + (48, 48)
    np.testing.assert_array_equal(out['gt_bboxes_labels'], [0, 1, 2, 3])
    np.testing.assert_array_equal(out['gt_ignore_flags'], [False] * 4)
    assert out['gt_bboxes'].dtype == np.float32
    assert_boxes_enclose_their_pixels(out)
    assert (out['img'][:48, 112:] == 114).all() and (out['img'][112:, :] == 114).all()


def test_mosaic_resizes_each_image_into_its_quadrant_keeping_the_ratio():
    big = sample([(4, (20, 40, 60, 100))], size=(128, 128))  # factor min(64/128, 64/128) = 0.5
    out = Mosaic(img_scale=(64, 64), center_ratio_range=(1.0, 1.0))(with_others(
        big, FOUR[1:]))
    # (10, 20, 30, 50) at 0.5, top-left image at x, y in [0, 64)
    np.testing.assert_array_equal(out['gt_bboxes'][0], [10, 20, 30, 50])
    assert_boxes_enclose_their_pixels(out)


def test_mosaic_drops_boxes_cut_off_or_too_small_with_their_labels_and_flags():
    first = sample([(0, (2, 2, 10, 10)), (1, (14, 30, 40, 50)), (2, (20, 5, 60, 25))],
                   ignore=[True, False, True])
    out = Mosaic(img_scale=(64, 64), center_ratio_range=(0.75, 0.75), min_bbox_size=2)(
        with_others(first, FOUR[1:]))
    # label 0 lies in the 16 cut columns; label 1 keeps x in [16, 40) -> [0, 24); label 2
    # keeps y in [16, 25) -> [0, 9); FOUR[2]'s box is 4 wide (> 2) and stays
    np.testing.assert_array_equal(out['gt_bboxes_labels'], [1, 2, 1, 2, 3])
    np.testing.assert_array_equal(out['gt_ignore_flags'], [False, True, False, False, False])
    np.testing.assert_array_equal(out['gt_bboxes'][:2], [[0, 14, 24, 34], [4, 0, 44, 9]])
    strict = Mosaic(img_scale=(64, 64), center_ratio_range=(0.75, 0.75), min_bbox_size=4)(
        with_others(first, FOUR[1:]))
    np.testing.assert_array_equal(strict['gt_bboxes_labels'], [1, 2, 1, 3])  # 4 is not > 4


def test_mosaic_of_images_without_boxes():
    empty = [sample([]) for _ in range(4)]
    out = Mosaic(img_scale=(64, 64))(with_others(empty[0], empty[1:]))
    assert out['gt_bboxes'].shape == (0, 4) and out['gt_bboxes_labels'].shape == (0,)
    assert out['gt_ignore_flags'].shape == (0,) and out['img'].shape == (128, 128, 3)
    mixed = Mosaic(img_scale=(64, 64), center_ratio_range=(1.0, 1.0))(with_others(
        empty[0], [FOUR[1], empty[2], FOUR[3]]))
    np.testing.assert_array_equal(mixed['gt_bboxes_labels'], [1, 3])
    assert_boxes_enclose_their_pixels(mixed)


def test_mosaic_with_prob_0_is_the_identity():
    first = sample([(0, (5, 20, 40, 60))])
    out = Mosaic(img_scale=(64, 64), prob=0.0)(with_others(first, FOUR[1:]))
    assert out['img'] is first['img'] and out['gt_bboxes'] is first['gt_bboxes']


def test_mosaic_needs_three_other_images():
    with pytest.raises(ValueError, match='needs 3 other images'):
        Mosaic(img_scale=(64, 64))(with_others(FOUR[0], FOUR[1:3]))


# ---------------------------------------------------------------------------- RandomAffine
def fixed_affine(scale=1.0, **kwargs):
    return RandomAffine(max_rotate_degree=0, max_translate_ratio=0, max_shear_degree=0,
                        scaling_ratio_range=(scale, scale), **kwargs)


def test_random_affine_with_identity_parameters_is_the_identity():
    first = sample([(0, (10, 20, 30, 40)), (1, (40, 0, 64, 8))])
    out = fixed_affine()(dict(first))
    np.testing.assert_array_equal(out['img'], first['img'])
    np.testing.assert_array_equal(out['gt_bboxes'], first['gt_bboxes'])
    np.testing.assert_array_equal(out['gt_bboxes_labels'], [0, 1])


def test_random_affine_scale_half_halves_boxes_about_the_centre():
    out = fixed_affine(0.5)(sample([(0, (10, 20, 30, 40))]))
    # x -> (x - 32) / 2 + 32: [10, 30) -> [21, 31); y [20, 40) -> [26, 36)
    np.testing.assert_array_equal(out['gt_bboxes'], [[21, 26, 31, 36]])
    assert_boxes_enclose_their_pixels(out)
    assert (out['img'][:16] == 114).all()  # outside the shrunk image: border_val


def test_random_affine_rotation_by_90_degrees_moves_pixels_and_boxes_together():
    matrix = RandomAffine.homography((64, 64), (64, 64), rotate=90, scale=1.0, shear=(0, 0),
                                     translate=(0, 0))
    # about the centre (32, 32): (x, y) -> (64 - y, x)
    np.testing.assert_allclose(warp_boxes(np.array([[10, 20, 30, 40]], np.float32), matrix),
                               [[24, 10, 44, 30]], atol=1e-4)
    transform = RandomAffine(max_rotate_degree=0, max_translate_ratio=0, max_shear_degree=0,
                             scaling_ratio_range=(1, 1))
    transform._draw_params = lambda: dict(rotate=90.0, scale=1.0, shear=(0.0, 0.0),
                                          translate=(0.0, 0.0))
    out = transform(sample([(0, (10, 20, 30, 40))]))
    np.testing.assert_allclose(out['gt_bboxes'], [[24, 10, 44, 30]], atol=1e-4)
    assert colour_extent(out['img'], 0) == [24, 10, 44, 30]


def test_random_affine_border_crops_the_centre_and_filters_cut_boxes():
    first = sample([(0, (0, 0, 20, 20)), (1, (20, 20, 40, 40)), (2, (44, 16, 60, 48))])
    out = fixed_affine(border=(-16, -16))(dict(first))
    assert out['img'].shape == (32, 32, 3)
    np.testing.assert_array_equal(out['img'], first['img'][16:48, 16:48])
    # label 0 keeps 4x4 of 20x20 (area ratio 0.04 <= 0.2): dropped; label 2 keeps x in
    # [44, 48) of [44, 60) (4 of 16 columns: area ratio 0.25 > 0.2) -> [28, 0, 32, 32]
    np.testing.assert_array_equal(out['gt_bboxes'], [[4, 4, 24, 24], [28, 0, 32, 32]])
    np.testing.assert_array_equal(out['gt_bboxes_labels'], [1, 2])
    np.testing.assert_array_equal(out['gt_ignore_flags'], [False, False])


def test_random_affine_without_boxes_and_after_a_mosaic():
    out = fixed_affine()(sample([]))
    assert out['gt_bboxes'].shape == (0, 4) and out['gt_bboxes_labels'].shape == (0,)
    near_centre = [sample([(0, (40, 40, 60, 60))]), sample([(1, (4, 40, 24, 60))]),
                   sample([(2, (40, 4, 60, 24))]), sample([(3, (20, 20, 40, 40))])]
    mosaic = Mosaic(img_scale=(64, 64), center_ratio_range=(1.0, 1.0))(with_others(
        near_centre[0], near_centre[1:]))
    canvas = mosaic['img']
    cropped = fixed_affine(border=(-32, -32))(mosaic)  # (128, 128) -> [32, 96) x [32, 96)
    assert cropped['img'].shape == (64, 64, 3) and cropped['img_shape'] == (64, 64)
    np.testing.assert_array_equal(cropped['img'], canvas[32:96, 32:96])
    # canvas boxes (40, 40, 60, 60), (68, 40, 88, 60), (40, 68, 60, 88), (84, 84, 104, 104)
    # minus 32; the last keeps 12x12 of 20x20 (area ratio 0.36 > 0.2)
    np.testing.assert_array_equal(cropped['gt_bboxes'], [[8, 8, 28, 28], [36, 8, 56, 28],
                                                         [8, 36, 28, 56], [52, 52, 64, 64]])
    np.testing.assert_array_equal(cropped['gt_bboxes_labels'], [0, 1, 2, 3])
    assert_boxes_enclose_their_pixels(cropped)


# ---------------------------------------------------------------------------------- MixUp
def fixed_mixup(ratio=1.0, flip=0.0, **kwargs):
    return MixUp(img_scale=(64, 64), ratio_range=(ratio, ratio), flip_ratio=flip, **kwargs)


def plain(size=(64, 64), value=100, rects=()):
    results = sample(list(rects), size=size, background=value)
    return results


def test_mixup_blends_half_and_half_and_keeps_the_union_of_boxes():
    current = plain(rects=[(0, (0, 0, 10, 10))])              # colour (255, 0, 0)
    other = plain(value=60, rects=[(2, (4, 4, 12, 12))])       # colour (0, 0, 255)
    out = fixed_mixup()(with_others(current, [other]))
    img = out['img']
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    np.testing.assert_array_equal(img[30, 30], [80, 80, 80])               # (100 + 60) / 2
    np.testing.assert_array_equal(img[2, 2], [(255 + 60) / 2 + 0.5, 30, 30])  # 157.5 rounds up
    np.testing.assert_array_equal(img[6, 6], [128, 0, 128])                 # 127.5 rounds to even
    np.testing.assert_array_equal(img[11, 11], [50, 50, 178])  # (100 + 255) / 2, to even
    np.testing.assert_array_equal(out['gt_bboxes'], [[0, 0, 10, 10], [4, 4, 12, 12]])
    np.testing.assert_array_equal(out['gt_bboxes_labels'], [0, 2])
    np.testing.assert_array_equal(out['gt_ignore_flags'], [False, False])


def test_mixup_jitter_pads_with_grey_and_flip_mirrors_the_other_image():
    current = plain(rects=[(0, (40, 40, 50, 50))])
    other = plain(value=60, rects=[(2, (4, 4, 12, 12))])
    out = fixed_mixup(ratio=0.5)(with_others(current, [other]))
    # the other image shrinks to 32x32 at the top-left; the rest is pad 114
    np.testing.assert_array_equal(out['img'][50, 60], [107, 107, 107])  # (100 + 114) / 2
    np.testing.assert_array_equal(out['img'][20, 20], [80, 80, 80])
    np.testing.assert_array_equal(out['gt_bboxes'], [[40, 40, 50, 50], [2, 2, 6, 6]])
    np.testing.assert_array_equal(out['img'][4, 4], [50, 50, 178])
    flipped = fixed_mixup(ratio=0.5, flip=1.0)(with_others(current, [other]))
    np.testing.assert_array_equal(flipped['gt_bboxes'][1], [26, 2, 30, 6])  # 32 - x
    np.testing.assert_array_equal(flipped['img'][4, 28], [50, 50, 178])
    np.testing.assert_array_equal(flipped['img'][4, 4], [80, 80, 80])


def test_mixup_crops_a_larger_other_image_at_a_random_offset_with_its_boxes():
    current = plain(size=(32, 32), value=0)
    other = plain(value=0, rects=[(2, (20, 20, 44, 44))])
    kept = 0
    for seed in range(6):
        np.random.seed(seed)
        out = fixed_mixup()(with_others(current, [other]))
        assert out['img'].shape == (32, 32, 3)
        if len(out['gt_bboxes']):  # kept only with more than 20% of its area inside
            kept += 1
            x1, y1, x2, y2 = out['gt_bboxes'][0].astype(int)
            ys, xs = np.nonzero(out['img'][..., 2] > 100)  # 255 / 2 where the square is
            assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == [x1, y1, x2, y2]
    assert kept >= 3


def test_mixup_with_an_other_image_without_boxes_or_prob_0_changes_nothing():
    current = plain(rects=[(0, (0, 0, 10, 10))])
    out = fixed_mixup()(with_others(current, [plain(value=60)]))
    assert out['img'] is current['img']
    out = fixed_mixup(prob=0.0)(with_others(current, [plain(value=60, rects=[(1, (0, 0, 9, 9))])]))
    assert out['img'] is current['img'] and len(out['gt_bboxes']) == 1


def test_mixup_get_indexes_prefers_an_image_with_boxes():
    class Infos:
        def __len__(self):
            return 10

        def get_data_info(self, i):
            return dict(instances=[dict(bbox=[0, 0, 1, 1])] if i == 7 else [])

    np.random.seed(0)
    assert MixUp(max_iters=200).get_indexes(Infos()) == [7]


# ------------------------------------------------------------------------ dataset wrapper
class HandMadeDataset(Dataset):
    """Samples of :func:`sample` as a loaded detection dataset would return them."""

    metainfo = dict(classes=('a', 'b', 'c', 'd', 'e'))

    def __init__(self, n=4):
        self.samples = [sample([(k % 5, (4 * k, 8, 4 * k + 20, 40))]) for k in range(n)]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        return dict(self.samples[idx])

    def get_data_info(self, idx):
        return dict(instances=[dict(bbox=self.samples[idx]['gt_bboxes'][0].tolist())])

    def class_counts(self):
        return dict(instance_counts=np.ones(5, np.int64))


class NoneTwice:
    """A transform that returns None on its first two calls (a failed random crop)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, results):
        self.calls += 1
        return None if self.calls <= 2 else results


def test_wrapper_returns_packed_mosaics_and_honours_skip_type_keys():
    dataset = MultiImageMixDataset(
        HandMadeDataset(), pipeline=[dict(type='Mosaic', img_scale=(64, 64)),
                                     dict(type='PackInputs')])
    assert len(dataset) == 4 and dataset.metainfo['classes'] == ('a', 'b', 'c', 'd', 'e')
    assert dataset.get_data_info(1)['instances'][0]['bbox'] == [4, 8, 24, 40]
    assert dataset.class_counts()['instance_counts'].tolist() == [1] * 5  # forwarded
    np.random.seed(0)
    packed = dataset[0]
    assert packed['inputs'].shape == (3, 128, 128)
    assert packed['data_samples'].gt_instances.bboxes.shape[1] == 4
    assert len(packed['data_samples'].gt_instances) >= 1
    assert 'mix_results' not in packed['data_samples'].metainfo
    dataset.update_skip_type_keys(['Mosaic'])
    assert dataset[0]['inputs'].shape == (3, 64, 64)
    inner = HandMadeDataset()
    built = DATASETS.build(dict(type='MultiImageMixDataset', dataset=inner,
                                pipeline=[dict(type='Mosaic', img_scale=(64, 64))],
                                skip_type_keys=('Mosaic',)))
    assert built[2]['img'] is not inner.samples[2]['img']  # a copy: the inner one is kept
    np.testing.assert_array_equal(built[2]['gt_bboxes'], [[8, 8, 28, 40]])


def test_wrapper_gives_mixing_transforms_samples_of_the_inner_dataset_and_refetches():
    seen = {}

    class Spy:
        def get_indexes(self, dataset):
            seen['dataset'] = dataset
            return 3

        def __call__(self, results):
            seen['mix'] = [r['gt_bboxes'].tolist() for r in results['mix_results']]
            return results

    inner = HandMadeDataset()
    retry = NoneTwice()
    dataset = MultiImageMixDataset(inner, pipeline=[Spy(), retry])
    out = dataset[0]
    assert seen['dataset'] is inner and seen['mix'] == [[[12, 8, 32, 40]]]
    assert retry.calls == 3 and 'mix_results' not in out
    with pytest.raises(RuntimeError, match='NoneTwice returned None 2 times'):
        MultiImageMixDataset(inner, pipeline=[NoneTwice()], max_refetch=2)[0]


# --------------------------------------------------------------------------------- the hook
def loader_shapes(loader):
    return [tuple(batch[0]['img'].shape[:2]) for batch in loader]


def test_hook_switches_mixing_off_for_the_last_epochs_through_seeded_wrappers():
    mix = MultiImageMixDataset(HandMadeDataset(), pipeline=[Mosaic(img_scale=(64, 64))])
    hook = HOOKS.build(dict(type='MixSwitchHook', num_last_epochs=2))
    loader = SimpleNamespace(dataset=SeededDataset(mix), persistent_workers=False, num_workers=0)
    for epoch, expected in ((0, ()), (2, ()), (3, ('Mosaic', 'RandomAffine', 'MixUp')),
                            (4, ('Mosaic', 'RandomAffine', 'MixUp'))):
        hook.before_train_epoch(SimpleNamespace(epoch=epoch, max_epochs=5,
                                                train_dataloader=loader))
        assert mix.skip_type_keys == expected, epoch
    with pytest.raises(TypeError, match='has no MultiImageMixDataset'):
        MixSwitchHook(1).before_train_epoch(SimpleNamespace(
            epoch=4, max_epochs=5, train_dataloader=SimpleNamespace(dataset=HandMadeDataset())))


class ShapeRecorder(BaseModel):
    """Records the image shape of every training batch; its loss is w^2."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.seen = []

    def forward(self, inputs, data_samples=None, mode='loss'):
        self.seen.append(tuple(inputs[0]['img'].shape[:2]))
        return dict(loss=(self.weight ** 2).sum())

    def train_step(self, data, optim_wrapper):
        loss = self(data)['loss']
        optim_wrapper.update_params(loss)
        return dict(loss=loss.detach())


def test_hook_reaches_persistent_workers_which_otherwise_keep_mixing(tmp_path):
    """Measured: a persistent worker keeps its copy of the dataset, so setting the keys in
    the main process changes nothing; in an mmengine Runner the hook drops the loader's
    iterator and the last epoch's new worker trains on plain images."""
    mix = MultiImageMixDataset(HandMadeDataset(2), pipeline=[Mosaic(img_scale=(64, 64))])
    loader = DataLoader(mix, batch_size=1, num_workers=1, persistent_workers=True,
                        collate_fn=list)
    assert loader_shapes(loader) == [(128, 128)] * 2
    mix.update_skip_type_keys(('Mosaic',))  # without the hook
    assert loader_shapes(loader) == [(128, 128)] * 2
    loader._iterator = None  # stops the worker now (from the garbage collector: 5 s)

    model = ShapeRecorder()
    runner = Runner(
        model=model, work_dir=str(tmp_path), default_scope='toolbox',
        train_dataloader=dict(
            dataset=MultiImageMixDataset(HandMadeDataset(2), pipeline=[Mosaic(img_scale=(64, 64))]),
            batch_size=1, num_workers=1, persistent_workers=True, collate_fn=list,
            sampler=dict(type='DefaultSampler', shuffle=False)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        custom_hooks=[dict(type='MixSwitchHook', num_last_epochs=1)],
        default_hooks=dict(checkpoint=None, logger=None))
    runner.train()
    runner.train_dataloader._iterator = None
    assert model.seen == [(128, 128)] * 4 + [(64, 64)] * 2


# ----------------------------------------------------------------- configs and a train step
def test_one_training_step_on_mosaic_mixup_batches_of_the_demo_data(demo_root):
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'))
    inner = dict(type='CocoDataset', data_root=f'{demo_root}/coco/',
                 ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True), data_check=False,
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='LoadAnnotations', with_bbox=True)])
    dataset = DATASETS.build(dict(
        type='MultiImageMixDataset', dataset=inner,
        pipeline=[dict(type='Mosaic', img_scale=(96, 96)),
                  dict(type='RandomAffine', border=(-48, -48)),
                  dict(type='MixUp', img_scale=(96, 96)), dict(type='PackInputs')]))
    np.random.seed(0)
    torch.manual_seed(0)
    batch = pseudo_collate([dataset[i] for i in range(2)])
    assert [tuple(x.shape) for x in batch['inputs']] == [(3, 96, 96)] * 2
    assert sum(len(s.gt_instances) for s in batch['data_samples']) > 0
    model = MODELS.build(cfg.model)
    assert_one_sgd_step_is_finite(model, batch)


def test_the_bccd_mosaic_config_builds_its_dataset_and_hook():
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_320_12e_mosaic_bccd.py'))
    dataset_cfg = cfg.train_dataloader.dataset
    assert dataset_cfg.type == 'MultiImageMixDataset' and 'ann_file' not in dataset_cfg
    assert [h['type'] for h in cfg.custom_hooks] == ['ValLossHook', 'MixSwitchHook']
    assert HOOKS.build(cfg.custom_hooks[1]).num_last_epochs == 2
    root = shared_data('bccd')
    dataset_cfg.dataset.data_root = str(root)
    dataset = DATASETS.build(dataset_cfg)
    assert len(dataset) == 205 and dataset.metainfo['classes'] == ('RBC', 'WBC', 'Platelets')
    np.random.seed(0)
    packed = dataset[0]
    boxes = packed['data_samples'].gt_instances.bboxes
    assert packed['inputs'].shape == (3, 320, 320) and len(boxes) > 0
    assert boxes.min() >= 0 and boxes.max() <= 320
    assert set(packed['data_samples'].gt_instances.labels.tolist()) <= {0, 1, 2}
    dataset.update_skip_type_keys(('Mosaic', 'RandomAffine', 'MixUp'))
    assert dataset[0]['inputs'].shape == (3, 240, 320)  # 640x480 resized to fit 320
