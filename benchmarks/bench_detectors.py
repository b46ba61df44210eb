"""Detector and segmentor speed against torchvision's same architectures, the speed options,
the whole inference pipeline and peak memory: ``python benchmarks/bench_detectors.py``.

Each record is one JSON line (:func:`common.emit`) with ``ratio = peer_s / ours_s`` (above 1:
ours is faster); every pair is timed alternately in one run (:func:`common.alternate`), so
load from other processes hits both alike.

* ``forward``: the network alone (backbone, neck, head; no pre- or post-processing) in
  eval mode, ours vs torchvision (RetinaNet R50-FPN, Faster R-CNN R50-FPN is two-stage and
  compared on its ``predict`` path, DeepLab v3 R50), random weights, same input;
* ``predict``: normalisation, forward, decoding and NMS (``test_step`` vs torchvision's eval
  call, whose resize is a no-op at this size);
* ``train_step``: forward, loss, backward and an SGD step on a synthetic batch with boxes;
* ``precision``: our forward in fp32 vs bf16 autocast (channels-last, its CPU default) vs
  channels-last vs BatchNorms folded into the convolutions, and the training step fp32 vs bf16;
* ``pipeline``: for each BCCD recipe (RetinaNet R18-FPN 320, RefineDet320 VGG-16, ATSS R18
  512, GFL R18-DCN 512; ``--configs``), images/s of the whole test path on real BCCD images
  (read, test pipeline, collate, preprocess, forward, post-process, the recipe's metric
  updates) against the forward alone on the same batches, batch 1 and 8, and one training
  iteration on a real batch of 8; then data-loading throughput with 0 and 2 workers;
* ``compile``: our RetinaNet R50-FPN forward under ``torch.compile`` (inductor) against eager,
  with the first call's compile time and the largest output difference;
* ``compile_train``: the training step compiled as ``compile = True`` does it (mmengine compiles
  ``model.train_step``) against eager, on two batches with different box counts (the
  recompilation for the second is part of the first-calls time);
* ``memory``: peak resident memory of a fresh process building the model and running one
  forward, above its resident memory after the imports (``VmHWM`` reset through
  ``/proc/self/clear_refs``, Linux), ours vs torchvision.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch
import torchvision
from mmengine.dataset import pseudo_collate
from mmengine.structures import InstanceData

sys.path.insert(0, os.path.dirname(__file__))
from common import alternate, child_peak_mib, emit, machine, median_seconds  # noqa: E402

from toolbox.engine import load_config  # noqa: E402
from toolbox.engine.precision import set_flush_denormal  # noqa: E402
from toolbox.models.layers import fuse_conv_bn  # noqa: E402
from toolbox.plugins import load_plugins  # noqa: E402
from toolbox.registry import DATASETS, MODELS  # noqa: E402
from toolbox.structures import DataSample  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = dict(  # ours (config) and torchvision's builder of the same architecture
    retinanet=('configs/retinanet_r50_fpn_800x1333_1x_coco.py', 'retinanet_resnet50_fpn'),
    faster_rcnn=('configs/faster_rcnn_r50_fpn_1x_coco.py', 'fasterrcnn_resnet50_fpn'),
    deeplabv3=('configs/deeplabv3_r50-d8_512x512_voc12aug.py', 'deeplabv3_resnet50'))


def build_ours(name: str):
    cfg = load_config(os.path.join(REPO, CONFIGS[name][0]))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.backbone.pop('init_cfg', None)  # random weights: nothing to download
    torch.manual_seed(0)
    return MODELS.build(model_cfg).eval()


def build_peer(name: str):
    torch.manual_seed(0)
    builder = getattr(torchvision.models.detection if name != 'deeplabv3'
                      else torchvision.models.segmentation, CONFIGS[name][1])
    kwargs = dict(weights=None, weights_backbone=None)
    if name == 'deeplabv3':
        return builder(num_classes=21, aux_loss=False, **kwargs).eval()
    return builder(num_classes=81, min_size=800, max_size=1333, **kwargs).eval()


def synthetic_samples(batch: int, height: int, width: int, num_boxes: int = 8):
    """Packed samples with ``num_boxes`` random boxes each, ours and torchvision's targets."""
    gen = torch.Generator().manual_seed(0)
    samples, targets = [], []
    for _ in range(batch):
        xy = torch.rand(num_boxes, 2, generator=gen) * torch.tensor([width * 0.7, height * 0.7])
        wh = 20 + torch.rand(num_boxes, 2, generator=gen) * 150
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(0, 80, (num_boxes,), generator=gen)
        sample = DataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                             scale_factor=(1.0, 1.0), pad_shape=(height, width),
                                             batch_input_shape=(height, width)))
        sample.gt_instances = InstanceData(bboxes=boxes, labels=labels)
        samples.append(sample)
        targets.append(dict(boxes=boxes, labels=labels + 1))
    return samples, targets


def bench_forward_and_predict(name, out, info, repeats, batch=1, size=(800, 1216)):
    ours, peer = build_ours(name), build_peer(name)
    h, w = size
    images = torch.rand(batch, 3, h, w) * 255
    if name == 'deeplabv3':
        net_ours = lambda: ours(images, mode='tensor')  # noqa: E731
        net_peer = lambda: peer(images)  # noqa: E731
        kind = 'forward'
    elif name == 'retinanet':
        net_ours = lambda: ours(images, mode='tensor')  # noqa: E731
        net_peer = lambda: peer.head(list(peer.backbone(images).values()))  # noqa: E731
        kind = 'forward'
    else:
        net_ours = net_peer = None
        kind = None
    with torch.no_grad():
        if kind:
            ours_s, peer_s = alternate(net_ours, net_peer, repeats, 1)
            emit(dict(benchmark=f'{name}_r50_{kind}', shape=[batch, 3, h, w], precision='fp32',
                      ours_s=round(ours_s, 4), peer_s=round(peer_s, 4),
                      peer=f'torchvision {CONFIGS[name][1]}', ratio=round(peer_s / ours_s, 3),
                      machine=info), out)
        if name != 'deeplabv3':
            samples, _ = synthetic_samples(batch, h, w)
            data = dict(inputs=[img.to(torch.uint8) for img in images], data_samples=samples)
            tv_images = [img / 255 for img in images]
            ours_s, peer_s = alternate(lambda: ours.test_step(data), lambda: peer(tv_images),
                                       repeats, 1)
            emit(dict(benchmark=f'{name}_r50_predict', shape=[batch, 3, h, w], precision='fp32',
                      ours_s=round(ours_s, 4), peer_s=round(peer_s, 4),
                      peer=f'torchvision {CONFIGS[name][1]} eval call',
                      ratio=round(peer_s / ours_s, 3), machine=info), out)


def bench_train_step(name, out, info, repeats, batch=2, size=(512, 512)):
    ours, peer = build_ours(name).train(), build_peer(name).train()
    h, w = size
    images = torch.rand(batch, 3, h, w) * 255
    samples, targets = synthetic_samples(batch, h, w)
    data = dict(inputs=[img.to(torch.uint8) for img in images], data_samples=samples)
    tv_images = [img / 255 for img in images]
    from mmengine.optim import OptimWrapper
    wrapper = OptimWrapper(torch.optim.SGD(ours.parameters(), lr=1e-4, momentum=0.9))
    peer_opt = torch.optim.SGD(peer.parameters(), lr=1e-4, momentum=0.9)
    peer.transform.min_size, peer.transform.max_size = (min(h, w),), max(h, w)

    def peer_step():
        losses = peer(tv_images, targets)
        peer_opt.zero_grad()
        sum(losses.values()).backward()
        peer_opt.step()

    ours_s, peer_s = alternate(lambda: ours.train_step(copy.copy(data), wrapper), peer_step,
                               repeats, 1)
    emit(dict(benchmark=f'{name}_r50_train_step', shape=[batch, 3, h, w], precision='fp32',
              ours_s=round(ours_s, 4), peer_s=round(peer_s, 4),
              peer=f'torchvision {CONFIGS[name][1]} train call + SGD step',
              ratio=round(peer_s / ours_s, 3), machine=info), out)


def bench_precision(out, info, repeats, size=(800, 1216)):
    """Our RetinaNet R50-FPN forward: bf16 autocast (channels-last, its CPU default) vs fp32,
    bf16 NCHW vs bf16 channels-last, channels-last vs NCHW in fp32, and BatchNorms folded into
    the convolutions (``fuse_conv_bn``) vs not, channels-last fp32; then the training step
    fp32 vs bf16 (channels-last) at 512x512, batch 2."""
    model = build_ours('retinanet')
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    fused_cl = copy.deepcopy(model_cl)
    fuse_conv_bn(fused_cl)
    images = torch.rand(1, 3, *size) * 255
    images_cl = images.contiguous(memory_format=torch.channels_last)

    def forward(net, inputs, bf16=False):
        def call():
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                net(inputs, mode='tensor')
        return call

    pairs = (  # (benchmark, ours, peer): ours' speed over the peer's
        ('retinanet_r50_forward_bf16_vs_fp32', ('bf16 autocast, channels-last',
                                                forward(model_cl, images_cl, True)),
         ('fp32 NCHW', forward(model, images))),
        ('retinanet_r50_forward_bf16_channels_last_vs_nchw',
         ('bf16 autocast, channels-last', forward(model_cl, images_cl, True)),
         ('bf16 autocast, NCHW', forward(model, images, True))),
        ('retinanet_r50_forward_channels_last_vs_nchw', ('channels_last fp32',
                                                         forward(model_cl, images_cl)),
         ('NCHW fp32', forward(model, images))),
        ('retinanet_r50_forward_fused_bn_vs_bn', ('BatchNorms folded, channels-last fp32',
                                                  forward(fused_cl, images_cl)),
         ('channels-last fp32', forward(model_cl, images_cl))),
        ('retinanet_r50_forward_bf16_fused_vs_fp32_fused',
         ('bf16 autocast, channels-last, BatchNorms folded', forward(fused_cl, images_cl, True)),
         ('fp32, channels-last, BatchNorms folded', forward(fused_cl, images_cl))),
    )
    with torch.no_grad():
        for benchmark, (ours_name, ours_fn), (peer_name, peer_fn) in pairs:
            peer_s, ours_s = alternate(peer_fn, ours_fn, repeats, 1)
            emit(dict(benchmark=benchmark, shape=[1, 3, *size], ours=ours_name, peer=peer_name,
                      ours_s=round(ours_s, 4), peer_s=round(peer_s, 4),
                      ratio=round(peer_s / ours_s, 3), machine=info), out)

    samples, _ = synthetic_samples(2, 512, 512)
    data = dict(inputs=[img.to(torch.uint8) for img in torch.rand(2, 3, 512, 512) * 255],
                data_samples=samples)
    from mmengine.optim import OptimWrapper

    from toolbox.engine.precision import AutocastOptimWrapper
    model.train()
    train_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    train_cl.data_preprocessor.channels_last = True
    plain = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))
    mixed = AutocastOptimWrapper(optimizer=torch.optim.SGD(train_cl.parameters(), lr=0.0))
    fp32_s, bf16_s = alternate(lambda: model.train_step(copy.copy(data), plain),
                               lambda: train_cl.train_step(copy.copy(data), mixed), repeats, 1)
    emit(dict(benchmark='retinanet_r50_train_step_bf16_vs_fp32', shape=[2, 3, 512, 512],
              ours='bf16 autocast, channels-last', peer='fp32 NCHW', ours_s=round(bf16_s, 4),
              peer_s=round(fp32_s, 4), ratio=round(fp32_s / bf16_s, 3), machine=info), out)


# Our BCCD recipes (each with the model it trains), for the whole-pipeline and training records
PIPELINE_CONFIGS = ('configs/retinanet_r18_fpn_320_bccd.py',
                    'configs/refinedet_vgg16_320_12e_bccd.py',
                    'configs/atss_r18_fpn_512_12e_bccd.py',
                    'configs/gfl_r18-dcnv2_fpn_512_12e_bccd.py')


def bench_pipeline(out, info, repeats, config):
    """Whole test path on real BCCD val images vs the forward alone on the same batches (batch 1
    and 8), and one training iteration (forward, loss, backward, SGD step) on a real batch of 8
    from the recipe's training pipeline. Random weights: speed does not depend on them."""
    cfg = load_config(os.path.join(REPO, config))
    if not os.path.isdir(cfg.val_dataloader.dataset.data_root):
        print(f'skipping the pipeline benchmark: {cfg.val_dataloader.dataset.data_root} missing',
              file=sys.stderr)
        return
    name = os.path.splitext(os.path.basename(config))[0]
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    from toolbox.registry import METRICS
    for batch, count in ((1, 16), (8, 16)):
        evaluator_cfgs = cfg.val_evaluator
        if not isinstance(evaluator_cfgs, (list, tuple)):
            evaluator_cfgs = [evaluator_cfgs]
        metrics = [METRICS.build(dict(c)) for c in evaluator_cfgs]
        for metric in metrics:
            metric.dataset_meta = dataset.metainfo
        prepared = [pseudo_collate([dataset[i] for i in range(s, s + batch)])
                    for s in range(0, count, batch)]
        inputs = [model.data_preprocessor(copy.deepcopy(b), False)['inputs'] for b in prepared]

        def whole():
            for start in range(0, count, batch):
                data = pseudo_collate([dataset[i] for i in range(start, start + batch)])
                outputs = [o.to_dict() for o in model.test_step(data)]
                for metric in metrics:
                    metric.process(data, outputs)

        def forward_only():
            for x in inputs:
                model(x, mode='tensor')

        with torch.no_grad():
            whole_s, forward_s = alternate(whole, forward_only, repeats, 1)
        emit(dict(benchmark=f'{name}_pipeline_vs_forward', batch=batch,
                  images=count, ours='whole test path (read..metric update)',
                  peer='forward only', ours_images_per_s=round(count / whole_s, 2),
                  peer_images_per_s=round(count / forward_s, 2),
                  ratio=round(forward_s / whole_s, 3), machine=info), out)

    from mmengine.optim import OptimWrapper
    train_set = DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))
    batch = pseudo_collate([train_set[i] for i in range(8)])
    model.train()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))  # lr 0: same weights
    step_s = median_seconds(lambda: model.train_step(copy.copy(batch), wrapper), repeats, 1)
    emit(dict(benchmark=f'{name}_train_iteration', batch=8,
              shape=list(batch['inputs'][0].shape), step_s=round(step_s, 3),
              images_per_s=round(8 / step_s, 2), machine=info), out)


def bench_data_loading(out, info, config='configs/retinanet_r18_fpn_320_bccd.py'):
    """Training data pipeline throughput (load, augment, collate) with 0 and 2 workers."""
    cfg = load_config(os.path.join(REPO, config))
    from torch.utils.data import DataLoader
    train_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    train_set = DATASETS.build(train_cfg)
    for workers in (0, 2):
        loader = DataLoader(train_set, batch_size=8, num_workers=workers,
                            collate_fn=pseudo_collate, shuffle=False)
        start, n = time.perf_counter(), 0
        for i, batch_data in enumerate(loader):
            n += len(batch_data['inputs'])
            if i == 9:
                break
        seconds = time.perf_counter() - start
        emit(dict(benchmark='bccd_train_pipeline_throughput', workers=workers, batch=8,
                  images=n, images_per_s=round(n / seconds, 1),
                  transforms=[t['type'] for t in train_cfg.pipeline], machine=info), out)


MEMORY_CHILD = '''
import torch
from bench_detectors import build_ours, build_peer
from common import peak_rss_mib_above, reset_peak_rss
from toolbox.plugins import load_plugins
load_plugins()
base = reset_peak_rss()  # imports are not the model's
name, who = sys.argv[1], sys.argv[2]
model = build_ours(name) if who == 'ours' else build_peer(name)
x = torch.rand(1, 3, *(800, 1216) if name == 'retinanet' else (512, 512)) * 255
with torch.no_grad():
    if who == 'ours':
        model(x, mode='tensor')
    elif name == 'retinanet':
        model.head(list(model.backbone(x).values()))
    else:
        model(x)
print(peak_rss_mib_above(base))
'''


def bench_compile(out, info, repeats, size=(800, 1216)):
    """Our RetinaNet R50-FPN forward (``mode='tensor'``), eager vs ``torch.compile``."""
    model = build_ours('retinanet')
    images = torch.rand(1, 3, *size) * 255
    compiled = torch.compile(model)
    with torch.no_grad():
        start = time.perf_counter()
        got = compiled(images, mode='tensor')
        compile_s = time.perf_counter() - start
        expected = model(images, mode='tensor')
        flat = lambda outputs: torch.cat([t.flatten() for level in outputs for t in level])  # noqa
        diff = (flat(got) - flat(expected)).abs().max().item()
        eager_s, compiled_s = alternate(lambda: model(images, mode='tensor'),
                                        lambda: compiled(images, mode='tensor'), repeats, 1)
    emit(dict(benchmark='retinanet_r50_forward_compile_vs_eager', shape=[1, 3, *size],
              ours='torch.compile (inductor)', peer='eager', ours_s=round(compiled_s, 4),
              peer_s=round(eager_s, 4), ratio=round(eager_s / compiled_s, 3),
              first_call_s=round(compile_s, 1), max_abs_diff=float(f'{diff:.3g}'),
              machine=info), out)


def bench_compile_train(out, info, repeats, batch=2, size=(512, 512)):
    """Our RetinaNet R50-FPN ``train_step`` (forward, loss, backward, SGD step) eager vs
    ``torch.compile(model.train_step)``, the way mmengine applies ``compile = True``. Two
    synthetic batches with 8 and 5 boxes per image alternate, so the box count changes from step
    to step as in training; lr 0 keeps the weights, so both variants see the same model."""
    from mmengine.optim import OptimWrapper
    model = build_ours('retinanet').train()
    batches = []
    for num_boxes in (8, 5):
        samples, _ = synthetic_samples(batch, *size, num_boxes=num_boxes)
        images = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(num_boxes))
        batches.append(dict(inputs=[(img * 255).to(torch.uint8) for img in images],
                            data_samples=samples))
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))
    eager_step = model.train_step
    compiled_step = torch.compile(model.train_step)
    start = time.perf_counter()
    compiled_losses = [compiled_step(copy.copy(b), wrapper) for b in batches]
    first_calls_s = time.perf_counter() - start
    eager_losses = [eager_step(copy.copy(b), wrapper) for b in batches]
    worst = max(abs(float(c[k].detach()) - float(e[k].detach())) / abs(float(e[k].detach()))
                for c, e in zip(compiled_losses, eager_losses) for k in e)

    def run(step):
        return lambda: [step(copy.copy(b), wrapper) for b in batches]

    eager_s, compiled_s = alternate(run(eager_step), run(compiled_step), repeats, 1)
    emit(dict(benchmark='retinanet_r50_train_step_compile_vs_eager', shape=[batch, 3, *size],
              steps_per_timing=len(batches), ours='torch.compile(model.train_step) (inductor)',
              peer='eager', ours_s=round(compiled_s / len(batches), 4),
              peer_s=round(eager_s / len(batches), 4),
              ratio=round(eager_s / compiled_s, 3), first_two_calls_s=round(first_calls_s, 1),
              max_loss_rel_diff=float(f'{worst:.3g}'), machine=info), out)


def bench_memory(out, info):
    for name in ('retinanet', 'deeplabv3'):
        # MiB above the imports, each model in a process of its own
        peak = {who: child_peak_mib(MEMORY_CHILD, name, who, cwd=REPO)
                for who in ('ours', 'peer')}
        shape = [1, 3, 800, 1216] if name == 'retinanet' else [1, 3, 512, 512]
        emit(dict(benchmark=f'{name}_r50_forward_peak_rss', shape=shape,
                  ours_mib=round(peak['ours']), peer_mib=round(peak['peer']),
                  peer=f'torchvision {CONFIGS[name][1]}',
                  ratio=round(peak['peer'] / peak['ours'], 3), machine=info), out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', help='append the JSON lines to this file')
    parser.add_argument('--repeats', type=int, default=5)
    parts = ['forward', 'train', 'precision', 'pipeline', 'compile', 'compile_train', 'memory']
    parser.add_argument('--only', nargs='+', default=parts, choices=parts)
    parser.add_argument('--keep-denormals', action='store_true',
                        help='do not flush subnormal floats to zero (our default flushes them)')
    parser.add_argument('--configs', nargs='+', default=PIPELINE_CONFIGS,
                        help='BCCD recipes for the pipeline part (default: %(default)s)')
    args = parser.parse_args()
    load_plugins()
    # common turned flushing on (as tools/train.py and tools/test.py run); --keep-denormals
    # turns it off on every thread
    set_flush_denormal(not args.keep_denormals)
    info = dict(machine(), flush_denormal=not args.keep_denormals)
    if 'forward' in args.only:
        for name in ('retinanet', 'faster_rcnn'):
            bench_forward_and_predict(name, args.out, info, args.repeats)
        bench_forward_and_predict('deeplabv3', args.out, info, args.repeats, size=(512, 512))
    if 'train' in args.only:
        for name in ('retinanet', 'faster_rcnn'):
            bench_train_step(name, args.out, info, args.repeats)
    if 'precision' in args.only:
        bench_precision(args.out, info, args.repeats)
    if 'pipeline' in args.only:
        for config in args.configs:
            bench_pipeline(args.out, info, args.repeats, config)
        bench_data_loading(args.out, info)
    if 'compile' in args.only:
        bench_compile(args.out, info, args.repeats)
    if 'compile_train' in args.only:
        bench_compile_train(args.out, info, args.repeats)
    if 'memory' in args.only:
        bench_memory(args.out, info)


if __name__ == '__main__':
    main()
