"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [options]``.

``--format-only`` writes a COCO result json (e.g. for test-dev) instead of evaluating.
``--save-nifti DIR`` writes each volume prediction as ``DIR/<case>.nii.gz`` (labels in the
original voxel grid, with the input file's affine; ``SaveNiftiHook``).
The checkpoint is loaded with ``weights_only=True``.
"""
import argparse

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a checkpoint.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (weights are loaded weights_only)')
    parser.add_argument('--work-dir', help='directory for the evaluation log')
    parser.add_argument('--format-only', action='store_true',
                        help='write results in the COCO submission format without evaluating')
    parser.add_argument('--outfile-prefix', default=None,
                        help='prefix of the result json for --format-only '
                             '(writes <prefix>.bbox.json)')
    parser.add_argument('--save-nifti', metavar='DIR', default=None,
                        help='write each volume prediction as DIR/<case>.nii.gz with the '
                             "input's affine (3D segmentation)")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. test_dataloader.batch_size=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from toolbox.engine import build_runner, close_distributed, init_distributed, load_config
    cfg = load_config(args.config, args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.format_only:
        evaluators = cfg.test_evaluator
        for evaluator in evaluators if isinstance(evaluators, list) else [evaluators]:
            evaluator.format_only = True
            if args.outfile_prefix:
                evaluator.outfile_prefix = args.outfile_prefix
            elif not evaluator.get('outfile_prefix'):
                raise ValueError('--format-only needs --outfile-prefix (or '
                                 'test_evaluator.outfile_prefix in the config)')
    if args.save_nifti:
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='SaveNiftiHook', out_dir=args.save_nifti)]
    init_distributed(cfg, args.launcher)
    runner = build_runner(cfg)
    metrics = runner.test()
    close_distributed()  # after success only: a failed rank must not wait in a barrier
    return metrics


if __name__ == '__main__':
    main()
