"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [options]``.

``--format-only`` writes a COCO result json (e.g. for test-dev) instead of evaluating.
``--out FILE.pkl`` also pickles every test sample with its predictions (mmengine's
``DumpResults`` metric; boxes in the original image frame): what
``tools/analysis/fuse_results.py`` fuses across models.
``--save-nifti DIR`` writes each volume prediction as ``DIR/<case>.nii.gz`` (labels in the
original voxel grid, with the input file's affine; ``SaveNiftiHook``).
The checkpoint is loaded with ``weights_only=True``. ``--fuse-conv-bn`` then folds each
BatchNorm into the convolution before it (``FuseConvBNHook``); ``--amp bf16`` evaluates under
bf16 autocast (channels-last on a CPU; ``toolbox/engine/precision.py``).

``--tta`` evaluates with test-time augmentation: the config's ``tta_model`` wraps its model
(``model = dict(**tta_model, module=model)``, e.g. ``DetTTAModel`` / ``SegTTAModel`` of
``toolbox/models/tta.py``) and ``tta_pipeline`` (mmcv's ``TestTimeAug`` over scales and flips)
replaces the test dataloader's pipeline. ``configs/_base_/datasets/voc_bccd.py`` and
``camvid.py`` define both.

Pictures and analysis (written next to the evaluation, in the same run):

* ``--show-dir DIR`` draws every test image's prediction next to its ground truth into
  ``DIR/<image name>.png`` (boxes with class names and scores >= ``--show-score-thr``, or the
  class map over the image; ``PredictionVisualizationHook``). ``--show-num N`` draws only the
  first N.
* ``--confusion-matrix`` writes ``<work dir>/confusion_matrix.png`` and ``.json``: for a
  detector the (C + 1) x (C + 1) matrix with a background row/column (detections scoring >=
  ``--analysis-score-thr`` matched to ground truth at IoU >= ``--analysis-iou-thr``, the rule
  of mmdet's analysis tool), for a segmentor the C x C pixel matrix; rows are ground truth.
* ``--pr-curves`` writes ``<work dir>/pr_curves.png``: per-class precision-recall curves of
  the VOC matching at ``--analysis-iou-thr`` (detectors), their AP in the legend.

Both analyses are a metric added to the test evaluator (``PredictionAnalysisMetric``,
``toolbox/evaluation/analysis.py``), so they need no results file and work under DDP. The work
dir is ``--work-dir``, else the config's ``work_dir``, else ``work_dirs/<config name>``.
"""
import argparse
import copy
import os.path as osp

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
    parser.add_argument('--out', metavar='FILE.pkl', default=None,
                        help='also pickle the test samples with their predictions '
                             '(for tools/analysis/fuse_results.py)')
    parser.add_argument('--save-nifti', metavar='DIR', default=None,
                        help='write each volume prediction as DIR/<case>.nii.gz with the '
                             "input's affine (3D segmentation)")
    parser.add_argument('--show-dir', default=None,
                        help='draw predictions (and ground truth) of the test images into '
                             'DIR/<image name>.png')
    parser.add_argument('--show-score-thr', type=float, default=0.3,
                        help='with --show-dir: draw detections scoring at least this')
    parser.add_argument('--show-num', type=int, default=None,
                        help='with --show-dir: draw only the first N images (default: all)')
    parser.add_argument('--confusion-matrix', action='store_true',
                        help='write confusion_matrix.png/.json into the work dir')
    parser.add_argument('--pr-curves', action='store_true',
                        help='write per-class precision-recall curves (pr_curves.png) into '
                             'the work dir (detectors)')
    parser.add_argument('--analysis-score-thr', type=float, default=0.3,
                        help='detections below this score are left out of the confusion matrix')
    parser.add_argument('--analysis-iou-thr', type=float, default=0.5,
                        help='IoU of a match for the confusion matrix and the PR curves')
    parser.add_argument('--tta', action='store_true',
                        help="test-time augmentation: the config's tta_model wraps the model "
                             'and tta_pipeline replaces the test pipeline')
    parser.add_argument('--amp', nargs='?', const='amp', choices=['amp', 'bf16', 'fp16'],
                        help='evaluate under autocast (sets the config key precision): without '
                             'a value fp16 on a GPU, bf16 on a CPU with bf16 units (a CPU '
                             'without them says so and runs fp32); toolbox/engine/precision.py')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='fold each BatchNorm into the convolution before it once the '
                             'checkpoint is loaded (same outputs to float rounding, faster; '
                             'sets the config key fuse_conv_bn)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. test_dataloader.batch_size=2')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def use_tta(cfg, config_path: str):
    """Switch ``cfg`` to test-time augmentation (mmengine / MMDetection convention): the model
    becomes ``dict(**cfg.tta_model, module=cfg.model)`` and the test dataset's pipeline (the
    innermost dataset of a wrapper) becomes ``cfg.tta_pipeline``; the validation dataloader
    is left as it is. Raises ``ConfigError`` naming ``config_path`` when either key is
    missing. Returns ``cfg``."""
    from toolbox.engine.setup import ConfigError
    missing = [key for key in ('tta_model', 'tta_pipeline') if not cfg.get(key)]
    if missing:
        raise ConfigError(f"{config_path}: --tta needs {' and '.join(missing)} in the config "
                          f"(tta_model=dict(type='DetTTAModel' or 'SegTTAModel', ...), "
                          f"tta_pipeline=[..., dict(type='TestTimeAug', transforms=[...])]); "
                          f'see configs/_base_/datasets/voc_bccd.py or camvid.py')
    cfg.model = dict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader = copy.deepcopy(cfg.test_dataloader)  # may be val_dataloader itself
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    dataset.pipeline = copy.deepcopy(cfg.tta_pipeline)
    return cfg


def add_test_metric(cfg, metric: dict):
    """Append ``metric`` to ``cfg.test_evaluator`` (one config or a list of them)."""
    evaluators = cfg.test_evaluator
    cfg.test_evaluator = (list(evaluators) if isinstance(evaluators, list)
                          else [evaluators]) + [metric]


def main(argv=None):
    args = parse_args(argv)
    from toolbox.engine import (build_runner, check_data_paths, close_distributed,
                                init_distributed, load_config)
    cfg = load_config(args.config, args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    cfg.load_from = args.checkpoint
    cfg.resume = False
    if args.amp:
        cfg.precision = args.amp
    if args.fuse_conv_bn:
        cfg.fuse_conv_bn = True
    if args.tta:
        use_tta(cfg, args.config)
    if args.format_only:
        evaluators = cfg.test_evaluator
        for evaluator in evaluators if isinstance(evaluators, list) else [evaluators]:
            evaluator.format_only = True
            if args.outfile_prefix:
                evaluator.outfile_prefix = args.outfile_prefix
            elif not evaluator.get('outfile_prefix'):
                raise ValueError('--format-only needs --outfile-prefix (or '
                                 'test_evaluator.outfile_prefix in the config)')
    if args.out:
        add_test_metric(cfg, dict(type='DumpResults', out_file_path=args.out))
    if args.save_nifti:
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='SaveNiftiHook', out_dir=args.save_nifti)]
    if args.show_dir:
        cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
            dict(type='PredictionVisualizationHook', num_images=args.show_num,
                 score_thr=args.show_score_thr, out_dir=args.show_dir)]
    if args.confusion_matrix or args.pr_curves:
        if cfg.get('work_dir') is None:  # the default build_runner would give it
            cfg.work_dir = osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0])
        add_test_metric(cfg, dict(
            type='PredictionAnalysisMetric', out_dir=cfg.work_dir,
            confusion=args.confusion_matrix, pr_curves=args.pr_curves,
            score_thr=args.analysis_score_thr, iou_thr=args.analysis_iou_thr))
    check_data_paths(cfg, ('test',))
    init_distributed(cfg, args.launcher)
    runner = build_runner(cfg)
    metrics = runner.test()
    close_distributed()  # after success only: a failed rank must not wait in a barrier
    return metrics


if __name__ == '__main__':
    from toolbox.engine import DataPathError
    from toolbox.engine.setup import ConfigError
    try:
        main()
    except (DataPathError, ConfigError) as exc:  # the message names the file: it is enough
        raise SystemExit(f'error: {exc}') from None
