"""Class statistics of a config's dataset: ``python tools/dataset_stats.py CONFIG [--split train]``.

Prints, per class, what the dataset's cached ``class_counts()`` holds (through dataset
wrappers, see ``toolbox.datasets.dataset_class_counts``): instance counts and image
frequencies for detection, pixel counts and image frequencies for segmentation, each with its
share of the total; and the LVIS repeat factor ``max(1, sqrt(t / f_c))`` of each class for
``--repeat-thr t``. These are the numbers the class-frequency-aware losses and the
class-aware samplers get from config. ``--json`` prints one JSON object instead of a table.

Detection datasets also get box statistics per class (and over all classes): the number of
boxes, of ignored ones (COCO ``iscrowd``, VOC ``difficult``; left out of everything else),
percentiles of width, height, area and aspect ratio (width / height), and the COCO size
classes by box area: small ``< 32^2``, medium ``32^2 .. 96^2``, large ``>= 96^2``. Boxes are
measured in the annotation's pixels (before any resize of the pipeline) and counted as often
as an epoch over the dataset draws their image (wrappers' repeats).
"""
import argparse
import json
import math

import numpy as np

COCO_AREA_LIMITS = (32 ** 2, 96 ** 2)  # small < 32^2 <= medium < 96^2 <= large


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Per-class instance counts, image frequencies '
                                                 'and pixel counts of a config\'s dataset.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='train',
                        help='which dataloader\'s dataset (default: train)')
    parser.add_argument('--repeat-thr', type=float, default=None,
                        help='also print the LVIS repeat factor of each class for this t')
    parser.add_argument('--percentiles', type=float, nargs='+', default=[5, 50, 95],
                        help='box size percentiles (default 5 50 95)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')
    return parser.parse_args(argv)


def class_table(counts: dict, classes, repeat_thr=None) -> list[dict]:
    """One row per class: every per-class entry of ``counts``, its share of the total, the
    image frequency and (with ``repeat_thr``) the repeat factor."""
    num_images = int(counts.get('num_images', 0))
    rows = []
    for c, name in enumerate(classes):
        row = dict(index=c, name=name)
        for key, value in counts.items():
            if key == 'num_images':
                continue
            total = int(sum(int(v) for v in value))
            row[key] = int(value[c])
            row[f'{key}_share'] = int(value[c]) / total if total else 0.0
        if 'image_counts' in counts and num_images:
            freq = int(counts['image_counts'][c]) / num_images
            row['image_frequency'] = freq
            if repeat_thr is not None:
                row['repeat_factor'] = max(1.0, math.sqrt(repeat_thr / freq)) if freq else None
        rows.append(row)
    return rows


def _percentile_key(p: float) -> str:
    return f'p{p:g}'.replace('.', '_')


def box_table(boxes, labels, classes, ignored=None, percentiles=(5, 50, 95)) -> list[dict]:
    """Box statistics per class and over all classes (module docstring).

    Args:
        boxes: (N, 4) ``xyxy`` pixel boxes. labels: (N,) class indices into ``classes``.
        ignored: (N,) bool, ignored boxes (counted in ``ignored`` only); None: none.

    Returns:
        One row per class, then a row ``name='all'`` (``index`` None): ``count``, ``ignored``,
        ``width_p{q}``, ``height_p{q}``, ``area_p{q}``, ``aspect_p{q}`` for each percentile
        ``q`` (numpy's linear interpolation; None for a class without boxes), ``small``,
        ``medium``, ``large``.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    ignored = np.zeros(len(boxes), bool) if ignored is None else np.asarray(ignored, bool)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = width * height
    aspect = np.divide(width, height, out=np.full_like(width, np.inf), where=height > 0)
    measures = dict(width=width, height=height, area=area, aspect=aspect)
    size_class = np.searchsorted(COCO_AREA_LIMITS, area, side='right')  # 0 small .. 2 large
    groups = [(c, name, labels == c) for c, name in enumerate(classes)]
    groups.append((None, 'all', np.ones(len(boxes), bool)))
    rows = []
    for index, name, member in groups:
        kept = member & ~ignored
        row = dict(index=index, name=name, count=int(kept.sum()),
                   ignored=int((member & ignored).sum()))
        for measure, values in measures.items():
            qs = np.percentile(values[kept], percentiles) if kept.any() else \
                [None] * len(percentiles)
            row.update({f'{measure}_{_percentile_key(p)}': None if q is None else float(q)
                        for p, q in zip(percentiles, qs)})
        small, medium, large = np.bincount(size_class[kept], minlength=3).tolist()
        row.update(small=small, medium=medium, large=large)
        rows.append(row)
    return rows


def dataset_boxes(dataset):
    """``(boxes (N, 4), labels (N,), ignored (N,))`` of every instance an epoch over
    ``dataset`` draws (through wrappers, repeats included), or None for a dataset without
    instances (segmentation)."""
    from toolbox.datasets import check_class_counts_support
    boxes, labels, ignored = [], [], []
    for leaf, repeats in check_class_counts_support(dataset):
        for idx in range(len(leaf)):
            instances = leaf.get_data_info(idx).get('instances')
            if instances is None:
                return None
            times = 1 if repeats is None else int(repeats[idx])
            for _ in range(times):
                boxes += [i['bbox'] for i in instances]
                labels += [i['bbox_label'] for i in instances]
                ignored += [bool(i.get('ignore_flag', 0)) for i in instances]
    return (np.array(boxes, np.float64).reshape(-1, 4), np.array(labels, np.int64),
            np.array(ignored, bool))


def _print_box_table(rows: list[dict], percentiles) -> None:
    keys = ['count', 'ignored'] + [f'{m}_{_percentile_key(p)}' for m in
                                   ('width', 'height', 'area', 'aspect') for p in percentiles]
    keys += ['small', 'medium', 'large']
    width = max([len(str(r['name'])) for r in rows] + [5])
    print('boxes (annotation pixels, ignored boxes left out; aspect = width / height; COCO '
          'sizes by area: small < 32^2 <= medium < 96^2 <= large)')
    print(f"{'class':<{width}} " + ' '.join(f'{k:>11}' for k in keys))
    for row in rows:
        cells = ['-' if row[k] is None else f'{row[k]:.2f}' if k.startswith('aspect')
                 else f'{row[k]:.1f}' if isinstance(row[k], float) else str(row[k])
                 for k in keys]
        print(f"{row['name']:<{width}} " + ' '.join(f'{c:>11}' for c in cells))


def main(argv=None):
    args = parse_args(argv)
    import toolbox  # noqa: F401  (registers the core)
    from toolbox.datasets import dataset_class_counts
    from toolbox.engine import load_config
    from toolbox.registry import DATASETS
    cfg = load_config(args.config)
    dataset_cfg = dict(cfg[f'{args.split}_dataloader']['dataset'])
    dataset_cfg['pipeline'] = []  # statistics come from the annotations, no image is loaded
    dataset = DATASETS.build(dataset_cfg)
    counts = dataset_class_counts(dataset)
    classes = dataset.metainfo['classes']
    rows = class_table(counts, classes, args.repeat_thr)
    found = dataset_boxes(dataset)
    box_rows = None if found is None else box_table(*found[:2], classes, found[2],
                                                    args.percentiles)
    if args.json:
        result = dict(config=args.config, split=args.split,
                      num_images=int(counts.get('num_images', 0)), classes=rows)
        if box_rows is not None:
            result['boxes'] = box_rows
        print(json.dumps(result))
        return rows
    keys = [k for k in rows[0] if k not in ('index', 'name')] if rows else []
    width = max([len(str(c)) for c in classes] + [5])
    print(f"{args.config} ({args.split}): {int(counts.get('num_images', 0))} images")
    print(f"{'class':<{width}} " + ' '.join(f'{k:>22}' for k in keys))
    for row in rows:
        cells = [f'{row[k]:>22.4f}' if isinstance(row[k], float) else f'{str(row[k]):>22}'
                 for k in keys]
        print(f"{row['name']:<{width}} " + ' '.join(cells))
    if box_rows is not None:
        _print_box_table(box_rows, args.percentiles)
    return rows


if __name__ == '__main__':
    main()
