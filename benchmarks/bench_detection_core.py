"""Speed of core detection pieces against a peer measured in the same run (CPU or GPU).

* COCO bbox evaluation on coco128 (../shared/data) with deterministic fake detections, and on
  a synthetic 5,000-image set the size of COCO val2017 (``--synthetic-images``, 7 boxes per
  image over 80 categories, 5 detections per box): faster-coco-eval (our default backend) vs
  pycocotools (the reference).
* ResNet-50 forward: our plugin vs torchvision's resnet50 (same weights).

Usage: ``python benchmarks/bench_detection_core.py [--out benchmarks/results/FILE.jsonl]``.
Each JSON line carries the machine description, the timings and ``ratio`` = peer / ours
(above 1 means ours is faster).
"""
import argparse
import json
import os.path as osp

import numpy as np
import torch
import torchvision

from common import emit, machine, median_seconds

import toolbox  # noqa: F401
from toolbox.evaluation.coco_metric import build_coco, coco_backend
from toolbox.plugins import load_plugins
from toolbox.registry import MODELS

COCO128 = osp.join(osp.dirname(__file__), '..', '..', 'shared', 'data', 'coco128-seg',
                   'annotations', 'instances_train2017.json')


def fake_detections(gt: dict, seed: int = 0, copies: int = 20) -> list:
    """Jittered copies of every ground-truth box with random scores, plus false positives."""
    rng = np.random.RandomState(seed)
    cat_ids = [c['id'] for c in gt['categories']]
    dets = []
    for ann in gt['annotations']:
        x, y, w, h = ann['bbox']
        for _ in range(copies):
            jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
            cat = ann['category_id'] if rng.rand() < 0.8 else int(rng.choice(cat_ids))
            dets.append(dict(image_id=ann['image_id'], category_id=cat, score=float(rng.rand()),
                             bbox=[float(x + jitter[0]), float(y + jitter[1]),
                                   float(max(w + jitter[2], 1)), float(max(h + jitter[3], 1))]))
    return dets


def synthetic_coco(num_images: int, boxes_per_image: int = 7, seed: int = 0) -> dict:
    """A COCO ground-truth dict of ``num_images`` 640x480 images with ``boxes_per_image``
    random boxes each (80 categories, areas spanning COCO's small / medium / large)."""
    rng = np.random.RandomState(seed)
    count = num_images * boxes_per_image
    wh = np.exp(rng.uniform(np.log(8), np.log(400), (count, 2)))
    xy = rng.uniform(0, 1, (count, 2)) * (np.array([640, 480]) - wh).clip(min=1)
    cats = rng.randint(1, 81, count)
    annotations = [dict(id=i + 1, image_id=i // boxes_per_image + 1, category_id=int(cats[i]),
                        bbox=[float(xy[i, 0]), float(xy[i, 1]), float(wh[i, 0]), float(wh[i, 1])],
                        area=float(wh[i, 0] * wh[i, 1]), iscrowd=0) for i in range(count)]
    return dict(images=[dict(id=i + 1, width=640, height=480, file_name=f'{i + 1}.jpg')
                        for i in range(num_images)],
                annotations=annotations,
                categories=[dict(id=c, name=str(c)) for c in range(1, 81)])


def coco_eval_seconds(gt: dict, dets: list, backend: str, repeats: int = 3, warmup: int = 1
                      ) -> float:
    def run():
        api = coco_backend(backend)
        coco_gt = build_coco(gt, backend)
        coco_dt = coco_gt.loadRes(dets)
        evaluator = api.evaluator(coco_gt, coco_dt)
        evaluator.evaluate()
        evaluator.accumulate()
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        return median_seconds(run, repeats=repeats, warmup=warmup)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', help='append the JSON lines to this file')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--synthetic-images', type=int, default=5000,
                        help='images of the synthetic COCO evaluation set (0: skip it)')
    args = parser.parse_args()
    load_plugins()
    info = machine()

    if osp.exists(COCO128):
        with open(COCO128) as f:
            gt = json.load(f)
        dets = fake_detections(gt)
        ours = coco_eval_seconds(gt, dets, 'faster_coco_eval')
        peer = coco_eval_seconds(gt, dets, 'pycocotools')
        emit(dict(benchmark='coco_bbox_eval_coco128', detections=len(dets), ours='faster_coco_eval',
                  peer='pycocotools', ours_s=round(ours, 4), peer_s=round(peer, 4),
                  ratio=round(peer / ours, 2), machine=info), args.out)

    if args.synthetic_images:
        gt = synthetic_coco(args.synthetic_images)
        dets = fake_detections(gt, copies=5)
        ours = coco_eval_seconds(gt, dets, 'faster_coco_eval', repeats=1, warmup=0)
        peer = coco_eval_seconds(gt, dets, 'pycocotools', repeats=1, warmup=0)
        emit(dict(benchmark=f'coco_bbox_eval_synthetic_{args.synthetic_images}',
                  images=args.synthetic_images, detections=len(dets), ours='faster_coco_eval',
                  peer='pycocotools', ours_s=round(ours, 4), peer_s=round(peer, 4),
                  ratio=round(peer / ours, 2), machine=info), args.out)

    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval().to(args.device)
    ours_model = MODELS.build(dict(type='ResNet', depth=50)).eval().to(args.device)
    ours_model.load_state_dict({k: v for k, v in reference.state_dict().items()
                                if not k.startswith('fc.')})
    x = torch.randn(2, 3, 224, 224, device=args.device)
    with torch.no_grad():  # warm both up first: the first calls pay for allocator growth
        median_seconds(lambda: reference(x), repeats=1, warmup=2)
        ours = median_seconds(lambda: ours_model(x), repeats=10, warmup=3)
        peer = median_seconds(lambda: reference(x), repeats=10, warmup=3)
    emit(dict(benchmark='resnet50_forward_2x224', device=args.device, ours='toolbox ResNet',
              peer='torchvision resnet50 (with fc)', ours_s=round(ours, 4), peer_s=round(peer, 4),
              ratio=round(peer / ours, 2), machine=info), args.out)


if __name__ == '__main__':
    main()
