"""CPU speed of an exported ONNX graph in onnxruntime against the same model in PyTorch eager.

Two models, random weights (seed 0, random BN statistics and affines), batch 1:

* RetinaNet R18-FPN (``configs/retinanet_r18_fpn_320_12e_bccd.py``) at 320x320; its classifier
  is drawn with std 0.3 instead of 0.01, so that the post-processing has work like a trained
  model's (thousands of candidates above ``score_thr``, 150 = ``max_per_img`` detections; a
  freshly initialised one scores every anchor at the 0.01 prior, below the threshold, and NMS
  would run on nothing);
* DeepLab v3+ R18-D16 (``configs/deeplabv3plus_r18-d16_camvid.py``) at 360x480.

Both sides do the whole test-time work on a float (1, 3, H, W) image: ours is the exported graph
(``tools/export.py``: normalisation, network, decoding, NMS / logits and argmax) in an
onnxruntime CPU session; the peer is the toolbox's PyTorch path (``model.test_step``: data
preprocessor, network, ``predict``) under ``torch.no_grad()``. Both use the same number of
threads (``--threads``, default 2: torch ``set_num_threads``, onnxruntime
``intra_op_num_threads``) and are timed alternately, call after call, so that load from other
processes hits both alike. Each JSON line has the medians, ``ratio`` = PyTorch time / onnxruntime
time (above 1: the exported graph is faster), the parity report of the same input and the
machine.

    python benchmarks/bench_onnx.py [--threads 2] [--repeats 10] [--warmup 2]
        [--out benchmarks/results/cpu_onnx.jsonl]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from common import alternate, emit, machine

CASES = (
    ('onnx_retinanet_r18_fpn', 'retinanet_r18_fpn_320_12e_bccd.py', (320, 320)),
    ('onnx_deeplabv3plus_r18_d16', 'deeplabv3plus_r18-d16_camvid.py', (360, 480)),
)
REPO = Path(__file__).resolve().parents[1]


def build_model(config: str):
    import toolbox  # noqa: F401  (registers the core)
    from toolbox.apis import init_model
    from toolbox.engine import load_config
    from toolbox.plugins import load_plugins
    load_plugins()
    cfg = load_config(str(REPO / 'configs' / config))
    torch.manual_seed(0)
    model = init_model(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.1, generator=gen)
        if hasattr(model, 'bbox_head'):
            model.bbox_head.retina_cls.weight.normal_(0, 0.3, generator=gen)
    return model, cfg


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--out', help='append the JSON lines to this file')
    args = parser.parse_args(argv)
    import onnx
    import onnxruntime
    from toolbox.export import (DEFAULT_OPSET, compare_outputs, export_onnx, onnx_session,
                                run_onnx, sample_images, torch_outputs)
    torch.set_num_threads(args.threads)
    info = dict(machine(), onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        for name, config, hw in CASES:
            model, cfg = build_model(config)
            path = Path(tmp) / f'{name}.onnx'
            export_onnx(model, path, hw)
            session = onnx_session(path, threads=args.threads)
            images, source = sample_images(cfg, hw)
            report = compare_outputs(run_onnx(session, images), torch_outputs(model, images))
            ours_s, peer_s = alternate(lambda: run_onnx(session, images),
                                       lambda: torch_outputs(model, images),
                                       args.repeats, args.warmup)
            emit(dict(benchmark=name, device='cpu', batch=1, size=list(hw),
                      input=source.split(' (')[0], repeats=args.repeats, threads=args.threads,
                      ours=f'onnxruntime {onnxruntime.__version__} CPU, exported graph '
                           f'(opset {DEFAULT_OPSET}, tools/export.py)',
                      peer=f'PyTorch {torch.__version__} eager, model.test_step',
                      ours_s=round(ours_s, 4), peer_s=round(peer_s, 4),
                      ratio=round(peer_s / ours_s, 3), parity=report, machine=info), args.out)


if __name__ == '__main__':
    main()
