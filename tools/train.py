"""Train a model from a config: ``python tools/train.py CONFIG [options]``.

Thin on purpose: config -> overrides -> data paths checked -> Runner (see
``toolbox.engine.setup``). A missing dataset stops here, before the Runner's log head, with the
config key, the resolved path and where docs/datasets.md says to get it. The console shows a
short head; the environment report and the full config go to the log file
(``<work_dir>/<timestamp>/<timestamp>.log``).
"""
import argparse
import os.path as osp

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector or segmentor.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints '
                        '(default: work_dirs/<config name>)')
    parser.add_argument('--resume', nargs='?', const='auto', default=None,
                        help="resume training: without a value, from the checkpoint named by "
                             "the work dir's last_checkpoint, or, when that is missing, empty or "
                             'broken, the newest loadable checkpoint there (with a warning); or '
                             'give a checkpoint path. Loaded with weights_only=True')
    parser.add_argument('--load-from', help='initialise from a weights file '
                        '(loaded with weights_only=True)')
    parser.add_argument('--amp', nargs='?', const='amp', choices=['amp', 'bf16', 'fp16'],
                        help='mixed precision (sets the config key precision): without a value '
                             'fp16 on a GPU and bf16 on a CPU with bf16 units (a CPU without '
                             'them says so and trains in fp32); see toolbox/engine/precision.py')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate linearly with the total batch size '
                             '(processes x train_dataloader.batch_size) over the '
                             "config's auto_scale_lr.base_batch_size, the batch its LR was set for")
    parser.add_argument('--seed', type=int, default=None, help='random seed')
    parser.add_argument('--deterministic', action='store_true',
                        help='deterministic cuDNN / torch algorithms')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. train_cfg.max_epochs=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher for distributed training')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from toolbox.engine import (build_runner, check_data_paths, close_distributed,
                                init_distributed, load_config)
    cfg = load_config(args.config, args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    if args.load_from:
        cfg.load_from = args.load_from
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume checkpoint {args.resume!r} does not exist')
        cfg.resume, cfg.load_from = True, args.resume
    if args.amp:
        cfg.precision = args.amp
    if args.auto_scale_lr:
        if not (cfg.get('auto_scale_lr') or {}).get('base_batch_size'):
            raise SystemExit(f'error: --auto-scale-lr: {args.config} sets no '
                             'auto_scale_lr.base_batch_size (the total batch size its learning '
                             'rate was set for), e.g. auto_scale_lr = dict(base_batch_size=16)')
        cfg.auto_scale_lr.enable = True
    if args.seed is not None or args.deterministic:
        randomness = dict(cfg.get('randomness', {}))
        if args.seed is not None:
            randomness['seed'] = args.seed
        randomness['deterministic'] = args.deterministic
        cfg.randomness = randomness
    check_data_paths(cfg, ('train', 'val'))
    init_distributed(cfg, args.launcher)
    runner = build_runner(cfg)
    runner.train()
    close_distributed()  # after success only: a failed rank must not wait in a barrier


if __name__ == '__main__':
    from toolbox.engine import DataPathError
    try:
        main()
    except DataPathError as exc:  # a dataset is not where the config says: the message is enough
        raise SystemExit(f'error: {exc}') from None
