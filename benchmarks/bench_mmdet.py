"""Our RetinaNet R50-FPN against MMDetection 3.3's, same architecture (37,968,692 parameters),
each in a process of its own, timed alternately: ``python benchmarks/bench_mmdet.py
--peer-python PEER/bin/python``.

MMDetection cannot be installed next to our pins (it needs mmcv's compiled ops and asserts
mmcv < 2.2.0), so it runs in a second virtualenv that sees this environment's torch
(``--system-site-packages``: the same torch build on both sides) and holds mmcv with ops and
mmdet (reference/PEERS.md):

    python -m venv --system-site-packages PEER
    PEER/bin/pip install 'setuptools<81' wheel ninja
    PEER/bin/pip download --no-deps --no-binary :all: --no-build-isolation mmcv==2.2.0 -d sdist
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2 PEER/bin/pip wheel --no-build-isolation --no-deps \\
        sdist/mmcv-2.2.0.tar.gz -w wheels    # about 15 minutes on 2 cores
    PEER/bin/pip install --no-deps wheels/mmcv-2.2.0-*.whl mmdet==3.3.0
    # then raise mmcv_maximum_version to '2.3.0' in PEER's mmdet/__init__.py

Each side is a worker process (this file with ``--worker ours|mmdet``) that builds its model
with random weights and flushes subnormal floats, then runs one call per line it reads; the
orchestrator times them in turn, the order flipped every round (``common.alternate_samples``).
A process keeps a speed of its own (two workers of the same model differed by 4 %), so the
rounds are spread over ``--sessions`` pairs of fresh workers, started in alternating order:

* ``forward``: ``model(images, mode='tensor')`` (backbone, FPN, head), eval, 1x3x800x1216;
* ``train_step``: ``model.train_step`` with SGD (lr 1e-4, momentum 0.9) on 2x3x512x512 uint8
  images with 8 random boxes each: preprocessing, forward, focal + L1 losses, backward, step.

JSON lines: medians, ``ratio`` = MMDetection's time / ours (above 1: ours is faster), the
quartiles of the per-round ratios, both sides' versions and parameter counts.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OURS_CONFIG = os.path.join(REPO, 'configs/retinanet_r50_fpn_800x1333_1x_coco.py')
PARTS = dict(forward=((1, 800, 1216), False), train_step=((2, 512, 512), True))


def boxes_and_labels(batch: int, height: int, width: int, num_boxes: int = 8):
    """The same random (x1, y1, x2, y2) boxes and 0-based labels on both sides."""
    import torch
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(batch):
        xy = torch.rand(num_boxes, 2, generator=gen) * torch.tensor([width * 0.7, height * 0.7])
        wh = 20 + torch.rand(num_boxes, 2, generator=gen) * 150
        out.append((torch.cat([xy, xy + wh], 1), torch.randint(0, 80, (num_boxes,),
                                                                generator=gen)))
    return out


def build(side: str):
    """(model, DataSample class, InstanceData, versions) of ``side``, random weights."""
    import torch
    from mmengine.structures import InstanceData
    torch.manual_seed(0)
    if side == 'ours':
        import toolbox  # noqa: F401  (registers the core)
        from toolbox.engine import load_config
        from toolbox.plugins import load_plugins
        from toolbox.registry import MODELS
        from toolbox.structures import DataSample
        load_plugins()
        cfg = load_config(OURS_CONFIG)
        cfg.model.backbone.pop('init_cfg', None)  # random weights: nothing to download
        return MODELS.build(cfg.model), DataSample, InstanceData, {}
    import mmcv
    import mmdet
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    init_default_scope('mmdet')
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs',
                                       'retinanet', 'retinanet_r50_fpn_1x_coco.py'))
    cfg.model.backbone.init_cfg = None
    return (MODELS.build(cfg.model), DetDataSample, InstanceData,
            dict(mmdet=mmdet.__version__, mmcv=mmcv.__version__))


def worker(side: str, part: str) -> None:
    """Build, warm up, print one JSON line of facts, then run one call per stdin line."""
    import torch
    torch.set_flush_denormal(True)  # before any op, so that torch's workers carry it too
    model, sample_cls, instance_cls, versions = build(side)
    (batch, h, w), train = PARTS[part]
    images = (torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255)
    if train:
        from mmengine.optim import OptimWrapper
        model.train()
        wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9))
        samples = []
        for boxes, labels in boxes_and_labels(batch, h, w):
            sample = sample_cls(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                              scale_factor=(1.0, 1.0), pad_shape=(h, w),
                                              batch_input_shape=(h, w)))
            sample.gt_instances = instance_cls(bboxes=boxes, labels=labels)
            samples.append(sample)
        data = dict(inputs=[img.to(torch.uint8) for img in images], data_samples=samples)

        def call():
            model.train_step(dict(data), wrapper)
    else:
        model.eval()

        def call():
            with torch.no_grad():
                model(images, mode='tensor')
    call()
    print(json.dumps(dict(params=sum(p.numel() for p in model.parameters()),
                          torch=torch.__version__, threads=torch.get_num_threads(),
                          **versions)), flush=True)
    for line in sys.stdin:
        if line.strip() != 'run':
            break
        call()
        print('done', flush=True)


def start_worker(python: str, side: str, part: str):
    proc = subprocess.Popen([python, os.path.abspath(__file__), '--worker', side, '--part', part],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    facts = json.loads(proc.stdout.readline())
    return proc, facts


def remote_call(proc):
    """One call in the worker ``proc``, returning when it is done (a pipe round trip adds well
    under a millisecond to seconds-long calls)."""
    def call():
        proc.stdin.write('run\n')
        proc.stdin.flush()
        proc.stdout.readline()
    return call


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--peer-python', help='python of the MMDetection virtualenv')
    parser.add_argument('--parts', nargs='+', default=list(PARTS), choices=list(PARTS))
    parser.add_argument('--repeats', type=int, default=16, help='rounds in all')
    parser.add_argument('--sessions', type=int, default=4,
                        help='pairs of fresh worker processes the rounds are spread over')
    parser.add_argument('--out', help='append the JSON lines to this file')
    parser.add_argument('--worker', choices=['ours', 'mmdet'], help=argparse.SUPPRESS)
    parser.add_argument('--part', choices=list(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.part)
    if not args.peer_python:
        parser.error('--peer-python PEER/bin/python is needed (module docstring)')
    sys.path.insert(0, HERE)
    from common import alternate_samples, emit, machine, ratio_quartiles
    info = machine()
    for part in args.parts:
        ours_times, peer_times = [], []
        # a worker process keeps a speed of its own (two workers of our same model, alternated
        # 8 times: 2.08 vs 2.16 s median), so the rounds are spread over fresh pairs of workers,
        # started in alternating order
        for session in range(args.sessions):
            starts = [('ours', sys.executable), ('mmdet', args.peer_python)]
            workers = {side: start_worker(python, side, part)
                       for side, python in (starts if session % 2 == 0 else starts[::-1])}
            (ours, ours_facts), (peer, peer_facts) = workers['ours'], workers['mmdet']
            times = alternate_samples(remote_call(ours), remote_call(peer),
                                      max(2, args.repeats // args.sessions), warmup=0)
            ours_times += times[0]
            peer_times += times[1]
            for proc in (ours, peer):
                proc.stdin.close()
                proc.wait()
        ours_s, peer_s = statistics.median(ours_times), statistics.median(peer_times)
        (batch, h, w), _ = PARTS[part]
        emit(dict(benchmark=f'retinanet_r50_{part}_vs_mmdet', shape=[batch, 3, h, w],
                  precision='fp32', repeats=len(ours_times), sessions=args.sessions,
                  ours_s=round(ours_s, 4), peer_s=round(peer_s, 4), ratio=round(peer_s / ours_s, 3),
                  ratio_iqr=ratio_quartiles(ours_times, peer_times),
                  peer=f"MMDetection {peer_facts.get('mmdet')} (mmcv {peer_facts.get('mmcv')})",
                  ours_params=ours_facts['params'], peer_params=peer_facts['params'],
                  peer_torch=peer_facts['torch'], machine=info), args.out)


if __name__ == '__main__':
    main()
