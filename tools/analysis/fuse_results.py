"""Fuse the detections of several models (a model ensemble) and evaluate the fused result.

    python tools/test.py CONFIG_A CKPT_A [--tta] --out a.pkl
    python tools/test.py CONFIG_B CKPT_B [--tta] --out b.pkl
    python tools/analysis/fuse_results.py CONFIG a.pkl b.pkl [...] [--iou-thr 0.55]
        [--max-per-img 150] [--out fused.pkl]

Each pickle holds one record per test image (``tools/test.py --out``: the data sample with
its ground truth and ``pred_instances``, boxes in the original image frame). Per image, the
detections of all N models go through weighted box fusion
(:func:`toolbox.models.tta.weighted_box_fusion`, the merge of ``--tta``: clusters of
same-class boxes overlapping the cluster's best box by IoU > ``--iou-thr`` become their
score-weighted mean box, scored by the mean score times ``min(n, N) / N``). The fused records
are evaluated with CONFIG's ``test_evaluator`` (its dataset gives the class names) and can be
pickled again with ``--out``. Every pickle must cover the same images (matched by
``img_path``, else ``img_id``).
"""
import argparse
import json
import os
import pickle
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Fuse the test results of several models by '
                                                 'weighted box fusion and evaluate them.')
    parser.add_argument('config', help="config whose test_evaluator and test dataset are used")
    parser.add_argument('results', nargs='+', help='pickles written by tools/test.py --out')
    parser.add_argument('--iou-thr', type=float, default=0.55,
                        help='IoU above which same-class boxes are fused (default 0.55)')
    parser.add_argument('--max-per-img', type=int, default=150,
                        help='fused detections kept per image (default 150)')
    parser.add_argument('--out', metavar='FILE.pkl', help='also pickle the fused records')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. test_dataloader.dataset.data_root=...')
    return parser.parse_args(argv)


def record_key(record: dict, path: str):
    for field in ('img_path', 'img_id'):
        if record.get(field) is not None:
            return record[field]
    raise ValueError(f'{path}: a record has neither img_path nor img_id (was it written by '
                     f'tools/test.py --out?)')


def load_results(path: str) -> dict:
    """``{image key: record}`` of one pickle, with each record's predictions checked."""
    try:
        with open(path, 'rb') as file:
            records = pickle.load(file)
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise ValueError(f'{path}: cannot read the results pickle ({exc})') from None
    if not isinstance(records, list):
        raise ValueError(f'{path}: expected a list of records (tools/test.py --out), got '
                         f'{type(records).__name__}')
    by_image = {}
    for index, record in enumerate(records):
        preds = record.get('pred_instances') if isinstance(record, dict) else None
        if preds is None:
            raise ValueError(f'{path}: record {index} has no pred_instances')
        missing = [k for k in ('bboxes', 'scores', 'labels') if k not in preds]
        if missing:
            raise ValueError(f'{path}: record {index} pred_instances lacks {missing}')
        by_image[record_key(record, path)] = record
    return by_image


def fuse_results(runs: list[dict], paths: list[str], iou_thr: float = 0.55,
                 max_per_img: int = 150) -> list[dict]:
    """One fused record per image of ``runs[0]`` (each run: ``{image key: record}``); the
    other fields of a record are the first run's."""
    import torch

    from toolbox.models.tta import weighted_box_fusion
    for run, path in zip(runs[1:], paths[1:]):
        if run.keys() != runs[0].keys():
            missing = sorted(map(str, runs[0].keys() - run.keys()))
            extra = sorted(map(str, run.keys() - runs[0].keys()))
            raise ValueError(f'{path}: not the images of {paths[0]} (missing {missing[:3]}, '
                             f'extra {extra[:3]})')
    fused = []
    for key, first in runs[0].items():
        preds = [run[key]['pred_instances'] for run in runs]
        merged = weighted_box_fusion(
            torch.cat([torch.as_tensor(p['bboxes'], dtype=torch.float32).reshape(-1, 4)
                       for p in preds]),
            torch.cat([torch.as_tensor(p['scores'], dtype=torch.float32) for p in preds]),
            torch.cat([torch.as_tensor(p['labels'], dtype=torch.long) for p in preds]),
            len(runs), iou_thr, max_per_img)
        fused.append(dict(first, pred_instances=dict(
            bboxes=merged.bboxes, scores=merged.scores, labels=merged.labels)))
    return fused


def main(argv=None):
    args = parse_args(argv)
    from mmengine.evaluator import Evaluator

    from toolbox.engine import load_config
    from toolbox.plugins import load_plugins
    from toolbox.registry import DATASETS, METRICS
    load_plugins()
    cfg = load_config(args.config, args.cfg_options)
    runs = [load_results(path) for path in args.results]
    fused = fuse_results(runs, args.results, args.iou_thr, args.max_per_img)
    evaluators = cfg.test_evaluator
    metrics = [METRICS.build(c) for c in (evaluators if isinstance(evaluators, list)
                                          else [evaluators])]
    evaluator = Evaluator(metrics)
    evaluator.dataset_meta = DATASETS.build(cfg.test_dataloader.dataset).metainfo
    if args.out:  # written before the metrics read (and may change) the records
        tmp = f'{args.out}.tmp'
        with open(tmp, 'wb') as file:
            pickle.dump(fused, file)
        os.replace(tmp, args.out)
    results = evaluator.offline_evaluate(fused, chunk_size=8)
    json.dump(results, sys.stdout, indent=1, default=float)
    print()
    return results


if __name__ == '__main__':
    try:
        main()
    except ValueError as exc:  # the message names the file: it is enough
        raise SystemExit(f'error: {exc}') from None
