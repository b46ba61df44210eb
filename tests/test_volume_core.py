"""Volumes (C, D, H, W) through the core: VolumeData, PackInputs, DataPreprocessor, the
EncoderDecoder's training step, whole / slide / MONAI-style sliding-window inference and the
original-frame postprocess, and the NIfTI writer of tools/test.py --save-nifti."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.model import ImgDataPreprocessor
from torch import nn

from toolbox.datasets.transforms import PackInputs
from toolbox.engine.hooks import SaveNiftiHook, nifti_case_name
from toolbox.models.bases import BaseDecodeHead
from toolbox.models.segmentors.encoder_decoder import EncoderDecoder, importance_map
from toolbox.registry import MODELS
from toolbox.structures import DataSample, InstanceData, PixelData, VolumeData

import monai.inferers as monai_inferers  # noqa: E402  (pinned in requirements/tests.txt)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- VolumeData

def test_volume_data_holds_channel_first_4d_fields_of_one_spatial_shape():
    labels = VolumeData(data=torch.zeros(1, 4, 5, 6, dtype=torch.long), metainfo=dict(a=1))
    assert labels.shape == (4, 5, 6)
    labels.logits = np.zeros((3, 4, 5, 6), np.float32)  # numpy too, any channel count
    assert labels.to('cpu').shape == labels.clone().shape == (4, 5, 6)
    assert VolumeData().shape is None
    with pytest.raises(ValueError, match=r'4 dims \(C, D, H, W\)'):
        VolumeData(data=torch.zeros(4, 5, 6))
    with pytest.raises(ValueError, match='spatial shape'):
        labels.other = torch.zeros(1, 4, 5, 7)
    with pytest.raises(ValueError, match='torch.Tensor or np.ndarray'):
        labels.name = [1, 2]


def test_data_sample_segmentation_fields_take_pixel_or_volume_data():
    sample = DataSample()
    sample.gt_sem_seg = VolumeData(data=torch.zeros(1, 2, 3, 4, dtype=torch.long))
    sample.pred_sem_seg = VolumeData(data=torch.zeros(1, 2, 3, 4, dtype=torch.long))
    sample.seg_logits = VolumeData(data=torch.zeros(5, 2, 3, 4))
    assert sample.seg_logits.shape == (2, 3, 4)
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 3, 4, dtype=torch.long))
    sample.seg_logits = PixelData(data=torch.zeros(5, 3, 4))
    for field in ('gt_sem_seg', 'pred_sem_seg', 'seg_logits'):
        with pytest.raises(AssertionError):
            setattr(sample, field, InstanceData())


# ----------------------------------------------------------------------------- PackInputs

def _volume_results(shape=(5, 6, 7), channels=2, seed=0):
    rng = np.random.default_rng(seed)
    affine = np.diag([1.5, 0.8, 2.0, 1.0])
    affine[:3, 3] = (-10.0, 4.0, 2.5)
    return dict(img=rng.normal(size=(channels, *shape)).astype(np.float32),
                gt_seg_map=rng.integers(0, 3, size=shape).astype(np.int64),
                spatial_dims=3, img_path='/data/imagesTr/case_001.nii.gz',
                seg_map_path='/data/labelsTr/case_001.nii.gz', ori_shape=(10, 12, 14),
                img_shape=shape, affine=affine, spacing=np.array([3.0, 1.6, 4.0]),
                ori_spacing=np.array([1.5, 0.8, 2.0]), flip_axes=(2,))


def test_pack_inputs_packs_a_volume_channel_first_with_its_metainfo():
    results = _volume_results()
    packed = PackInputs()(results)
    inputs, sample = packed['inputs'], packed['data_samples']
    assert inputs.shape == (2, 5, 6, 7) and inputs.dtype == torch.float32
    assert torch.equal(inputs, torch.from_numpy(results['img']))
    assert isinstance(sample.gt_sem_seg, VolumeData)
    assert sample.gt_sem_seg.data.shape == (1, 5, 6, 7)
    assert sample.gt_sem_seg.data.dtype == torch.int64
    assert torch.equal(sample.gt_sem_seg.data[0], torch.from_numpy(results['gt_seg_map']))
    meta = sample.metainfo
    assert meta['pad_shape'] == (5, 6, 7) and meta['img_shape'] == (5, 6, 7)
    assert meta['ori_shape'] == (10, 12, 14) and meta['flip_axes'] == (2,)
    assert meta['seg_map_path'].endswith('case_001.nii.gz')
    np.testing.assert_array_equal(meta['affine'], results['affine'])
    np.testing.assert_array_equal(meta['spacing'], results['spacing'])
    np.testing.assert_array_equal(meta['ori_spacing'], results['ori_spacing'])
    assert 'scale_factor' not in meta  # a 2D notion
    # a multi-sample crop (a list of results) packs to a list of samples
    many = PackInputs()([_volume_results(seed=1), _volume_results(seed=2)])
    assert [m['inputs'].shape for m in many] == [(2, 5, 6, 7)] * 2
    with pytest.raises(ValueError, match=r'\(C, D, H, W\)'):
        PackInputs()(dict(_volume_results(), img=np.zeros((5, 6, 7), np.float32)))


def test_pack_inputs_2d_is_unchanged():
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    packed = PackInputs()(dict(img=img, gt_seg_map=np.ones((4, 5), np.uint8), img_id=3,
                               img_shape=(4, 5), ori_shape=(4, 5)))
    assert torch.equal(packed['inputs'], torch.from_numpy(img).permute(2, 0, 1))
    sample = packed['data_samples']
    assert isinstance(sample.gt_sem_seg, PixelData) and sample.gt_sem_seg.data.shape == (1, 4, 5)
    assert sample.scale_factor == (1.0, 1.0) and sample.pad_shape == (4, 5)


# ----------------------------------------------------------------------------- DataPreprocessor

def _volume_sample(img_shape, seg_shape):
    sample = DataSample(metainfo=dict(img_shape=img_shape))
    sample.gt_sem_seg = VolumeData(data=torch.ones(1, *seg_shape, dtype=torch.long))
    return sample


def test_data_preprocessor_end_pads_volumes_to_the_divisor_and_pads_labels_with_255():
    pre = MODELS.build(dict(type='DataPreprocessor', pad_size_divisor=4, pad_value=-1,
                            seg_pad_value=255))
    volumes = [torch.full((1, 5, 6, 7), 2.0), torch.full((1, 9, 4, 3), 3.0),
               torch.full((1, 4, 4, 4), 4.0)]
    samples = [_volume_sample((5, 6, 7), (5, 6, 7)),     # moved with the volume: padded
               _volume_sample((9, 4, 3), (18, 8, 6)),    # in the original frame: kept
               _volume_sample((3, 3, 3), (4, 4, 4))]     # padded by the pipeline: padded
    out = pre(dict(inputs=volumes, data_samples=samples), training=True)
    inputs = out['inputs']
    assert inputs.shape == (3, 1, 12, 8, 8) and inputs.dtype == torch.float32
    assert inputs[0, :, :5, :6, :7].eq(2).all() and inputs[1, :, :9, :4, :3].eq(3).all()
    assert inputs[0].eq(-1).sum() == 12 * 8 * 8 - 5 * 6 * 7   # padding at the end only
    assert inputs[1].eq(-1).sum() == 12 * 8 * 8 - 9 * 4 * 3
    seg0, seg1, seg2 = (s.gt_sem_seg for s in out['data_samples'])
    assert isinstance(seg0, VolumeData) and seg0.data.shape == (1, 12, 8, 8)
    assert seg0.data[0, :5, :6, :7].eq(1).all() and seg0.data.eq(255).sum() == 12 * 8 * 8 - 210
    assert seg1.data.shape == (1, 18, 8, 6) and seg1.data.eq(1).all()
    assert seg2.data.shape == (1, 12, 8, 8) and seg2.data.eq(1).sum() == 64
    for sample in out['data_samples']:
        assert sample.batch_input_shape == sample.pad_shape == (12, 8, 8)


def test_data_preprocessor_normalises_any_channel_count_of_volumes_before_padding():
    pre = MODELS.build(dict(type='DataPreprocessor', mean=[1.0, 2.0], std=[2.0, 4.0],
                            pad_size_divisor=2))
    vol = torch.stack([torch.full((3, 3, 3), 5.0), torch.full((3, 3, 3), 10.0)])
    inputs = pre(dict(inputs=[vol]))['inputs']   # no data samples: inputs only
    assert inputs.shape == (1, 2, 4, 4, 4)
    assert inputs[0, 0, :3, :3, :3].eq(2.0).all() and inputs[0, 1, :3, :3, :3].eq(2.0).all()
    assert inputs[0, :, 3].eq(0).all()           # padding after normalisation: pad_value
    # a collated (B, C, D, H, W) tensor is a volume batch too
    assert pre(dict(inputs=vol[None]))['inputs'].shape == (1, 2, 4, 4, 4)
    with pytest.raises(ValueError, match='images only'):
        MODELS.build(dict(type='DataPreprocessor', bgr_to_rgb=True))(dict(inputs=[vol]))
    with pytest.raises(ValueError, match='same length'):
        MODELS.build(dict(type='DataPreprocessor', mean=[1.0, 2.0], std=[1.0]))


def test_data_preprocessor_2d_equals_mmengine():
    kwargs = dict(mean=[10., 20., 30.], std=[2., 3., 4.], bgr_to_rgb=True, pad_size_divisor=8)
    images = [torch.randint(0, 255, (3, 5, 6), generator=_gen(0), dtype=torch.uint8),
              torch.randint(0, 255, (3, 9, 4), generator=_gen(1), dtype=torch.uint8)]
    ours = MODELS.build(dict(type='DataPreprocessor', **kwargs))(dict(inputs=images))['inputs']
    ref = ImgDataPreprocessor(**kwargs)(dict(inputs=images))['inputs']
    assert ours.shape == (2, 3, 16, 8) and torch.equal(ours, ref)


# ----------------------------------------------------------------------------- EncoderDecoder

class TinyConv3dBackbone(nn.Module):
    """(B, 1, D, H, W) -> ((B, 8, D/2, H/2, W/2),): two 3x3x3 convs, the second strided."""

    def __init__(self, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, 4, 3, padding=1)
        self.conv2 = nn.Conv3d(4, 8, 3, padding=1, stride=2)

    def forward(self, x):
        return (torch.relu(self.conv2(torch.relu(self.conv1(x)))),)


class TinyHead(BaseDecodeHead):
    """The decode head contract on the backbone's only map (3 classes)."""

    def __init__(self, spatial_dims=3, channels=8):
        super().__init__(in_channels=channels, channels=channels, num_classes=3,
                         norm_cfg=None, dropout_ratio=0.0, spatial_dims=spatial_dims)

    def features(self, feats):
        return feats[0]


class TinyConv2dBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1, stride=2)

    def forward(self, x):
        return (torch.relu(self.conv2(torch.relu(self.conv1(x)))),)


def tiny_segmentor(test_cfg=None, spatial_dims=3):
    torch.manual_seed(0)
    backbone = TinyConv3dBackbone() if spatial_dims == 3 else TinyConv2dBackbone()
    return MODELS.build(dict(type='EncoderDecoder', backbone=backbone,
                             decode_head=TinyHead(spatial_dims), test_cfg=test_cfg,
                             data_preprocessor=dict(type='DataPreprocessor',
                                                    pad_size_divisor=4)))


def test_3d_segmentor_trains_one_step_on_packed_volumes():
    model = tiny_segmentor()
    packed = [PackInputs()(dict(_volume_results((6, 7, 5), channels=1, seed=k),
                                ori_shape=(6, 7, 5))) for k in range(2)]
    data = model.data_preprocessor(dict(inputs=[p['inputs'] for p in packed],
                                        data_samples=[p['data_samples'] for p in packed]),
                                   training=True)
    assert data['inputs'].shape == (2, 1, 8, 8, 8)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_ce', 'acc_seg'}
    assert torch.isfinite(losses['loss_ce']) and losses['loss_ce'].item() > 0
    losses['loss_ce'].backward()
    for module in (model.backbone.conv1, model.decode_head.conv_seg):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0


def test_3d_predict_crops_padding_undoes_flip_and_resizes_trilinearly_to_the_original():
    model = tiny_segmentor().eval()
    x = torch.randn(1, 1, 12, 16, 16, generator=_gen(5))
    sample = DataSample(metainfo=dict(img_shape=(10, 13, 15), ori_shape=(20, 26, 30),
                                      flip_axes=(0, 2), batch_input_shape=(12, 16, 16)))
    with torch.no_grad():
        expected = model.encode_decode(x)[:, :, :10, :13, :15].flip([2, 4])
        expected = F.interpolate(expected, size=(20, 26, 30), mode='trilinear',
                                 align_corners=False)
        out = model.predict(x, [sample])[0]
    assert isinstance(out.seg_logits, VolumeData) and isinstance(out.pred_sem_seg, VolumeData)
    assert out.seg_logits.data.shape == (3, 20, 26, 30)
    assert (out.seg_logits.data - expected[0]).abs().max().item() < 1e-6
    assert out.pred_sem_seg.data.shape == (1, 20, 26, 30)
    assert torch.equal(out.pred_sem_seg.data, expected[0].argmax(0, keepdim=True))


def test_3d_slide_equals_whole_for_a_context_free_model():
    torch.manual_seed(0)
    pointwise = nn.Sequential(nn.Conv3d(1, 8, 1), nn.Tanh())

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = pointwise

        def forward(self, x):
            return (self.body(x),)

    whole = EncoderDecoder(Backbone(), TinyHead()).eval()
    slide = EncoderDecoder(Backbone(), TinyHead(),
                           test_cfg=dict(mode='slide', crop_size=(4, 6, 5), stride=(3, 4, 4)))
    slide.load_state_dict(whole.state_dict())
    slide.eval()
    x = torch.randn(2, 1, 9, 11, 3, generator=_gen(6))   # last axis shorter than the window
    with torch.no_grad():
        a, b = whole.inference(x), slide.inference(x)
    assert a.shape == b.shape == (2, 3, 9, 11, 3)
    assert (a - b).abs().max().item() < 1e-6


MONAI_CASES = [  # (input shape, sliding-window config)
    ((2, 1, 19, 23, 17), dict(roi_size=(8, 12, 10), sw_batch_size=3, overlap=0.4)),
    ((1, 1, 5, 7, 9), dict(roi_size=(8, 12, 10), sw_batch_size=2)),  # smaller than the roi
    ((1, 1, 5, 30, 9), dict(roi_size=(8, 12, 10), sw_batch_size=4, overlap=(0.5, 0.25, 0.0),
                            padding_mode='reflect', sigma_scale=(0.125, 0.25, 0.2))),
    ((1, 1, 6, 20, 16), dict(roi_size=(6, 8, 8), sw_batch_size=1, cval=-2.0)),
]


@pytest.mark.parametrize('blend', ['constant', 'gaussian'])
@pytest.mark.parametrize('shape,cfg', MONAI_CASES)
def test_sliding_window_equals_monai(shape, cfg, blend):
    model = tiny_segmentor(dict(mode='sliding_window', blend=blend, **cfg)).eval()
    x = torch.randn(*shape, generator=_gen(7))
    full = dict(model.test_cfg)
    with torch.no_grad():
        ours = model.inference(x)
        ref = monai_inferers.sliding_window_inference(
            x, full['roi_size'], full['sw_batch_size'], model.encode_decode,
            overlap=full['overlap'], mode=blend, sigma_scale=full['sigma_scale'],
            padding_mode=full['padding_mode'], cval=full['cval'])
    assert ours.shape == ref.shape == (shape[0], 3, *shape[2:])
    assert (ours - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize('blend', ['constant', 'gaussian'])
def test_2d_sliding_window_equals_monai(blend):
    model = tiny_segmentor(dict(mode='sliding_window', roi_size=(12, 8), sw_batch_size=3,
                                overlap=0.5, blend=blend), spatial_dims=2).eval()
    x = torch.randn(2, 1, 29, 6, generator=_gen(8))
    with torch.no_grad():
        ours = model.inference(x)
        ref = monai_inferers.sliding_window_inference(x, (12, 8), 3, model.encode_decode,
                                                      overlap=0.5, mode=blend)
    assert ours.shape == ref.shape == (2, 3, 29, 6)
    assert (ours - ref).abs().max().item() < 1e-5


def test_importance_map_equals_monai():
    from monai.data.utils import compute_importance_map
    for roi, sigma in (((8, 12, 10), 0.125), ((5, 6), (0.3, 0.1)), ((1, 4, 3), 0.125)):
        for blend in ('constant', 'gaussian'):
            ref = compute_importance_map(roi, mode=blend, sigma_scale=sigma)
            assert torch.equal(importance_map(roi, blend, sigma), ref)


def test_sliding_window_config_is_validated():
    with pytest.raises(ValueError, match='roi_size'):
        tiny_segmentor(dict(mode='sliding_window'))
    with pytest.raises(ValueError, match='overlap'):
        tiny_segmentor(dict(mode='sliding_window', roi_size=(8, 8, 8), overlap=1.0))
    with pytest.raises(ValueError, match='blend'):
        tiny_segmentor(dict(mode='sliding_window', roi_size=(8, 8, 8), blend='gauss'))
    with pytest.raises(ValueError, match='unknown keys'):
        tiny_segmentor(dict(mode='sliding_window', roi_size=(8, 8, 8), mode_blend='gaussian'))
    with pytest.raises(ValueError, match='same length'):
        tiny_segmentor(dict(mode='slide', crop_size=(8, 8, 8), stride=(4, 4)))
    model = tiny_segmentor(dict(mode='sliding_window', roi_size=(8, 8)))
    with pytest.raises(ValueError, match='2 axes'):
        model.inference(torch.zeros(1, 1, 8, 8, 8))


# ----------------------------------------------------------------------------- NIfTI output

def test_save_nifti_hook_round_trip_keeps_affine_and_original_shape(tmp_path):
    import nibabel
    results = _volume_results()
    sample = DataSample(metainfo=dict(img_path=results['img_path'],
                                      affine=results['affine'], ori_shape=(10, 12, 14),
                                      img_shape=(5, 6, 7)))
    logits = torch.randn(1, 3, 8, 8, 8, generator=_gen(9))  # padded batch input
    model = tiny_segmentor().eval()
    sample = model.postprocess(logits, [sample])[0]           # -> original frame
    big = DataSample(metainfo=dict(img_path='/x/case_002.nii', affine=np.eye(4),
                                   ori_shape=(2, 3, 4)))
    big.pred_sem_seg = VolumeData(data=torch.full((1, 2, 3, 4), 300, dtype=torch.long))
    hook = SaveNiftiHook(str(tmp_path / 'preds'))
    hook.after_test_iter(None, 0, outputs=[sample, big])
    assert hook.num_written == 2
    image = nibabel.load(str(tmp_path / 'preds' / 'case_001.nii.gz'))
    np.testing.assert_allclose(image.affine, results['affine'], atol=1e-6)
    assert image.shape == (10, 12, 14) and image.get_data_dtype() == np.uint8
    data = np.asarray(image.dataobj)
    np.testing.assert_array_equal(data, sample.pred_sem_seg.data[0].numpy())
    assert np.asarray(nibabel.load(str(tmp_path / 'preds' / 'case_002.nii.gz')).dataobj).dtype \
        == np.int16                                           # labels beyond uint8
    assert sorted(p.name for p in (tmp_path / 'preds').iterdir()) == [
        'case_001.nii.gz', 'case_002.nii.gz']                 # no temporary file left
    assert nifti_case_name('/a/b/la_003.nii.gz') == 'la_003'
    flat = DataSample(metainfo=dict(img_path='x.nii.gz', affine=np.eye(4)))
    flat.pred_sem_seg = PixelData(data=torch.zeros(1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match='volume'):
        hook.after_test_iter(None, 1, outputs=[flat])


def test_test_tool_has_the_save_nifti_option():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'tools' / 'test.py'
    spec = importlib.util.spec_from_file_location('toolbox_tools_test', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = tool.parse_args(['cfg.py', 'ckpt.pth', '--save-nifti', 'out/nifti'])
    assert args.save_nifti == 'out/nifti'
