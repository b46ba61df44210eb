"""Class statistics of a config's dataset: ``python tools/dataset_stats.py CONFIG [--split train]``.

Prints, per class, what the dataset's cached ``class_counts()`` holds (through dataset
wrappers, see ``toolbox.datasets.dataset_class_counts``): instance counts and image
frequencies for detection, pixel counts and image frequencies for segmentation, each with its
share of the total; and the LVIS repeat factor ``max(1, sqrt(t / f_c))`` of each class for
``--repeat-thr t``. These are the numbers the class-frequency-aware losses and the
class-aware samplers get from config. ``--json`` prints one JSON object instead of a table.
"""
import argparse
import json
import math


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Per-class instance counts, image frequencies '
                                                 'and pixel counts of a config\'s dataset.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='train',
                        help='which dataloader\'s dataset (default: train)')
    parser.add_argument('--repeat-thr', type=float, default=None,
                        help='also print the LVIS repeat factor of each class for this t')
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
    if args.json:
        print(json.dumps(dict(config=args.config, split=args.split,
                              num_images=int(counts.get('num_images', 0)), classes=rows)))
        return rows
    keys = [k for k in rows[0] if k not in ('index', 'name')] if rows else []
    width = max([len(str(c)) for c in classes] + [5])
    print(f"{args.config} ({args.split}): {int(counts.get('num_images', 0))} images")
    print(f"{'class':<{width}} " + ' '.join(f'{k:>22}' for k in keys))
    for row in rows:
        cells = [f'{row[k]:>22.4f}' if isinstance(row[k], float) else f'{str(row[k]):>22}'
                 for k in keys]
        print(f"{row['name']:<{width}} " + ' '.join(cells))
    return rows


if __name__ == '__main__':
    main()
