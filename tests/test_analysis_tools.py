"""tools/analysis: FLOP and parameter counts (torch's FlopCounterMode, 2 FLOPs per multiply-add),
timing statistics, the fp32 GEMM peak, and both tools end to end on the demo config."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from toolbox.analysis import (OUTSIDE_CHILDREN, ShapeError, build_model, count_call_flops,
                              count_flops, count_parameters, default_input_shape, flops_report,
                              gemm_peak_gflops, network_input, resolve_input_shape, speed_report,
                              time_calls)
from toolbox.engine import load_config

from .conftest import REPO_ROOT
from .helpers import load_tool

DEMO = 'configs/retinanet_r18_fpn_160_demo.py'
TOOLS = ('get_flops.py', 'benchmark_speed.py')
# tiny GEMM peak and timing settings: the numbers are not the point here, the plumbing is
QUICK_GEMM = ['--gemm-sizes', '128', '--gemm-repeats', '1']


@pytest.fixture(scope='module')
def demo_model():
    return build_model(str(REPO_ROOT / DEMO))


def test_conv_flops_are_two_per_multiply_add_exactly():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    flops = count_flops(conv, torch.randn(1, 3, 16, 16))
    # 8 output channels x 16 x 16 pixels, each 3 x 3 x 3 multiply-adds, 2 FLOPs each
    assert flops.total == 2 * 8 * 3 * 9 * 16 * 16 == 110_592
    assert flops.by_module == {}  # a module without children: no breakdown


def test_linear_flops_and_the_breakdown_over_top_level_children():
    assert count_flops(nn.Linear(16, 4), torch.randn(5, 16)).total == 2 * 5 * 16 * 4 == 640
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 16 * 16, 10))
    flops = count_flops(net, torch.randn(2, 3, 16, 16))
    assert flops.by_module == {'0': 2 * 110_592, '1': 0, '2': 0, '3': 2 * 2 * 2048 * 10}
    assert flops.total == sum(flops.by_module.values()) == 303_104
    # FLOPs outside every child are reported as such, and the breakdown still sums to the total
    counted = count_call_flops(lambda: net(torch.randn(1, 3, 16, 16)) @ torch.zeros(10, 5),
                               root=net)
    assert counted.by_module[OUTSIDE_CHILDREN] == 2 * 10 * 5
    assert counted.total == sum(counted.by_module.values())


def test_demo_model_params_and_flops_agree_with_its_parts(demo_model):
    model = demo_model
    params = count_parameters(model)
    assert params.total == sum(p.numel() for p in model.parameters()) == 11_528_895
    assert params.trainable == params.total  # the demo freezes nothing
    assert sum(total for total, _ in params.by_module.values()) == params.total
    inputs = network_input(model, (128, 128))
    whole = count_flops(model, inputs, mode='tensor')
    # the same network counted piece by piece: backbone, neck, head
    backbone_feats = model.backbone(inputs)
    neck_feats = model.neck(backbone_feats)
    parts = {'backbone': count_flops(model.backbone, inputs).total,
             'neck': count_flops(model.neck, backbone_feats).total,
             'bbox_head': count_flops(model.bbox_head, neck_feats).total}
    assert whole.total == pytest.approx(sum(parts.values()), rel=0.02)
    for name, flops in parts.items():
        assert whole.by_module[name] == pytest.approx(flops, rel=0.02)
    assert whole.total > 1e9  # ~1.34 GFLOP at 128 x 128
    # counting leaves the model as it was: no hooks, parameters still trainable
    assert not model.backbone._forward_hooks and not model.backbone._forward_pre_hooks
    assert all(p.requires_grad for p in model.parameters())


def test_flops_scale_with_batch_and_input_is_padded_like_a_real_batch(demo_model):
    assert tuple(network_input(demo_model, (100, 150)).shape) == (1, 3, 128, 160)  # /32
    one = flops_report(str(REPO_ROOT / DEMO), (64, 64), batch=1)
    two = flops_report(str(REPO_ROOT / DEMO), (64, 64), batch=2)
    assert two['flops'] == 2 * one['flops'] and two['input'] == [2, 3, 64, 64]
    assert one['params'] == 11_528_895 and one['params_by_module']['backbone'][0] == 11_176_512


def test_default_shape_from_the_test_pipeline_or_the_test_window():
    r50 = load_config(str(REPO_ROOT / 'configs/retinanet_r50_fpn_800x1333_1x_coco.py'))
    assert default_input_shape(r50) == (800, 1333)  # Resize scale (1333, 800) is (w, h)
    unetr = load_config(str(REPO_ROOT / 'configs/unetr_hippocampus.py'))
    assert default_input_shape(unetr) == (32, 48, 32)  # sliding_window roi_size
    demo = load_config(str(REPO_ROOT / DEMO))
    assert default_input_shape(demo) is None  # no Resize in the demo's test pipeline
    with pytest.raises(ShapeError, match='retinanet_r18_fpn_160_demo.py.*--shape'):
        resolve_input_shape(demo, DEMO, None)
    with pytest.raises(ShapeError, match='H W .* or D H W'):
        resolve_input_shape(demo, DEMO, [160])


def test_time_calls_statistics_are_ordered_and_images_per_second_is_batch_over_median():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    inputs = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        timing = time_calls(lambda: model(inputs), iters=9, warmup=2, batch=4)
    assert len(timing.times_s) == 9 and min(timing.times_s) > 0
    assert min(timing.times_s) <= timing.p10_s <= timing.median_s <= timing.p90_s \
        <= max(timing.times_s)
    assert timing.images_per_s == pytest.approx(4 / timing.median_s)
    single = time_calls(lambda: model(inputs), iters=1, warmup=0)
    assert single.p10_s == single.median_s == single.p90_s > 0
    with pytest.raises(ValueError, match='iters'):
        time_calls(lambda: None, iters=0, warmup=0)


def test_gemm_peak_is_a_positive_rate():
    peak = gemm_peak_gflops('cpu', sizes=(128, 256), repeats=2)
    assert 0 < peak < 1e6  # GFLOP/s: no CPU reaches a PFLOP/s in fp32


def test_speed_report_predict_mode_for_a_detector_and_a_2d_segmentor():
    detector = speed_report(str(REPO_ROOT / DEMO), shape=(64, 64), batch=2, iters=2, warmup=1,
                            mode='predict', device='cpu', gemm_sizes=(128,), gemm_repeats=1)
    segmentor = speed_report(str(REPO_ROOT / 'configs/fcn8s_r18_600it_camvid.py'),
                             shape=(64, 96), iters=1, warmup=0, mode='predict', device='cpu',
                             gemm_sizes=(128,), gemm_repeats=1)
    for report in (detector, segmentor):
        assert report['mode'] == 'predict' and report['precision'] == 'fp32'
        assert report['flops'] > 0 and report['gemm_peak_gflops'] > 0
        assert report['efficiency'] == pytest.approx(
            report['flops'] / report['median_s'] / 1e9 / report['gemm_peak_gflops'])
    assert detector['images_per_s'] == pytest.approx(2 / detector['median_s'])
    assert segmentor['shape'] == [64, 96]


def test_speed_report_channels_last_and_precision_rules():
    report = speed_report(str(REPO_ROOT / DEMO), shape=(64, 64), iters=1, warmup=0,
                          amp='bf16', channels_last=True, device='cpu', gemm_sizes=(128,),
                          gemm_repeats=1)
    # bf16 where the CPU has bf16 units, else the documented fall back to fp32
    assert report['channels_last'] and report['precision'] in ('bf16', 'fp32')
    # unset, channels-last follows the precision that runs (on for bf16 on a CPU); folding
    # the BatchNorms leaves the counted FLOPs as they are
    default = speed_report(str(REPO_ROOT / DEMO), shape=(64, 64), iters=1, warmup=0,
                           amp='bf16', device='cpu', gemm_sizes=(128,), gemm_repeats=1,
                           fuse_conv_bn=True)
    assert default['channels_last'] == (default['precision'] == 'bf16')
    assert default['fuse_conv_bn'] and not report['fuse_conv_bn']
    assert default['flops'] == report['flops']
    with pytest.raises(ValueError, match='fp16.*GPU'):
        speed_report(str(REPO_ROOT / DEMO), shape=(64, 64), amp='fp16', device='cpu')


@pytest.mark.parametrize('tool', TOOLS)
def test_analysis_tools_answer_help(tool):
    out = subprocess.run([sys.executable, f'tools/analysis/{tool}', '--help'], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and 'usage:' in out.stdout


def test_get_flops_without_a_shape_it_cannot_infer_names_the_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_tool('analysis/get_flops.py').main([DEMO])
    message = str(exit_info.value.code)
    assert 'retinanet_r18_fpn_160_demo.py' in message and '--shape H W' in message


def test_get_flops_tool_end_to_end_json_line():
    out = subprocess.run([sys.executable, 'tools/analysis/get_flops.py', DEMO,
                          '--shape', '160', '160', '--json'], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report['input'] == [1, 3, 160, 160] and report['params'] == 11_528_895
    assert report['flops'] == sum(report['flops_by_module'].values())
    assert report['gflops'] == pytest.approx(2.094, abs=0.01)  # 2,093,680,000 FLOPs
    assert '2 FLOPs' in report['flop_convention']


def test_benchmark_speed_tool_end_to_end_json_line(tmp_path):
    out_file = tmp_path / 'speed.jsonl'
    out = subprocess.run([sys.executable, 'tools/analysis/benchmark_speed.py', DEMO,
                          '--shape', '64', '64', '--batch', '2', '--iters', '3', '--warmup', '1',
                          '--threads', '1', '--json', str(out_file)] + QUICK_GEMM,
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert 'efficiency' in out.stdout and 'images/s' in out.stdout  # the table
    report = json.loads(out_file.read_text().strip())
    for key in ('machine', 'config', 'shape', 'batch', 'flops', 'params', 'median_s', 'p10_s',
                'p90_s', 'images_per_s', 'gemm_peak_gflops', 'efficiency'):
        assert key in report, key
    assert report['shape'] == [64, 64] and report['batch'] == 2 and report['threads'] == 1
    assert report['p10_s'] <= report['median_s'] <= report['p90_s']
    assert report['images_per_s'] == pytest.approx(2 / report['median_s'])
    assert report['params'] == 11_528_895 and report['flops'] > 0
    assert report['machine']['cpu'] and report['gemm_peak_gflops'] > 0
