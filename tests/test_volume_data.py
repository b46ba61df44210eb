"""3D medical data path: MSD dataset and splits, NIfTI loading, volume transforms, Dice loss
and Dice metric (MONAI parity, hand-computed cases, empty classes)."""
import json

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData

from toolbox.datasets.detection import AnnotationError
from toolbox.datasets.medical import DecathlonDataset, split_indices
from toolbox.datasets.transforms import (LoadVolume, LoadVolumeAnnotation, NormalizeIntensity,
                                         PadToMultiple, RandCropByPosNegLabel, RandFlip3D,
                                         RandRotate90, ScaleIntensityRange, Spacing, SpatialPad)
from toolbox.evaluation import DiceMetric
from toolbox.registry import METRICS, MODELS, TRANSFORMS
from toolbox.structures import DataSample
from toolbox_plugins.losses.dice import DiceCELoss, DiceLoss, dice_loss

from .conftest import shared_data

try:
    from toolbox.structures import VolumeData
except ImportError:  # the volume field lands separately; any element with .data will do
    from mmengine.structures import BaseDataElement as VolumeData

import monai  # noqa: E402  (pinned in requirements/tests.txt)

AFFINE = np.array([[2.0, 0, 0, -10], [0, 1.5, 0, 5], [0, 0, 3.0, 7], [0, 0, 0, 1]])


def _write_case(root, name, shape=(4, 5, 6), channels=None, seed=0):
    rng = np.random.default_rng(seed)
    img_shape = shape if channels is None else shape + (channels,)
    img = rng.normal(100, 20, img_shape).astype(np.float32)
    seg = rng.integers(0, 3, shape).astype(np.float32)  # MSD stores labels as float32
    (root / 'imagesTr').mkdir(exist_ok=True)
    (root / 'labelsTr').mkdir(exist_ok=True)
    nib.save(nib.Nifti1Image(img, AFFINE), str(root / 'imagesTr' / f'{name}.nii.gz'))
    nib.save(nib.Nifti1Image(seg, AFFINE), str(root / 'labelsTr' / f'{name}.nii.gz'))
    return img, seg


def _make_msd(root, num=10, test=True, **overrides):
    for k in range(num):
        _write_case(root, f'case_{k:03d}', seed=k)
    content = dict(name='Toy', modality={'0': 'MRI'},
                   labels={'0': 'background', '1': 'anterior', '2': 'posterior'},
                   numTraining=num,
                   training=[dict(image=f'./imagesTr/case_{k:03d}.nii.gz',
                                  label=f'./labelsTr/case_{k:03d}.nii.gz') for k in range(num)],
                   test=['./imagesTr/case_000.nii.gz'] if test else None)
    if not test:
        content.pop('test')
    content.update(overrides)
    (root / 'dataset.json').write_text(json.dumps(content))
    return root


def _results(img, seg=None, spacing=(1.0, 1.0, 1.0)):
    out = dict(img=np.asarray(img, np.float32), img_shape=tuple(img.shape[1:]),
               ori_shape=tuple(img.shape[1:]), spacing=np.asarray(spacing, np.float64),
               affine=np.eye(4), spatial_dims=3)
    if seg is not None:
        out['gt_seg_map'] = np.asarray(seg, np.int64)
    return out


# ----------------------------------------------------------------------------- dataset


def test_split_indices_disjoint_covering_deterministic():
    train, val = split_indices(203, 0.2, 0)
    assert len(val) == 41 and len(train) == 162
    assert not set(train) & set(val)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(203))
    np.random.seed(123)  # the global RNG does not matter
    train2, val2 = split_indices(203, 0.2, 0)
    assert np.array_equal(train, train2) and np.array_equal(val, val2)
    assert not np.array_equal(val, split_indices(203, 0.2, 1)[1])
    with pytest.raises(ValueError, match='val_fraction'):
        split_indices(10, 1.0)


def test_decathlon_dataset_splits(tmp_path):
    root = _make_msd(tmp_path)
    sets = {s: DecathlonDataset(data_root=str(root), split=s) for s in ('train', 'val', 'all')}
    ids = {s: [d.get_data_info(i)['img_id'] for i in range(len(d))] for s, d in sets.items()}
    assert len(ids['train']) == 8 and len(ids['val']) == 2 and len(ids['all']) == 10
    assert not set(ids['train']) & set(ids['val'])
    assert sorted(ids['train'] + ids['val']) == sorted(ids['all'])
    assert ids['all'][0] == 'case_000'
    again = DecathlonDataset(data_root=str(root), split='val')
    assert [again.get_data_info(i)['img_id'] for i in range(len(again))] == ids['val']
    info = sets['train'].get_data_info(0)
    assert info['img_path'].startswith(str(root)) and info['seg_map_path'].endswith('.nii.gz')
    assert '/./' not in info['img_path']
    assert sets['train'].metainfo['classes'] == ('background', 'anterior', 'posterior')
    test = DecathlonDataset(data_root=str(root), split='test')
    assert len(test) == 1 and test.get_data_info(0)['seg_map_path'] is None


@pytest.mark.parametrize('overrides, field', [
    (dict(labels=None), 'field labels'),
    (dict(labels={'0': 'bg', '2': 'b'}), 'keys must be 0..1'),
    (dict(labels={'a': 'bg'}), 'keys must be integers'),
    (dict(training={'image': 'x'}), 'field training must be a list'),
    (dict(training=[dict(image='imagesTr/case_000.nii.gz')]), "training[0]: field 'label'"),
])
def test_decathlon_malformed_json(tmp_path, overrides, field):
    _make_msd(tmp_path, num=2, **overrides)
    with pytest.raises(AnnotationError) as err:
        DecathlonDataset(data_root=str(tmp_path), split='all')
    assert 'dataset.json' in str(err.value) and field in str(err.value)


def test_decathlon_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='dataset.json'):
        DecathlonDataset(data_root=str(tmp_path))
    root = _make_msd(tmp_path, num=3, test=False)
    (root / 'dataset.json').write_text('{"labels": ')
    with pytest.raises(AnnotationError, match='not valid json'):
        DecathlonDataset(data_root=str(root))
    content = json.loads(json.dumps(dict(labels={'0': 'bg', '1': 'fg'}, training=[
        dict(image='imagesTr/case_000.nii.gz', label='labelsTr/case_000.nii.gz'),
        dict(image='imagesTr/nope.nii.gz', label='labelsTr/case_001.nii.gz')])))
    (root / 'dataset.json').write_text(json.dumps(content))
    with pytest.raises(FileNotFoundError, match=r'training\[1\]\.image: .*nope\.nii\.gz'):
        DecathlonDataset(data_root=str(root), split='all')
    with pytest.raises(AnnotationError, match="missing field 'test'"):
        DecathlonDataset(data_root=str(root), split='test', check_files=False)
    with pytest.raises(ValueError, match='split must be one of'):
        DecathlonDataset(data_root=str(root), split='training')
    with pytest.raises(ValueError, match="split 'val' .* is empty"):
        DecathlonDataset(data_root=str(root), split='val', val_fraction=0.0,
                         check_files=False)


# ----------------------------------------------------------------------------- loading


def test_load_volume_synthetic_3d_4d_and_cache(tmp_path):
    img, seg = _write_case(tmp_path, 'a')
    img4, _ = _write_case(tmp_path, 'b', channels=2, seed=1)
    loader = LoadVolume(cache=True)
    results = loader(dict(img_path=str(tmp_path / 'imagesTr' / 'a.nii.gz'),
                          seg_map_path=str(tmp_path / 'labelsTr' / 'a.nii.gz')))
    assert results['img'].shape == (1, 4, 5, 6) and results['img'].dtype == np.float32
    np.testing.assert_array_equal(results['img'][0], img)
    np.testing.assert_array_equal(results['affine'], AFFINE)
    np.testing.assert_allclose(results['spacing'], [2.0, 1.5, 3.0])
    assert results['ori_shape'] == results['img_shape'] == (4, 5, 6)
    assert results['spatial_dims'] == 3
    LoadVolumeAnnotation()(results)
    assert results['gt_seg_map'].dtype == np.int64
    np.testing.assert_array_equal(results['gt_seg_map'], seg.astype(np.int64))
    # cached: an in-place edit of the output does not reach the cache
    results['img'] += 1000
    again = loader(dict(img_path=str(tmp_path / 'imagesTr' / 'a.nii.gz')))
    np.testing.assert_array_equal(again['img'][0], img)
    assert len(loader.cache.store) == 1
    four = LoadVolume()(dict(img_path=str(tmp_path / 'imagesTr' / 'b.nii.gz')))
    assert four['img'].shape == (2, 4, 5, 6)
    np.testing.assert_array_equal(four['img'][1], img4[..., 1])


def test_load_volume_errors(tmp_path):
    with pytest.raises(OSError, match='missing.nii.gz'):
        LoadVolume()(dict(img_path=str(tmp_path / 'missing.nii.gz')))
    nib.save(nib.Nifti1Image(np.full((2, 2, 2), 0.5, np.float32), np.eye(4)),
             str(tmp_path / 'frac.nii.gz'))
    with pytest.raises(ValueError, match='frac.nii.gz: label values must be integers'):
        LoadVolumeAnnotation()(dict(seg_map_path=str(tmp_path / 'frac.nii.gz')))
    nib.save(nib.Nifti1Image(np.zeros((3, 2, 2), np.float32), np.eye(4)),
             str(tmp_path / 'other.nii.gz'))
    results = dict(img=np.zeros((1, 2, 2, 2), np.float32), img_path='img.nii.gz',
                   seg_map_path=str(tmp_path / 'other.nii.gz'))
    with pytest.raises(ValueError, match='other.nii.gz: label shape'):
        LoadVolumeAnnotation()(results)
    with pytest.raises(KeyError, match='no seg_map_path'):
        LoadVolumeAnnotation()(dict(img_path='x.nii.gz', seg_map_path=None))


def test_real_hippocampus_case():
    root = shared_data('hippocampus')
    for split, size in (('train', 162), ('val', 41), ('all', 203)):
        assert len(DecathlonDataset(data_root=str(root), split=split)) == size
    dataset = DecathlonDataset(data_root=str(root), split='val',
                               pipeline=[LoadVolume(), LoadVolumeAnnotation()])
    results = dataset[0]
    reference = nib.load(results['img_path'])
    assert results['img'].shape == (1,) + reference.shape
    np.testing.assert_array_equal(results['img'][0], reference.get_fdata(dtype=np.float32))
    np.testing.assert_array_equal(results['affine'], reference.affine)
    np.testing.assert_array_equal(results['spacing'], reference.header.get_zooms()[:3])
    assert results['gt_seg_map'].shape == reference.shape
    assert set(np.unique(results['gt_seg_map']).tolist()) <= {0, 1, 2}
    assert dataset.metainfo['classes'] == ('background', 'anterior', 'posterior')
    # a training pipeline on the real case
    pipeline = [ScaleIntensityRange(0, 1000), Spacing(1.5), PadToMultiple(16),
                RandCropByPosNegLabel((16, 16, 16), num_samples=2), RandFlip3D(0.5),
                RandRotate90(0.5)]
    np.random.seed(0)
    for t in pipeline:
        results = t(results)
    assert len(results) == 2
    for sample in results:
        assert sample['img'].shape == (1, 16, 16, 16) and sample['gt_seg_map'].shape == (16,) * 3


# ----------------------------------------------------------------------------- intensity


def test_scale_intensity_range_matches_monai():
    from monai.transforms import ScaleIntensityRange as MonaiScale
    img = np.random.default_rng(0).normal(0, 300, (2, 6, 7, 8)).astype(np.float32)
    for args in ((-175, 250, 0.0, 1.0, True), (-1000, 1000, -1.0, 2.0, False)):
        ours = ScaleIntensityRange(*args)(dict(img=img.copy()))['img']
        ref = np.asarray(MonaiScale(*args)(img.copy()))
        assert ours.dtype == np.float32
        assert np.abs(ours - ref).max() <= 1e-6
    with pytest.raises(ValueError, match='a_min == a_max'):
        ScaleIntensityRange(1, 1)


@pytest.mark.parametrize('nonzero, channel_wise', [(True, True), (False, True), (True, False),
                                                   (False, False)])
def test_normalize_intensity_matches_monai(nonzero, channel_wise):
    from monai.transforms import NormalizeIntensity as MonaiNorm
    rng = np.random.default_rng(1)
    img = rng.normal(50, 10, (3, 6, 7, 8)).astype(np.float32)
    img[:, :2] = 0  # a zero background
    img[2] = 0  # an all-zero channel (left unchanged with nonzero=True)
    img[1, 3:] = np.where(img[1, 3:] != 0, 7.0, 0)  # a constant foreground: std 0 -> 1
    ours = NormalizeIntensity(nonzero, channel_wise)(dict(img=img.copy()))['img']
    ref = np.asarray(MonaiNorm(nonzero=nonzero, channel_wise=channel_wise)(img.copy()))
    assert ours.dtype == np.float32 and ours.shape == img.shape
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=1e-5)
    if nonzero:
        assert (ours[img == 0] == 0).all()


# ----------------------------------------------------------------------------- padding


def test_pad_to_multiple_and_spatial_pad_at_end():
    img = np.arange(5 * 7 * 9, dtype=np.float32).reshape(1, 5, 7, 9)
    seg = np.ones((5, 7, 9), np.int64)
    out = PadToMultiple(4, pad_val=-1)(_results(img.copy(), seg.copy()))
    assert out['img'].shape == (1, 8, 8, 12) and out['gt_seg_map'].shape == (8, 8, 12)
    np.testing.assert_array_equal(out['img'][:, :5, :7, :9], img)
    assert (out['img'][:, 5:] == -1).all() and (out['img'][..., 9:] == -1).all()
    assert (out['gt_seg_map'][5:] == 255).all() and (out['gt_seg_map'][:, 7:] == 255).all()
    assert out['img_shape'] == (5, 7, 9) and out['pad_shape'] == (8, 8, 12)
    out = PadToMultiple((1, 2, 16))(_results(img.copy(), seg.copy()))
    assert out['pad_shape'] == (5, 8, 16)
    out = SpatialPad((6, 6, 6))(_results(img.copy(), seg.copy()))
    assert out['img'].shape == (1, 6, 7, 9) and out['img_shape'] == (5, 7, 9)
    np.testing.assert_array_equal(out['img'][:, :5], img)
    assert (out['gt_seg_map'][5] == 255).all()


# ----------------------------------------------------------------------------- spacing


def test_spacing_shapes_values_and_affine():
    d, h, w = 10, 20, 30
    grid = np.stack(np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing='ij'))
    img = (grid[0] * 1.0 + grid[1] * 2.0 + grid[2] * 3.0)[None].astype(np.float32)
    seg = (grid[0] // 5 + 2 * (grid[2] // 10)).astype(np.int64)
    results = _results(img, seg, spacing=(1.0, 1.0, 1.0))
    results['affine'] = AFFINE.copy()
    out = Spacing((2.0, 0.5, -1))(results)
    assert out['img'].shape == (1, 5, 40, 30) and out['gt_seg_map'].shape == (5, 40, 30)
    np.testing.assert_allclose(out['spacing'], [2.0, 0.5, 1.0])
    assert out['img_shape'] == (5, 40, 30)
    np.testing.assert_array_equal(out['affine'], AFFINE)  # the file's stays
    # new voxel j sits at old position ratio * j + (ratio - 1) / 2; a linear ramp is exact
    # there (interior, away from the clamped borders of the upsampled axis)
    pos = [2 * np.arange(5) + 0.5, 0.5 * np.arange(40) - 0.25, np.arange(30.0)]
    expect = pos[0][:, None, None] + 2 * pos[1][None, :, None] + 3 * pos[2][None, None, :]
    np.testing.assert_allclose(out['img'][0, :, 1:-1], expect[:, 1:-1], atol=1e-4)
    # labels: exact nearest (torch nearest-exact), never interpolated
    ref = F.interpolate(torch.from_numpy(seg)[None, None].float(), size=(5, 40, 30),
                        mode='nearest-exact')[0, 0].long().numpy()
    np.testing.assert_array_equal(out['gt_seg_map'], ref)
    # the resampled affine maps new voxel centres to the same world points
    j = np.array([3, 7, 11, 1.0])
    old = np.array([2 * 3 + 0.5, 0.5 * 7 - 0.25, 11, 1.0])
    np.testing.assert_allclose(out['resampled_affine'] @ j, AFFINE @ old)


def test_spacing_inverse_convention_recovers_labels():
    """Upsample x2, pad at the end, then crop to img_shape and resize to ori_shape
    (nearest-exact): the original labels come back exactly."""
    seg = np.random.default_rng(0).integers(0, 3, (5, 6, 7))
    results = _results(np.zeros((1, 5, 6, 7)), seg, spacing=(1.0, 1.0, 1.0))
    results = PadToMultiple(16)(Spacing(0.5)(results))
    assert results['gt_seg_map'].shape == (16, 16, 16) and results['img_shape'] == (10, 12, 14)
    pred = torch.from_numpy(results['gt_seg_map'])
    pred = pred[tuple(slice(0, s) for s in results['img_shape'])]
    back = F.interpolate(pred[None, None].float(), size=results['ori_shape'],
                         mode='nearest-exact')[0, 0].long().numpy()
    np.testing.assert_array_equal(back, seg)


# ----------------------------------------------------------------------------- random crops


def _coded_volume(shape=(20, 20, 20)):
    """Image whose value is the voxel's flat index, label with a small foreground block."""
    img = np.arange(np.prod(shape), dtype=np.float32).reshape((1,) + shape)
    seg = np.zeros(shape, np.int64)
    seg[2:5, 3:6, 14:17] = 1
    seg[3, 4, 15] = 2
    seg[0, 0, 0] = 255  # ignored voxels are never centres
    return img, seg


def test_rand_crop_pos_neg_statistics_and_alignment():
    img, seg = _coded_volume()
    crop = RandCropByPosNegLabel((8, 6, 4), pos=1, neg=3)
    np.random.seed(0)
    draws, fg_centres = 2000, 0
    for _ in range(draws):
        out = crop(_results(img, seg))
        (z0, z1), (y0, y1), (x0, x1) = out['crop_bbox']
        assert out['img'].shape == (1, 8, 6, 4) and out['img_shape'] == (8, 6, 4)
        assert 0 <= z0 and z1 <= 20 and 0 <= x0 and x1 <= 20
        np.testing.assert_array_equal(out['img'], img[:, z0:z1, y0:y1, x0:x1])
        np.testing.assert_array_equal(out['gt_seg_map'], seg[z0:z1, y0:y1, x0:x1])
        centre = out['crop_centre']
        assert seg[centre] != 255
        assert all(a <= c < b for c, (a, b) in zip(centre, out['crop_bbox']))  # inside
        fg_centres += seg[centre] > 0
    # binomial(2000, 0.25): std 0.0097
    assert abs(fg_centres / draws - 0.25) < 0.04


def test_rand_crop_centre_clamping_matches_monai():
    from monai.transforms.utils import correct_crop_centers
    img, seg = _coded_volume((9, 20, 18))
    size = (8, 6, 5)
    np.random.seed(2)
    for _ in range(300):
        out = RandCropByPosNegLabel(size, pos=1, neg=1)(_results(img, seg))
        centre = correct_crop_centers(list(out['crop_centre']), size, seg.shape)
        start = [int(c) - s // 2 for c, s in zip(centre, size)]
        assert [a for a, _ in out['crop_bbox']] == start


def test_rand_crop_fallbacks_padding_and_num_samples():
    img, seg = _coded_volume()
    np.random.seed(1)
    empty = np.zeros_like(seg)
    for _ in range(20):  # no foreground: pos-only falls back to background centres
        out = RandCropByPosNegLabel(4, pos=1, neg=0)(_results(img, empty))
        assert empty[out['crop_centre']] == 0
    for _ in range(20):  # pos-only always centres on foreground
        out = RandCropByPosNegLabel(4, pos=1, neg=0)(_results(img, seg))
        assert seg[out['crop_centre']] in (1, 2)
    small = _results(np.ones((1, 3, 4, 5)), np.ones((3, 4, 5)))
    out = RandCropByPosNegLabel((8, 8, 8))(small)
    assert out['img'].shape == (1, 8, 8, 8) and out['crop_bbox'][0] == (0, 8)
    np.testing.assert_array_equal(out['gt_seg_map'][:3, :4, :5], 1)
    assert (out['gt_seg_map'][3:] == 255).all() and (out['img'][:, 3:] == 0).all()
    many = RandCropByPosNegLabel(4, num_samples=3)(_results(img, seg))
    assert isinstance(many, list) and len(many) == 3
    many[0]['img'][:] = -1  # independent copies
    assert (many[1]['img'] >= 0).all() and (img >= 0).all()
    flipped = RandFlip3D(1.0, axes=(2,))(many)
    assert len(flipped) == 3 and all(s['flip_axes'] == (2,) for s in flipped)
    with pytest.raises(ValueError, match='pos and neg'):
        RandCropByPosNegLabel(4, pos=0, neg=0)


def test_multi_crop_samples_become_batch_samples_and_train():
    """``RandCropByPosNegLabel(num_samples=3)`` + ``PackInputs`` give a list per volume;
    ``flatten_collate`` makes 2 volumes x 3 crops a batch of 6 that a 3D U-Net trains on."""
    from toolbox.datasets import flatten_collate
    from toolbox.datasets.transforms import PackInputs
    from toolbox.registry import FUNCTIONS
    np.random.seed(0)
    img, seg = _coded_volume()
    items = [PackInputs()(RandCropByPosNegLabel(8, num_samples=3)(_results(img / img.max(),
                                                                           seg)))
             for _ in range(2)]
    assert all(isinstance(item, list) and len(item) == 3 for item in items)
    batch = FUNCTIONS.get('flatten_collate')(items)
    assert len(batch['inputs']) == 6 and len(batch['data_samples']) == 6
    model = MODELS.build(dict(
        type='EncoderDecoder', data_preprocessor=dict(type='DataPreprocessor'),
        backbone=dict(type='UNetEncoder', in_channels=1, base_channels=4, num_stages=2,
                      spatial_dims=3, norm_cfg=dict(type='IN')),
        decode_head=dict(type='UNetHead', in_channels=(4, 8), channels=4, num_classes=3,
                         norm_cfg=dict(type='IN'), dropout_ratio=0.0, spatial_dims=3,
                         loss_decode=dict(type='DiceCELoss'))))
    data = model.data_preprocessor(batch, training=True)
    assert tuple(data['inputs'].shape) == (6, 1, 8, 8, 8)
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss_dice_ce'])
    single = flatten_collate([items[0][0], items[1][0]])  # single samples pass unchanged
    assert len(single['inputs']) == 2


# ----------------------------------------------------------------------------- flips, rot90


def test_flip_and_rot90_keep_alignment():
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 5, (4, 6, 8))
    np.random.seed(3)
    seen_flips, seen_k = set(), set()
    for _ in range(40):
        results = _results(seg[None].astype(np.float32) * 10, seg, spacing=(1.0, 2.0, 3.0))
        results = RandRotate90(0.7, max_k=3, axes=(0, 2))(RandFlip3D(0.5)(results))
        np.testing.assert_array_equal(results['img'][0], results['gt_seg_map'] * 10)
        assert results['img_shape'] == results['gt_seg_map'].shape
        k = results['rot90'][0]
        seen_flips.add(results['flip_axes'])
        seen_k.add(k)
        expected = [3.0, 2.0, 1.0] if k % 2 else [1.0, 2.0, 3.0]
        np.testing.assert_array_equal(results['spacing'], expected)
    assert len(seen_flips) >= 6 and seen_k == {0, 1, 2, 3}
    out = RandFlip3D(1.0, axes=(0, 2))(_results(seg[None].astype(np.float32), seg))
    np.testing.assert_array_equal(out['gt_seg_map'], seg[::-1, :, ::-1])
    # direction as MONAI's Rotate90 (and np.rot90)
    from monai.transforms import Rotate90
    img = rng.normal(size=(2, 4, 6, 8)).astype(np.float32)
    out = RandRotate90(1.0, max_k=1, axes=(0, 1))(_results(img, seg))
    np.testing.assert_array_equal(out['img'], np.asarray(Rotate90(1, (0, 1))(img)))
    np.testing.assert_array_equal(out['gt_seg_map'], np.rot90(seg, 1, (0, 1)))
    assert out['img_shape'] == (6, 4, 8)


def test_transforms_build_from_registry():
    for cfg in (dict(type='LoadVolume', cache=True), dict(type='Spacing', pixdim=1.5),
                dict(type='RandCropByPosNegLabel', size=16, num_samples=2),
                dict(type='NormalizeIntensity'), dict(type='PadToMultiple', divisor=16)):
        assert TRANSFORMS.build(cfg).__class__.__name__ == cfg['type']


# ----------------------------------------------------------------------------- Dice loss


@pytest.mark.parametrize('shape', [(2, 3, 6, 7, 8), (3, 4, 9, 11)])
@pytest.mark.parametrize('include_background, batch', [(True, False), (False, False),
                                                      (True, True)])
def test_dice_losses_match_monai(shape, include_background, batch):
    from monai.losses import DiceCELoss as MonaiDiceCE
    from monai.losses import DiceLoss as MonaiDice
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=gen)
    kwargs = dict(include_background=include_background, batch=batch)
    ours = DiceLoss(**kwargs)(logits, labels)
    ref = MonaiDice(to_onehot_y=True, softmax=True, **kwargs)(logits, labels[:, None])
    assert abs(ours.item() - ref.item()) < 1e-6
    ours = DiceCELoss(**kwargs)(logits, labels)
    ref = MonaiDiceCE(to_onehot_y=True, softmax=True, **kwargs)(logits, labels[:, None])
    assert abs(ours.item() - ref.item()) < 1e-6
    # float32 as used in training
    ours = DiceCELoss(**kwargs)(logits.float(), labels)
    ref = MonaiDiceCE(to_onehot_y=True, softmax=True, **kwargs)(logits.float(), labels[:, None])
    assert abs(ours.item() - ref.item()) < 1e-6


def test_dice_loss_hand_case():
    # uniform logits: p = 0.5 everywhere; labels [0, 1] -> each class: I = 0.5, |p| = 1, |g| = 1
    logits = torch.zeros(1, 2, 1, 2)
    labels = torch.tensor([[[0, 1]]])
    expected = 1 - (2 * 0.5 + 1e-5) / (2 + 1e-5)
    assert abs(DiceLoss()(logits, labels).item() - expected) < 1e-7
    # confident and right: loss ~ 0; CE part ~ 0 too
    logits = torch.tensor([[[[20.0, -20.0]], [[-20.0, 20.0]]]])
    assert DiceCELoss()(logits, labels).item() < 1e-6
    loss = DiceLoss(reduction='none')(logits, labels)
    assert loss.shape == (1, 2)


def test_dice_loss_ignore_index():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 5, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (1, 5, 6, 7), generator=gen)
    labels[0, :2] = 255
    keep = labels[0] != 255
    # same as MONAI on the non-ignored voxels only (flattened to one spatial axis)
    sub_logits = logits[0][:, keep][None]
    sub_labels = labels[0][keep][None]
    for ours_cls, ref_cls in ((DiceLoss, monai.losses.DiceLoss),
                              (DiceCELoss, monai.losses.DiceCELoss)):
        ours = ours_cls()(logits, labels)
        ref = ref_cls(to_onehot_y=True, softmax=True)(sub_logits, sub_labels[:, None])
        assert abs(ours.item() - ref.item()) < 1e-6
    DiceCELoss()(logits, labels).backward()
    assert logits.grad[0, :, :2].abs().max() == 0 and logits.grad[0, :, 2:].abs().max() > 0
    # every voxel ignored: finite, zero, no gradient
    logits.grad = None
    all_ignored = torch.full_like(labels, 255)
    loss = DiceCELoss()(logits, all_ignored)
    loss.backward()
    assert loss.item() == 0 and logits.grad.abs().max() == 0
    # a per-call ignore_index (as the decode head passes it)
    other = labels.where(labels != 255, torch.full_like(labels, -1))
    assert torch.allclose(DiceLoss()(logits, other, ignore_index=-1),
                          DiceLoss()(logits, labels))


def test_dice_loss_errors_and_registry():
    logits = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match=r'labels \[5\] are outside 0..1'):
        DiceLoss()(logits, torch.full((1, 3, 3), 5))
    with pytest.raises(ValueError, match='does not match logits'):
        DiceLoss()(logits, torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match='weight'):
        DiceLoss()(logits, torch.zeros(1, 3, 3, dtype=torch.long), weight=torch.ones(1))
    loss = MODELS.build(dict(type='DiceCELoss'))
    assert loss.loss_name == 'loss_dice_ce'
    assert MODELS.build(dict(type='DiceLoss')).loss_name == 'loss_dice'
    assert dice_loss(logits, torch.zeros(1, 3, 3, dtype=torch.long)).shape == (1, 2)


# ----------------------------------------------------------------------------- Dice metric


def _sample(pred, gt):
    """A data sample as the segmentor returns it: PixelData for 2D maps, the volume field
    (``VolumeData``, or any element with ``.data``) for 3D."""
    sample = DataSample()
    field = PixelData if torch.as_tensor(pred).dim() == 2 else VolumeData
    sample.pred_sem_seg = field(data=torch.as_tensor(pred)[None])
    sample.gt_sem_seg = field(data=torch.as_tensor(gt)[None])
    return sample


def _evaluate(metric, preds, gts, classes=('background', 'a', 'b', 'c')):
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, [_sample(p, g) for p, g in zip(preds, gts)])
    return metric.evaluate(len(preds))


def _random_cases(seed, shape, empty_fp):
    """Random label maps; some cases lack class 2 or 3 in the ground truth, with
    (``empty_fp``) or without a prediction of it."""
    gen = torch.Generator().manual_seed(seed)
    preds = [torch.randint(0, 4, shape, generator=gen) for _ in range(6)]
    gts = [torch.randint(0, 4, shape, generator=gen) for _ in range(6)]
    gts[1][gts[1] == 3] = 0
    gts[2][gts[2] == 2] = 1
    gts[4][gts[4] >= 2] = 0
    if not empty_fp:
        preds[1][preds[1] == 3] = 0
        preds[2][preds[2] == 2] = 0
        preds[4][preds[4] >= 2] = 0
    return preds, gts


def _monai_dice(preds, gts, ignore_empty=True):
    from monai.metrics import DiceMetric as MonaiDiceMetric
    ref = MonaiDiceMetric(include_background=False, reduction='mean_batch',
                          ignore_empty=ignore_empty)
    onehot = lambda x: F.one_hot(x, 4).movedim(-1, 0)[None]  # noqa: E731
    for p, g in zip(preds, gts):
        ref(onehot(p), onehot(g))
    return ref.aggregate().numpy()


@pytest.mark.parametrize('shape', [(6, 7, 8), (9, 10)])
def test_dice_metric_matches_monai(shape):
    # MONAI's rule (every empty ground truth skipped), false positives on empty cases included
    preds, gts = _random_cases(0, shape, empty_fp=True)
    ref = _monai_dice(preds, gts)
    out = _evaluate(DiceMetric(empty_gt='ignore'), preds, gts)
    ours = np.array([out['Dice.a'], out['Dice.b'], out['Dice.c']])
    assert np.abs(ours - ref).max() < 1e-6
    assert abs(out['mDice'] - ref.mean()) < 1e-6
    # default rule: identical to MONAI when empty ground truth is also empty in the prediction
    preds, gts = _random_cases(1, shape, empty_fp=False)
    ref = _monai_dice(preds, gts)
    out = _evaluate(DiceMetric(), preds, gts)
    assert np.abs(np.array([out['Dice.a'], out['Dice.b'], out['Dice.c']]) - ref).max() < 1e-6


def test_dice_metric_hand_cases_and_empty_rules():
    gt1 = torch.tensor([[1, 1, 0, 0], [2, 2, 0, 0]])
    pred1 = torch.tensor([[1, 0, 0, 0], [2, 2, 2, 0]])
    # class 1: |G|=2 |P|=1 I=1 -> 2/3; class 2: |G|=2 |P|=3 I=2 -> 4/5
    gt2 = torch.zeros(2, 4, dtype=torch.long)  # classes 1, 2 absent
    pred2 = torch.tensor([[0, 0, 0, 0], [0, 2, 0, 0]])  # class 2 predicted: false positive
    metric = DiceMetric()
    out = _evaluate(metric, [pred1, pred2], [gt1, gt2], classes=('bg', 'one', 'two'))
    assert set(out) == {'Dice.one', 'Dice.two', 'mDice'}
    assert abs(out['Dice.one'] - 2 / 3) < 1e-12  # case 2 skipped for class 1 (NaN)
    assert abs(out['Dice.two'] - (4 / 5 + 0) / 2) < 1e-12  # case 2's false positive -> 0
    assert abs(out['mDice'] - (2 / 3 + 0.4) / 2) < 1e-12
    assert np.isnan(metric.per_case[1, 1]) and metric.per_case[1, 2] == 0
    out = _evaluate(DiceMetric(empty_gt='ignore'), [pred1, pred2], [gt1, gt2],
                    classes=('bg', 'one', 'two'))
    assert abs(out['Dice.two'] - 0.8) < 1e-12
    # background included; ignored voxels excluded; gt padded larger than the prediction
    gt = torch.full((3, 5), 255)
    gt[:2, :4] = gt1
    gt[0, 0] = 255  # ignored voxel predicted as class 1: not counted
    out = _evaluate(DiceMetric(include_background=True), [pred1], [gt],
                    classes=('bg', 'one', 'two'))
    # valid voxels: gt1 without (0, 0). bg: |G| = 4, |P| = 4 ((0,1) (0,2) (0,3) (1,3)), I = 3
    assert abs(out['Dice.bg'] - 0.75) < 1e-12
    assert abs(out['Dice.one'] - 0.0) < 1e-12  # G = {(0,1)}, P = {} after ignoring (0,0)
    # a class absent everywhere: NaN, left out of mDice
    out = _evaluate(DiceMetric(), [gt1], [gt1], classes=('bg', 'one', 'two', 'three'))
    assert np.isnan(out['Dice.three']) and out['mDice'] == 1.0


def test_dice_metric_errors_and_registry():
    metric = METRICS.build(dict(type='DiceMetric', num_classes=3))
    metric.dataset_meta = dict(classes=('bg', 'a', 'b'))
    with pytest.raises(ValueError, match=r'labels \[7\] are outside 0..2'):
        metric.process({}, [_sample(torch.full((2, 2), 7), torch.zeros(2, 2, dtype=torch.long))])
    with pytest.raises(ValueError, match='smaller than the prediction'):
        metric.process({}, [_sample(torch.zeros(3, 3, dtype=torch.long),
                                    torch.zeros(2, 3, dtype=torch.long))])
    with pytest.raises(ValueError, match='empty_gt'):
        DiceMetric(empty_gt='zero')


def test_dice_metric_resampled_ground_truth(tmp_path):
    _, seg = _write_case(tmp_path, 'a')
    path = str(tmp_path / 'labelsTr' / 'a.nii.gz')
    gt = torch.from_numpy(seg.astype(np.int64))
    sample = _sample(gt, torch.zeros(8, 10, 12, dtype=torch.long))  # a resampled gt
    sample.set_metainfo(dict(seg_map_path=path, img_path='a', spacing=np.array([1.0, 0.75, 1.5]),
                             ori_spacing=np.array([2.0, 1.5, 3.0])))
    metric = DiceMetric(num_classes=3)
    with pytest.raises(ValueError, match='gt_from_file=True'):
        metric.process({}, [sample])
    metric = DiceMetric(num_classes=3, gt_from_file=True)
    metric.process({}, [sample])
    assert metric.compute_metrics(metric.results)['mDice'] == 1.0
