"""FLOPs and parameters of a config's model: the whole ``'tensor'`` forward (backbone, neck,
head(s), no post-processing) and each top-level module.

    python tools/analysis/get_flops.py CONFIG [--shape H W | --shape D H W] [--batch N] [--json]

FLOPs are counted by torch's own ``torch.utils.flop_counter.FlopCounterMode``, which counts a
multiply-add as **2** FLOPs: GFLOPs here are twice the "GMACs" (often printed as "FLOPs") of
fvcore / mmcv and many papers. Element-wise ops, norms, pooling, NMS and custom ops are not
counted. The input is a normalised batch (B, C, H, W), or (B, C, D, H, W) for volumes, of
random values; the size is ``--shape``, else the test pipeline's ``Resize`` scale (with
``keep_ratio`` the largest image it produces), else a segmentor's test window
(``test_cfg.roi_size`` / ``crop_size``), padded up to the data preprocessor's
``pad_size_divisor``. The weights are random (the count does not depend on them).
``--json`` prints one JSON line instead of the table. See ``toolbox/analysis.py``.
"""
import argparse
import json
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="FLOPs (torch's counter, 2 per multiply-add) "
                                                 "and parameters of a config's model.")
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                        help='input size H W (images) or D H W (volumes); default: the test '
                             'pipeline Resize scale, or the test window')
    parser.add_argument('--batch', type=int, default=1, help='batch size (default 1)')
    parser.add_argument('--json', action='store_true', help='print one JSON line, no table')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. model.bbox_head.num_classes=3')
    return parser.parse_args(argv)


def format_table(report: dict) -> str:
    """The report of ``toolbox.analysis.flops_report`` as a readable table."""
    total = report['flops']
    names = list(report['params_by_module'])
    names += [n for n in report['flops_by_module'] if n not in names]
    lines = [f"config: {report['config']}",
             f"input:  {tuple(report['input'])} (batch {report['batch']})",
             '',
             f"{'module':<20}{'GFLOPs':>12}{'share':>9}{'params':>14}{'trainable':>14}"]
    for name in names:
        flops = report['flops_by_module'].get(name, 0)
        params, trainable = report['params_by_module'].get(name, (0, 0))
        share = f'{100 * flops / total:.1f}%' if total else '-'
        lines.append(f'{name:<20}{flops / 1e9:>12.3f}{share:>9}{params:>14,}{trainable:>14,}')
    lines.append(f"{'total':<20}{total / 1e9:>12.3f}{'100.0%':>9}{report['params']:>14,}"
                 f"{report['trainable_params']:>14,}")
    lines += ['', f"FLOPs: {report['flop_convention']}"]
    return '\n'.join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from toolbox.analysis import ShapeError, flops_report
    if args.batch < 1:
        sys.exit(f'--batch must be >= 1, got {args.batch}')
    try:
        report = flops_report(args.config, args.shape, args.batch, args.cfg_options)
    except ShapeError as err:
        sys.exit(str(err))
    print(json.dumps(report, sort_keys=True) if args.json else format_table(report))
    return report


if __name__ == '__main__':
    main()
