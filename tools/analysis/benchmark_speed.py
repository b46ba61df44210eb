"""Inference speed of a config's model: median and spread over timed calls after warm-up,
images/s, and efficiency = achieved FLOP/s over this machine's fp32 GEMM peak, which the tool
measures itself (``torch.mm`` of square fp32 matrices, best of a few, on the same device and
thread count).

    python tools/analysis/benchmark_speed.py CONFIG [--checkpoint CKPT] [--shape H W]
        [--batch N] [--iters N] [--warmup N] [--amp {bf16,fp16}] [--[no-]channels-last]
        [--fuse-conv-bn]
        [--threads N] [--mode forward|predict] [--device cpu|cuda] [--json OUT]

``--mode forward`` (default) times the ``'tensor'`` forward (backbone, neck, head(s)) on a
normalised, padded batch; ``--mode predict`` times ``model.test_step`` on a packed batch of
random images with their data samples (data preprocessor, network, post-processing). The
model runs in eval mode under ``torch.no_grad``; on CUDA the device is synchronised before
every clock read. FLOPs are those of one timed call, counted in fp32 by torch's
``FlopCounterMode`` (2 per multiply-add, as ``get_flops.py``). ``--amp bf16`` runs under
``torch.autocast`` (on a CPU without bf16 units it falls back to fp32 and says so; ``fp16``
needs a GPU); the efficiency is still against the fp32 peak, so it may exceed 100 %.
``--channels-last`` defaults as the config key does (on for bf16 on a CPU, where oneDNN's bf16
kernels want NHWC; ``--no-channels-last`` keeps NCHW). ``--fuse-conv-bn`` folds the
BatchNorms into the convolutions first, as ``tools/test.py --fuse-conv-bn``; FLOPs are
counted before folding (the convolutions' FLOPs do not change).
``--json OUT`` appends one JSON line (``-``: print it) with the machine, the settings and
every number. The input size defaults as in ``get_flops.py``. See ``toolbox/analysis.py``.
"""
import argparse
import json
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Inference speed and efficiency of a config's "
                                                 'model against the measured fp32 GEMM peak.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--checkpoint', default=None,
                        help='weights to load (default: random; speed does not depend on them '
                             'in forward mode, the number of detections does in predict mode)')
    parser.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                        help='input size H W (images) or D H W (volumes); default: the test '
                             'pipeline Resize scale, or the test window')
    parser.add_argument('--batch', type=int, default=1, help='batch size (default 1)')
    parser.add_argument('--iters', type=int, default=20, help='timed calls (default 20)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed calls first (default 3)')
    parser.add_argument('--amp', choices=['bf16', 'fp16'], default=None,
                        help='autocast dtype (default: fp32)')
    parser.add_argument('--channels-last', action=argparse.BooleanOptionalAction,
                        default=None,
                        help='model and input in torch.channels_last memory order (default: '
                             'on for bf16 on a CPU, off otherwise)')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='fold each BatchNorm into the convolution before it')
    parser.add_argument('--threads', type=int, default=None,
                        help="intra-op threads (default: torch's, one per physical core)")
    parser.add_argument('--mode', choices=['forward', 'predict'], default='forward',
                        help="'forward': the tensor forward; 'predict': test_step with "
                             'post-processing (default forward)')
    parser.add_argument('--device', default=None,
                        help="'cpu' or 'cuda[:N]' (default: cuda when available)")
    parser.add_argument('--gemm-sizes', type=int, nargs='+', default=None, metavar='N',
                        help='square fp32 matrix sizes of the GEMM peak (default: '
                             'toolbox.analysis.DEFAULT_GEMM_SIZES, 2048 and 4096)')
    parser.add_argument('--gemm-repeats', type=int, default=3,
                        help='timed products per size, best kept (default 3)')
    parser.add_argument('--json', metavar='OUT', default=None,
                        help="append one JSON line to OUT ('-': print it)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. model.bbox_head.test_cfg.score_thr=0.3')
    return parser.parse_args(argv)


def format_table(report: dict) -> str:
    """The report of ``toolbox.analysis.speed_report`` as a readable table."""
    machine = report['machine']
    where = machine.get('gpu') if report['device'].startswith('cuda') else machine.get('cpu')
    layout = (', channels-last' if report['channels_last'] else '') + \
        (', BatchNorms folded' if report['fuse_conv_bn'] else '')
    rows = [
        ('config', report['config']),
        ('machine', f"{where or report['device']}, threads: {report['threads']}"),
        ('mode', f"{report['mode']} on {report['device']}, {report['precision']}{layout}"),
        ('input', f"batch {report['batch']} x {tuple(report['shape'])}"),
        ('calls', f"{report['iters']} timed after {report['warmup']} warm-up"),
        ('median', f"{report['median_s'] * 1e3:.2f} ms"),
        ('p10 / p90', f"{report['p10_s'] * 1e3:.2f} / {report['p90_s'] * 1e3:.2f} ms"),
        ('images/s', f"{report['images_per_s']:.2f}"),
        ('FLOPs / call', f"{report['flops'] / 1e9:.3f} GFLOP (2 per multiply-add)"),
        ('achieved', f"{report['achieved_gflops']:.1f} GFLOP/s"),
        ('fp32 GEMM peak', f"{report['gemm_peak_gflops']:.1f} GFLOP/s (measured, torch.mm)"),
        ('efficiency', f"{100 * report['efficiency']:.1f} % of the fp32 GEMM peak"),
    ]
    return '\n'.join(f'{name:<16}{value}' for name, value in rows)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from toolbox.analysis import DEFAULT_GEMM_SIZES, ShapeError, speed_report
    for name in ('batch', 'iters'):
        if getattr(args, name) < 1:
            sys.exit(f'--{name} must be >= 1, got {getattr(args, name)}')
    try:
        report = speed_report(args.config, args.checkpoint, args.shape, args.batch, args.iters,
                              args.warmup, args.amp, args.channels_last, args.threads,
                              args.mode, args.device, args.gemm_sizes or DEFAULT_GEMM_SIZES,
                              args.gemm_repeats, args.cfg_options, args.fuse_conv_bn)
    except ShapeError as err:
        sys.exit(str(err))
    except ValueError as err:  # fp16 without a GPU, threads < 1, warmup < 0
        sys.exit(f'{args.config}: {err}')
    print(format_table(report))
    if args.json:
        line = json.dumps(report, sort_keys=True)
        if args.json == '-':
            print(line)
        else:
            with open(args.json, 'a') as f:
                f.write(line + '\n')
    return report


if __name__ == '__main__':
    main()
