"""Plot training losses and validation metrics of a work dir: ``python tools/plot_log.py WORK_DIR``.

Reads mmengine's ``vis_data/scalars.json`` (one json object per line: training records carry
``lr``, ``loss*`` keys and ``step`` = global iteration; validation records carry metric keys
such as ``pascal_voc/mAP``, ``coco/bbox_mAP``, ``mIoU`` or ``mDice`` (per-class entries like
``IoU.Sky`` are not drawn), the ``loss*`` keys logged by
``ValLossHook`` if it is configured, and ``step`` = epoch for epoch-based runs, iteration
otherwise) and writes a PNG: train (solid) and val (dashed) losses against iterations on the
left, validation metrics against the iteration at which they were measured on the right.
"""
from __future__ import annotations

import argparse
import glob
import json
import os.path as osp


def find_scalars(path: str) -> str:
    """``path`` itself if it is a file, else the newest ``*/vis_data/scalars.json`` under it."""
    if osp.isfile(path):
        return path
    candidates = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')) +
                        glob.glob(osp.join(path, 'vis_data', 'scalars.json')))
    if not candidates:
        raise FileNotFoundError(f'no vis_data/scalars.json under {path!r} (is it a work dir?)')
    return max(candidates, key=osp.getmtime)


# keys of mmengine's scalar records that are not measurements of the model
BOOKKEEPING = frozenset({'step', 'epoch', 'iter', 'time', 'data_time'})


def read_scalars(path: str) -> tuple[list[dict], list[dict]]:
    """Split the records of ``scalars.json`` into (training, validation) lists."""
    train, val = [], []
    with open(path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f'{path}:{line_no}: not a json line ({exc})') from exc
            if 'lr' in record:  # training records carry the learning rate
                train.append(record)
            elif any(k not in BOOKKEEPING for k in record):
                val.append(record)
    return train, val


def is_summary_metric(key: str) -> bool:
    """A validation metric drawn by default: not bookkeeping, not a loss, and not a per-class
    entry (``IoU.Sky``, ``Dice.anterior``: a dot in the key), e.g. ``pascal_voc/mAP``,
    ``coco/bbox_mAP``, ``mIoU``, ``mDice``."""
    return key not in BOOKKEEPING and not key.startswith('loss') and '.' not in key


def val_iterations(train: list[dict], val: list[dict]) -> list[float]:
    """Iteration of each validation record: for epoch-based runs the last training step logged
    in that epoch (training records have an ``epoch`` key), otherwise its own ``step``."""
    if not train or 'epoch' not in train[0]:
        return [r['step'] for r in val]
    last_step = {}
    for r in train:
        last_step[r['epoch']] = max(last_step.get(r['epoch'], 0), r['step'])
    return [last_step.get(r['step'], r['step']) for r in val]


def metric_points(train: list[dict], val: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """``{metric key: [(iteration, value), ...]}`` of the validation records, leaving out the
    -1 that COCO-style metrics log for "no objects of this size" (a placeholder, not a value);
    a metric that is only ever -1 is left out entirely."""
    xs = val_iterations(train, val)
    keys = sorted({k for r in val for k in r if is_summary_metric(k)})
    points = {key: [(x, r[key]) for x, r in zip(xs, val) if r.get(key, -1) != -1]
              for key in keys}
    return {key: p for key, p in points.items() if p}


def plot(train: list[dict], val: list[dict], out: str, keys: list[str] | None = None,
         title: str | None = None) -> str:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    loss_keys = keys or sorted({k for r in train for k in r if k.startswith('loss')},
                               key=lambda k: (k != 'loss', k))
    metrics = metric_points(train, val)
    ncols = 2 if metrics else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4.5), squeeze=False)
    ax = axes[0, 0]
    for key in loss_keys:
        points = [(r['step'], r[key]) for r in train if key in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, label=key, linewidth=2.0 if key == 'loss' else 1.0)
    xs_val = val_iterations(train, val)
    for key in loss_keys:  # validation losses (ValLossHook), dashed, at validation iterations
        points = [(x, r[key]) for x, r in zip(xs_val, val) if key in r]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, linestyle='--', marker='o', label=f'val {key}',
                    linewidth=2.0 if key == 'loss' else 1.0)
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss')
    ax.set_title('train (solid) and val (dashed) loss')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if metrics:
        ax = axes[0, 1]
        for key, points in metrics.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker='o', label=key)
        ax.set_xlabel('iteration')
        ax.set_ylabel('validation metric')
        ax.set_title('validation')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Plot train losses (and validation metrics, if any) from an mmengine work '
                    'dir (its <timestamp>/vis_data/scalars.json) into a PNG.')
    parser.add_argument('path', help='work dir, or a scalars.json file')
    parser.add_argument('--out', default=None,
                        help='output PNG (default: <work dir>/loss_curve.png)')
    parser.add_argument('--keys', nargs='+', default=None,
                        help='loss keys to plot (default: every key starting with "loss")')
    parser.add_argument('--title', default=None, help='figure title')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    scalars = find_scalars(args.path)
    train, val = read_scalars(scalars)
    if not train:
        raise ValueError(f'{scalars}: no training records with loss keys')
    out = args.out or osp.join(args.path if osp.isdir(args.path) else osp.dirname(scalars),
                               'loss_curve.png')
    plot(train, val, out, args.keys, args.title)
    print(f'{out}: {len(train)} training records, {len(val)} validation records')
    return out


if __name__ == '__main__':
    main()
