"""Export a model to ONNX and check the file against PyTorch with onnxruntime.

    python tools/export.py CONFIG CHECKPOINT --out model.onnx [--shape H W] [--dynamic-batch]

Exported: single-stage detectors with their post-processing inside the graph (RetinaNet,
RefineDet: decoding, score threshold, class-aware NMS) and 2D segmentors (logits and argmax
map at the input size); two-stage and DETR detectors and 3D segmentors are refused with a
message. The graph takes ``images`` (B, 3, H, W) float, pixel values 0..255 in the channel order
the config's pipeline loads (BGR), already resized to (H, W), and does the normalisation
itself; detections come padded to ``max_per_img`` with a count (``boxes``, ``scores``,
``labels``, ``num_dets``), boxes ``xyxy`` in the (H, W) frame. See ``toolbox/export``.

``--shape`` defaults to the test pipeline's ``Resize`` scale, else the size of its first test
image. The check runs onnxruntime and the model's own test path on the first test image(s)
of the config (random pixels when the data is absent) and exits with status 1 and the
differences when they disagree beyond ``--score-atol`` / ``--box-atol``. CHECKPOINT ``none``
exports randomly initialised weights (for trying the tool).
"""
import argparse
import sys
from pathlib import Path

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export a model to ONNX and verify it.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help="checkpoint file (loaded weights_only), or 'none'")
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input image size (default: the test pipeline Resize scale)')
    parser.add_argument('--dynamic-batch', action='store_true',
                        help='symbolic batch size (verified at batch 2)')
    parser.add_argument('--opset', type=int, default=None, help='ONNX opset (default 17)')
    parser.add_argument('--score-atol', type=float, default=None,
                        help='tolerance of scores / logits (default 1e-4)')
    parser.add_argument('--box-atol', type=float, default=None,
                        help='tolerance of box coordinates in pixels (default 1e-3)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. '
                             'model.bbox_head.test_cfg.score_thr=0.3')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from toolbox.apis import init_model
    from toolbox.engine import load_config
    from toolbox.export import (BOX_ATOL, DEFAULT_OPSET, SCORE_ATOL, ExportMismatchError,
                                UnsupportedModelError, check_report, compare_outputs,
                                default_image_size, export_onnx, onnx_session, run_onnx,
                                sample_images, torch_outputs)
    cfg = load_config(args.config, args.cfg_options)
    checkpoint = None if args.checkpoint.lower() == 'none' else args.checkpoint
    model = init_model(cfg, checkpoint)
    batch = 2 if args.dynamic_batch else 1
    shape = tuple(args.shape) if args.shape else default_image_size(cfg)
    if shape is None:
        sys.exit(f'{args.config}: the test pipeline does not resize to a fixed scale and there '
                 f'is no test image to take the size from; pass --shape H W')
    try:
        export_onnx(model, args.out, shape, dynamic_batch=args.dynamic_batch,
                    opset=args.opset or DEFAULT_OPSET)
    except UnsupportedModelError as err:
        sys.exit(f'{args.config}: {err}')
    size_mb = Path(args.out).stat().st_size / 2 ** 20
    batch_dim = 'batch' if args.dynamic_batch else 1
    print(f'wrote {args.out} ({size_mb:.1f} MiB): input images ({batch_dim}, 3, {shape[0]}, '
          f'{shape[1]}) float')
    images, source = sample_images(cfg, shape, batch=batch)
    print(f'checking with onnxruntime on {source}')
    report = compare_outputs(run_onnx(onnx_session(args.out), images),
                             torch_outputs(model, images))
    for key, value in report.items():
        print(f'  {key}: {value}')
    try:
        check_report(report, args.score_atol if args.score_atol is not None else SCORE_ATOL,
                     args.box_atol if args.box_atol is not None else BOX_ATOL)
    except ExportMismatchError as err:
        sys.exit(f'FAILED: {err}')
    print('onnxruntime and PyTorch agree')
    return report


if __name__ == '__main__':
    main()
