"""CUDA correctness of every model kind: the same weights and batch on the CPU and on the GPU.

For each model (RetinaNet, RefineDet, DeepLab v3+, and the two-stage and set-prediction detector
kinds with the test doubles of ``tests/test_detector_kinds.py``) it prints one JSON line with the
largest relative difference between CPU and CUDA of the raw outputs (``'tensor'`` mode), of
each loss, of the parameter gradients, and whether the losses stay finite under AMP (fp16 and
bf16 autocast). TF32 is switched off so that float32 is compared with float32.

    python benchmarks/device_check.py [--out OUT.jsonl] [--device cuda]

(``--device cpu`` dry-runs the script itself: every difference is then 0.)
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test doubles in tests/

from common import emit, machine  # noqa: E402
from tests.test_detector_kinds import sample, set_detector, two_stage_detector  # noqa: E402
from toolbox.engine import load_config  # noqa: E402
from toolbox.plugins import load_plugins  # noqa: E402
from toolbox.registry import MODELS  # noqa: E402
from toolbox.structures import DataSample, PixelData  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'


def build(config: str, **overrides):
    cfg = load_config(str(CONFIGS / config))
    for key, value in overrides.items():
        cfg.model[key].update(value)
    return MODELS.build(cfg.model)


def detection_batch(size=128):
    torch.manual_seed(1)
    inputs = torch.randn(2, 3, size, size)
    samples = [sample([[8, 8, 60, 70], [40, 20, 120, 90]], [0, 1], img_shape=(size, size)),
               sample([[30, 30, 50, 50]], [1], img_shape=(size, size))]
    return inputs, samples


def segmentation_batch(size=96):
    torch.manual_seed(1)
    inputs = torch.randn(2, 3, size, size)
    samples = []
    for _ in range(2):
        data_sample = DataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                               batch_input_shape=(size, size)))
        data_sample.gt_sem_seg = PixelData(data=torch.randint(0, 11, (1, size, size)))
        samples.append(data_sample)
    return inputs, samples


def flat_tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in flat_tensors(item)]
    return []


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if a.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def check(name: str, model, inputs, samples, device: str) -> dict:
    model = model.eval()  # running BN statistics and no dropout: the same function on both
    gpu = copy.deepcopy(model).to(device)
    gpu_samples = [s.to(device) for s in samples]
    with torch.no_grad():
        cpu_out = flat_tensors(model(inputs, samples, mode='tensor'))
        gpu_out = flat_tensors(gpu(inputs.to(device), gpu_samples, mode='tensor'))
    torch.manual_seed(2)  # random samplers draw on the CPU generator: the same draws
    losses_cpu = model(inputs, samples, mode='loss')
    torch.manual_seed(2)
    losses_gpu = gpu(inputs.to(device), gpu_samples, mode='loss')
    sum(v for k, v in losses_cpu.items() if k.startswith('loss')).backward()
    sum(v for k, v in losses_gpu.items() if k.startswith('loss')).backward()
    grads = [rel_diff(pg.grad, pc.grad) for pc, pg in zip(model.parameters(), gpu.parameters())
             if pc.grad is not None]
    amp = {}
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast(device, dtype=dtype):
            losses = gpu(inputs.to(device), gpu_samples, mode='loss')
        amp[str(dtype).split('.')[-1]] = all(torch.isfinite(v).all().item()
                                             for v in losses.values())
    return dict(benchmark='device_check', model=name,
                outputs_max_rel_diff=max(rel_diff(g, c) for c, g in zip(cpu_out, gpu_out)),
                losses_rel_diff={k: rel_diff(losses_gpu[k], v) for k, v in losses_cpu.items()},
                grads_max_rel_diff=max(grads), amp_losses_finite=amp)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', help='append the JSON lines to this file')
    parser.add_argument('--device', default='cuda')
    args = parser.parse_args()
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('device_check needs a CUDA device')
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    load_plugins()
    where = machine()
    cases = [
        ('retinanet_r18_fpn', build('retinanet_r18_fpn_320_bccd.py'), detection_batch()),
        ('refinedet_vgg16_bccd', build('refinedet_vgg16_320_bccd.py'), detection_batch()),
        ('deeplabv3plus_r18_camvid', build('deeplabv3plus_r18-d16_camvid.py'),
         segmentation_batch()),
        ('two_stage_test_double', two_stage_detector(), detection_batch(64)),
        ('set_prediction_test_double', set_detector(), detection_batch(64)),
    ]
    for name, model, (inputs, samples) in cases:
        emit(dict(check(name, model, inputs, samples, args.device), machine=where), args.out)


if __name__ == '__main__':
    main()
