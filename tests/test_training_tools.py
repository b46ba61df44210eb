"""Training tools from configs: mixed precision, channels-last, EMA, best checkpoint, early
stopping, LR scaled by batch size; the VOC metric's legacy pixel convention."""
import copy
import glob

import numpy as np
import pytest
import torch

from toolbox.engine import build_runner, load_checkpoint_file, load_config
from toolbox.engine.precision import (AutocastOptimWrapper, apply_precision, cpu_bf16_speedup,
                                      cpu_bf16_units, resolve_precision)
from toolbox.evaluation.voc_metric import bbox_iou, eval_voc_map
from toolbox.registry import MODELS

from .conftest import REPO_ROOT
from .helpers import load_tool
from .test_engine import _demo_cfg

DEMO = str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py')


# ----------------------------------------------------------------------------- precision
def test_precision_resolution_on_gpu_cpu_and_cpu_without_bf16_units(tmp_path):
    assert resolve_precision('amp', cuda=True) == 'fp16'
    assert resolve_precision('amp', cuda=False, bf16_units=['avx512_bf16'],
                             bf16_speedup=1.9) == 'bf16'
    assert resolve_precision('bf16', cuda=True) == 'bf16'
    # avx512_bf16 without AMX where bf16 measures slower than fp32: fp32, saying so
    with pytest.warns(UserWarning, match='avx512_bf16 without AMX.*0.70x the fp32.*fp32'):
        assert resolve_precision('bf16', cuda=False, bf16_units=['avx512_bf16'],
                                 bf16_speedup=0.7) == 'fp32'
    # AMX always pays: no probe
    assert resolve_precision('bf16', cuda=False, bf16_units=['avx512_bf16', 'amx_bf16'],
                             bf16_speedup=0.7) == 'bf16'
    with pytest.warns(UserWarning, match='no bf16 matrix units.*running in fp32'):
        assert resolve_precision('amp', cuda=False, bf16_units=[]) == 'fp32'
    with pytest.raises(ValueError, match="'fp16' needs a GPU"):
        resolve_precision('fp16', cuda=False)
    with pytest.raises(ValueError, match='precision must be one of'):
        resolve_precision('half')
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n')
    assert cpu_bf16_units(str(cpuinfo)) == ['avx512_bf16']
    assert cpu_bf16_units(str(tmp_path / 'missing')) == []


def test_bf16_speedup_probe_is_measured_once_per_process():
    cpu_bf16_speedup.cache_clear()
    first = cpu_bf16_speedup(channels=32, size=16, repeats=2)
    assert first > 0 and cpu_bf16_speedup(channels=32, size=16, repeats=2) == first
    cpu_bf16_speedup.cache_clear()


def test_apply_precision_rewrites_the_optim_wrapper_and_the_evaluation_loops(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr('toolbox.engine.precision.cpu_bf16_units', lambda: ['amx_bf16'])
    cfg = load_config(DEMO)
    cfg.precision = 'amp'
    assert apply_precision(cfg) == 'bf16'
    assert cfg.optim_wrapper.type == 'AutocastOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.val_cfg.fp16 and cfg.test_cfg.fp16
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=10, norm_type=2)  # kept
    plain = load_config(DEMO)
    assert apply_precision(plain) == 'fp32' and plain.optim_wrapper.type == 'OptimWrapper'


def test_flush_denormal_is_on_by_default_and_can_be_turned_off():
    from toolbox.engine.precision import apply_speed_options
    subnormal = 1e-39  # below fp32's smallest normal, 1.18e-38
    try:
        apply_speed_options(load_config(DEMO))
        assert (torch.tensor([subnormal]) * 1.0).item() == 0.0
        cfg = load_config(DEMO)
        cfg.flush_denormal = False
        apply_speed_options(cfg)
        assert (torch.tensor([subnormal]) * 1.0).item() == pytest.approx(subnormal, rel=1e-3)
    finally:
        torch.set_flush_denormal(False)


FLUSH_IN_WORKERS = r"""
import sys
import torch
from toolbox.engine.precision import set_flush_denormal
torch.set_num_threads(2)
a = torch.randn(1000, 1000)
a @ a  # starts torch's OpenMP workers before the flags are set
set_flush_denormal(sys.argv[1] == 'on')
# 2**-127 (bits 0x00400000) read as zero under DAZ; 2048 of them sum to 2**-116 (normal) if not
x = torch.full((512, 2048), 0x00400000, dtype=torch.int32).view(torch.float32)
product = x @ torch.ones(2048, 256)  # split over both threads
print((product == 0).float().mean().item(), product.max().item())
"""


@pytest.mark.parametrize('flag', ['on', 'off'])
def test_flush_denormal_reaches_worker_threads_started_before_it(flag):
    """Every element of a two-thread matrix product with subnormal inputs is 0 once flushing is
    on, though the OpenMP workers existed before it was set (a plain
    ``torch.set_flush_denormal`` reaches only the main thread), and 2**-116 with it off."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, '-c', FLUSH_IN_WORKERS, flag], capture_output=True,
                            text=True, check=True, timeout=120)
    zero_fraction, largest = map(float, result.stdout.split()[-2:])
    if flag == 'on':
        assert (zero_fraction, largest) == (1.0, 0.0)
    else:
        assert zero_fraction == 0.0 and largest == pytest.approx(2.0 ** -116, rel=1e-6)


def _demo_model_and_batch(demo_root):
    from mmengine.dataset import pseudo_collate
    from toolbox.registry import DATASETS
    cfg = load_config(DEMO)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.data_root = f'{demo_root}/coco/'
    dataset = DATASETS.build(dataset_cfg)
    batch = pseudo_collate([dataset[i] for i in range(4)])
    return model, batch


def test_bf16_autocast_step_agrees_with_fp32_and_keeps_fp32_master_weights(demo_root):
    model, batch = _demo_model_and_batch(demo_root)
    model.train()
    data = model.data_preprocessor(batch, True)
    fp32 = model(**data, mode='loss')
    wrapper = AutocastOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
    with wrapper.optim_context(model):
        bf16 = model(**data, mode='loss')
        assert model.backbone.conv1(data['inputs']).dtype == torch.bfloat16  # autocast is on
    for name in ('loss_cls', 'loss_bbox'):
        assert bf16[name].dtype == torch.float32  # head outputs cast before the losses
        assert bf16[name].item() == pytest.approx(fp32[name].item(), rel=0.03)
    wrapper.update_params(sum(bf16.values()))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_bf16_autocast_inference_outputs_agree_and_predictions_stay_fp32(demo_root):
    model, batch = _demo_model_and_batch(demo_root)
    model.eval()
    data = model.data_preprocessor(batch, False)
    with torch.no_grad():
        fp32 = model(**data, mode='tensor')
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bf16 = model(**data, mode='tensor')
            predictions = model.test_step(batch)
    for ref, out in zip(sum(fp32, []), sum(bf16, [])):
        assert out.dtype == torch.bfloat16
        # bf16 keeps 8 mantissa bits: 2^-8 relative per op, a few % through the network
        assert (out.float() - ref).norm() / ref.norm() < 0.03
    for sample in predictions:
        assert sample.pred_instances.bboxes.dtype == torch.float32
        assert sample.pred_instances.scores.dtype == torch.float32


def test_channels_last_batches_and_weights_give_the_same_outputs(demo_root):
    model, batch = _demo_model_and_batch(demo_root)
    model.eval()
    with torch.no_grad():
        reference = model(**model.data_preprocessor(batch, False), mode='tensor')
        model.data_preprocessor.channels_last = True
        data = model.data_preprocessor(batch, False)
        assert data['inputs'].is_contiguous(memory_format=torch.channels_last)
        model.to(memory_format=torch.channels_last)
        assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        outputs = model(**data, mode='tensor')
    for ref_level, out_level in zip(sum(reference, []), sum(outputs, [])):
        torch.testing.assert_close(out_level, ref_level, rtol=1e-4, atol=1e-4)


def test_torch_compile_gives_the_same_outputs(demo_root):
    """``compile = True`` (mmengine compiles the step with inductor): the compiled forward of
    the demo RetinaNet agrees with eager (benchmarks: R50-FPN forward 1.26x eager on 2 CPU
    cores after a 46 s first call)."""
    model, batch = _demo_model_and_batch(demo_root)
    model.eval()
    data = model.data_preprocessor(batch, False)
    compiled = torch.compile(model)
    with torch.no_grad():
        reference = model(**data, mode='tensor')
        outputs = compiled(**data, mode='tensor')
    for ref_level, out_level in zip(sum(reference, []), sum(outputs, [])):
        # inductor fuses and reorders fp32 sums: agreement to rounding, not bit for bit
        assert (out_level - ref_level).norm() / ref_level.norm() < 1e-5


@pytest.mark.slow
def test_compiled_train_step_gives_the_same_losses_and_update(demo_root):
    """``compile = True`` in training: mmengine replaces ``model.train_step`` by its compiled
    version. One SGD step through it gives eager's losses and eager's updated weights (~2 min
    on 2 CPU cores, nearly all of it inductor compiling the forward and backward graphs)."""
    from mmengine.optim import OptimWrapper
    model, batch = _demo_model_and_batch(demo_root)
    model.train()
    twin = copy.deepcopy(model)
    initial_cls_weight = model.bbox_head.retina_cls.weight.detach().clone()
    eager = twin.train_step(copy.copy(batch),
                            OptimWrapper(torch.optim.SGD(twin.parameters(), lr=0.01)))
    compiled_step = torch.compile(model.train_step)
    losses = compiled_step(copy.copy(batch),
                           OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01)))
    assert set(losses) == set(eager)
    for name in eager:
        got, expected = float(losses[name].detach()), float(eager[name].detach())
        assert got == pytest.approx(expected, rel=1e-4)
    for param, reference in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(param, reference, rtol=1e-4, atol=1e-6)
    # the step did update the weights: the comparison above is not between two untouched copies
    assert not torch.equal(model.bbox_head.retina_cls.weight, initial_cls_weight)


def test_config_speed_keys_reach_the_runner(demo_root, tmp_path):
    cfg = _demo_cfg(demo_root, tmp_path / 'cl', 1)
    cfg.channels_last = True
    runner = build_runner(cfg)
    assert runner.model.data_preprocessor.channels_last
    assert any(type(h).__name__ == 'ChannelsLastHook' for h in runner.hooks)


# --------------------------------------------------- EMA, best checkpoint, early stopping
def test_ema_weights_are_validated_and_saved_and_the_best_checkpoint_kept(demo_root, tmp_path):
    cfg = _demo_cfg(demo_root, tmp_path / 'ema', 2)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=2, val_interval=1)
    cfg.custom_hooks = [dict(type='EMAHook', ema_type='ExponentialMovingAverage',
                             momentum=0.5, update_buffers=True)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, max_keep_ckpts=1,
                                        save_best='coco/bbox_mAP_50', rule='greater')
    runner = build_runner(cfg)
    runner.train()
    ema_hook = next(h for h in runner.hooks if type(h).__name__ == 'EMAHook')
    ema = {k[len('module.'):]: v for k, v in ema_hook.ema_model.state_dict().items()
           if k.startswith('module.')}
    last = load_checkpoint_file(str(tmp_path / 'ema' / 'epoch_2.pth'))
    # the checkpoint's state_dict holds the EMA weights, ema_state_dict the trained ones
    for name, value in runner.model.state_dict().items():
        torch.testing.assert_close(last['state_dict'][name], ema[name])
        torch.testing.assert_close(last['ema_state_dict']['module.' + name], value)
    assert not torch.equal(ema['bbox_head.retina_cls.weight'],
                           runner.model.state_dict()['bbox_head.retina_cls.weight'])
    best = glob.glob(str(tmp_path / 'ema' / 'best_coco_bbox_mAP_50_epoch_*.pth'))
    assert len(best) == 1  # the previous best was removed once the new one was written
    assert runner.message_hub.get_info('best_ckpt') == best[0]


def test_early_stopping_ends_training_when_the_metric_stalls(demo_root, tmp_path):
    cfg = _demo_cfg(demo_root, tmp_path / 'early', 5)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=5, val_interval=1)
    cfg.optim_wrapper.optimizer.lr = 0.0  # the metric cannot improve after the first epoch
    cfg.param_scheduler = []
    cfg.custom_hooks = [dict(type='EarlyStoppingHook', monitor='coco/bbox_mAP_50', patience=2,
                             min_delta=0.001)]
    runner = build_runner(cfg)
    runner.train()
    assert runner.epoch == 3  # validations 1, 2, 3: two without improvement, then stop
    assert runner.train_loop.stop_training


def test_auto_scale_lr_scales_with_the_total_batch_size(demo_root, tmp_path):
    cfg = _demo_cfg(demo_root, tmp_path / 'lr', 1)  # batch 4 on one process
    cfg.auto_scale_lr = dict(enable=True, base_batch_size=8)
    runner = build_runner(cfg)
    runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.scale_lr(runner.optim_wrapper, runner.auto_scale_lr)
    assert runner.optim_wrapper.param_groups[0]['lr'] == pytest.approx(2e-3 * 4 / 8)


def test_train_tool_amp_flag_sets_the_precision():
    tool = load_tool('train.py')
    assert tool.parse_args([DEMO, '--amp']).amp == 'amp'
    assert tool.parse_args([DEMO, '--amp', 'bf16']).amp == 'bf16'
    assert tool.parse_args([DEMO]).amp is None


def test_train_tool_auto_scale_lr_needs_a_base_batch_size(tmp_path):
    train_tool = load_tool('train.py')
    config = tmp_path / 'no_base.py'
    config.write_text(f"_base_ = ['{DEMO}']\nauto_scale_lr = None\n")
    with pytest.raises(SystemExit, match='no_base.py sets no auto_scale_lr.base_batch_size'):
        train_tool.main([str(config), '--auto-scale-lr'])


# ------------------------------------------------------------------- VOC pixel convention
def test_voc_legacy_coordinates_add_one_pixel_to_widths_and_intersections():
    gt = np.array([[0.0, 0.0, 9.0, 9.0]])
    det = np.array([[5.0, 0.0, 14.0, 9.0]])
    # continuous: intersection 4 x 9 = 36, areas 81 -> 36 / 126
    assert bbox_iou(det, gt)[0, 0] == pytest.approx(36 / 126)
    # legacy: intersection 5 x 10 = 50, areas 100 -> 50 / 150
    assert bbox_iou(det, gt, legacy_coordinates=True)[0, 0] == pytest.approx(50 / 150)
    # at IoU 0.3 the detection is a hit only in the legacy convention
    dets = [dict(bboxes=det, scores=np.array([0.9]), labels=np.array([0]))]
    anns = [dict(bboxes=gt, labels=np.array([0]))]
    assert eval_voc_map(dets, anns, num_classes=1, iou_thr=0.3)[0] == 0.0
    assert eval_voc_map(dets, anns, num_classes=1, iou_thr=0.3, legacy_coordinates=True)[0] == 1.0


def test_continuous_iou_of_converted_voc_boxes_equals_the_devkit_legacy_iou_of_raw_ones():
    rng = np.random.default_rng(0)
    raw = rng.integers(1, 60, size=(50, 2, 2))
    raw = np.concatenate([raw.min(1), raw.max(1) + 1], axis=1).astype(np.float64)  # xyxy
    converted = raw - np.array([1.0, 1.0, 0.0, 0.0])  # what VOCDataset reads (x1 - 1, y1 - 1)
    np.testing.assert_allclose(bbox_iou(converted[:25], converted[25:]),
                               bbox_iou(raw[:25], raw[25:], legacy_coordinates=True), atol=1e-12)


# bf16 on a CPU, every model kind: the recipes whose layers have no CPU bf16 kernel (deformable
# convs) or mix dtypes (guided anchoring's masked convs) failed here before running in fp32 there
BF16_DETECTORS = ('gfl_r18-dcnv2_fpn_512_12e_bccd.py', 'ga_retinanet_r18_fpn_320_12e_bccd.py',
                  'ga_faster_rcnn_r18_fpn_320_12e_bccd.py', 'atss_r18_fpn_512_12e_bccd.py',
                  'refinedet_vgg16_320_bccd.py', 'faster_rcnn_r18_fpn_320_12e_bccd.py',
                  'detr_r18_bccd.py')
BF16_SEGMENTORS = ('deeplabv3plus_r18-d16_camvid.py', 'fcn8s_r18_600it_camvid.py',
                   'unet_hippocampus.py', 'unetr_hippocampus.py')


def _boxes_batch(height: int, width: int, num_classes: int, batch: int = 2) -> dict:
    from mmengine.structures import InstanceData

    from toolbox.structures import DataSample
    gen = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(batch):
        xy = torch.rand(4, 2, generator=gen) * torch.tensor([width * 0.6, height * 0.6])
        boxes = torch.cat([xy, xy + 12 + torch.rand(4, 2, generator=gen) * 40], 1)
        sample = DataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                          scale_factor=(1.0, 1.0), flip=False))
        sample.gt_instances = InstanceData(
            bboxes=boxes, labels=torch.randint(0, num_classes, (4,), generator=gen))
        samples.append(sample)
    inputs = [(torch.rand(3, height, width, generator=gen) * 255).to(torch.uint8)
              for _ in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


def _bf16_channels_last(model):
    """The model as ``precision = 'bf16'`` runs it on a CPU: channels-last (4-D weights)."""
    from types import SimpleNamespace

    from toolbox.engine.precision import ChannelsLastHook
    ChannelsLastHook().before_run(SimpleNamespace(model=model))  # the hook reads runner.model
    if hasattr(model.data_preprocessor, 'channels_last'):
        model.data_preprocessor.channels_last = True
    return model


@pytest.mark.parametrize('config', BF16_DETECTORS)
def test_every_detector_kind_trains_and_predicts_under_cpu_bf16(config):
    from toolbox.analysis import build_model
    torch.manual_seed(0)
    model = _bf16_channels_last(build_model(str(REPO_ROOT / 'configs' / config)))
    num_classes = len(model.dataset_meta['classes'])
    model.train()
    wrapper = AutocastOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
    losses = model.train_step(_boxes_batch(128, 160, num_classes), wrapper)
    assert all(torch.isfinite(v).all() for v in losses.values()), losses
    model.eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        predictions = model.test_step(_boxes_batch(128, 160, num_classes))
    for sample in predictions:
        assert sample.pred_instances.bboxes.dtype == torch.float32
        assert torch.isfinite(sample.pred_instances.bboxes).all()


@pytest.mark.parametrize('config', BF16_SEGMENTORS)
def test_every_segmentor_kind_predicts_under_cpu_bf16(config):
    from toolbox.analysis import build_model, packed_batch
    torch.manual_seed(0)
    model = _bf16_channels_last(build_model(str(REPO_ROOT / 'configs' / config)))
    shape = (32, 48, 32) if 'hippocampus' in config else (96, 128)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        predictions = model.test_step(packed_batch(model, shape, batch=2)())
    assert [tuple(p.pred_sem_seg.data.shape[-len(shape):]) for p in predictions] == [shape] * 2
