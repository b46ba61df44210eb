"""Compare runs: ``python tools/analyze_logs.py RUN_DIR [RUN_DIR ...] --keys loss lr
pascal_voc/mAP --out curves.png``.

One panel per key, one line per run (the legend names the run: its folder name, or
``--legend``). A key found in the training records (``loss``, ``loss_cls``, ``lr``, ...) is
drawn against the training iteration; any other key (``pascal_voc/mAP``, ``coco/bbox_mAP``,
``mIoU``, ``val/loss`` from ``ValLossHook``) against the iteration at which the validation
ran, with markers. The -1 that COCO-style metrics log for "no objects of this size" is a
placeholder, not a value, and is left out (:func:`plot_log.metric_points`). ``--smooth K``
draws a moving average over K training records. Each RUN_DIR is a work dir (its newest
``<timestamp>/vis_data/scalars.json``) or a ``scalars.json`` file.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from plot_log import find_scalars, read_scalars, val_iterations  # noqa: E402


def key_points(train: list[dict], val: list[dict], key: str):
    """``(iterations, values, from_training)`` of ``key`` in one run; -1 placeholders of
    validation metrics left out. Empty lists when the run never logged it."""
    points = [(r['step'], r[key]) for r in train if key in r]
    if points:
        xs, ys = zip(*points)
        return list(xs), list(ys), True
    points = [(x, r[key]) for x, r in zip(val_iterations(train, val), val)
              if key in r and r[key] != -1]
    if not points:
        return [], [], False
    xs, ys = zip(*points)
    return list(xs), list(ys), False


def moving_average(values: list[float], window: int) -> list[float]:
    """Mean of each value and the ``window - 1`` before it (fewer at the start)."""
    import numpy as np
    if window <= 1 or not values:
        return list(values)
    cumsum = np.cumsum(np.concatenate([[0.0], np.asarray(values, np.float64)]))
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    return ((cumsum[index] - cumsum[start]) / (index - start)).tolist()


def plot_runs(runs: dict[str, tuple[list[dict], list[dict]]], keys: list[str], out: str,
              smooth: int = 1, title: str | None = None) -> dict[str, list[str]]:
    """Draw ``keys`` of every run (``{run name: (train records, val records)}``) into
    ``out``. Returns ``{key: [names of the runs drawn in its panel]}``; a key that no run
    logged raises ``KeyError`` naming the keys the runs have."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    drawn = {}
    ncols = min(len(keys), 3)
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4.0 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        drawn[key] = []
        for name, (train, val) in runs.items():
            xs, ys, from_training = key_points(train, val, key)
            if not xs:
                continue
            if from_training:
                ax.plot(xs, moving_average(ys, smooth), label=name, linewidth=1.2)
            else:
                ax.plot(xs, ys, label=name, marker='o', linewidth=1.2)
            drawn[key].append(name)
        ax.set_title(key)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        if key == 'lr':
            ax.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2))
        if drawn[key]:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    missing = [key for key, names in drawn.items() if not names]
    if missing:
        plt.close(fig)
        logged = sorted({k for train, val in runs.values() for r in train + val for k in r}
                        - {'step', 'epoch', 'iter'})
        raise KeyError(f'no run logged {missing}; the runs have: {logged}')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return drawn


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Loss, learning-rate and metric curves of one or more runs on one plot.')
    parser.add_argument('runs', nargs='+', help='work dirs (or scalars.json files)')
    parser.add_argument('--keys', nargs='+', default=['loss', 'lr'],
                        help='scalars to plot, one panel each (default: loss lr)')
    parser.add_argument('--legend', nargs='+', default=None,
                        help='run names in the legend (default: the folder names)')
    parser.add_argument('--smooth', type=int, default=1,
                        help='moving average over this many training records')
    parser.add_argument('--title', default=None, help='figure title')
    parser.add_argument('--out', default='curves.png', help='output PNG')
    return parser.parse_args(argv)


def run_name(path: str) -> str:
    path = osp.normpath(path)
    if osp.isfile(path):  # <work dir>/<timestamp>/vis_data/scalars.json
        path = osp.dirname(osp.dirname(osp.dirname(path)))
    return osp.basename(path)


def main(argv=None):
    args = parse_args(argv)
    if args.legend is not None and len(args.legend) != len(args.runs):
        raise ValueError(f'--legend has {len(args.legend)} names for {len(args.runs)} runs')
    names = args.legend or [run_name(p) for p in args.runs]
    if len(set(names)) != len(names):
        raise ValueError(f'run names {names} are not unique: name them with --legend')
    runs = {name: read_scalars(find_scalars(path)) for name, path in zip(names, args.runs)}
    drawn = plot_runs(runs, args.keys, args.out, args.smooth, args.title)
    print(f'{args.out}: ' + '; '.join(f'{key}: {", ".join(r)}' for key, r in drawn.items()))
    return drawn


if __name__ == '__main__':
    main()
