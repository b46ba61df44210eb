"""Draw segmentation predictions next to the ground truth:
``python tools/visualize_seg.py CONFIG CHECKPOINT --out preds.png --num 4``.

Each row shows one image of the evaluation split, its ground truth and the prediction of the
checkpoint, coloured with the dataset's palette (ignored pixels black), with the per-image
pixel accuracy and mIoU over the classes present in either map. For volumes (3D segmentors)
each row is the slice along the first axis with the most ground-truth foreground: the network
input (channel 0, after the pipeline's intensity scaling), the ground truth and the prediction,
titled with the case's Dice per foreground class. The checkpoint is loaded with
``weights_only=True``.
"""
import argparse

from mmengine.config import DictAction

from toolbox.structures import IGNORE_INDEX


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw segmentation predictions next to the ground truth.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file (weights are loaded weights_only)')
    parser.add_argument('--out', default='seg_predictions.png', help='output PNG path')
    parser.add_argument('--num', type=int, default=4, help='number of images (rows)')
    parser.add_argument('--indices', type=int, nargs='+', default=None,
                        help='dataset indices to draw (default: --num indices evenly spaced)')
    parser.add_argument('--split', choices=['val', 'test', 'train'], default='val',
                        help='which <split>_dataloader.dataset of the config to draw from '
                             '(train uses its pipeline, augmentation included)')
    parser.add_argument('--device', default='cpu', help="torch device, e.g. 'cpu', 'cuda:0'")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries')
    return parser.parse_args(argv)


def colorize(seg, palette, ignore_index=IGNORE_INDEX):
    """(H, W) int labels -> (H, W, 3) uint8 RGB; ignored / unknown labels are black."""
    import numpy as np
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:len(palette)] = np.asarray(palette, dtype=np.uint8)
    seg = np.where((seg >= 0) & (seg < len(palette)) & (seg != ignore_index), seg, 255)
    return lut[seg.astype(np.int64)]


def main(argv=None):
    args = parse_args(argv)
    import cv2
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from matplotlib.patches import Patch
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope

    import toolbox  # noqa: F401  (registers the core)
    from toolbox.engine import load_config
    from toolbox.engine.weights import load_weights
    from toolbox.evaluation.dice_metric import dice_counts, dice_from_counts
    from toolbox.evaluation.seg_metric import confusion_matrix, metrics_from_confusion
    from toolbox.plugins import load_plugins
    from toolbox.registry import DATASETS, MODELS

    load_plugins()
    cfg = load_config(args.config, args.cfg_options)
    with DefaultScope.overwrite_default_scope('toolbox'):
        model = MODELS.build(cfg.model)
        dataset = DATASETS.build(cfg[f'{args.split}_dataloader']['dataset'])
    load_weights(model, args.checkpoint)
    model.to(args.device).eval()

    classes = dataset.metainfo['classes']
    palette = dataset.metainfo.get('palette') or \
        [list(c) for c in (plt.cm.tab20(np.arange(len(classes)) % 20)[:, :3] * 255)]
    indices = args.indices if args.indices else \
        np.linspace(0, len(dataset) - 1, args.num).round().astype(int).tolist()

    fig, axes = plt.subplots(len(indices), 3, figsize=(12, 3.2 * len(indices)), squeeze=False)
    for row, idx in enumerate(indices):
        item = dataset[idx]
        with torch.no_grad():
            sample = model.test_step(pseudo_collate([item]))[0]
        if 'pred_sem_seg' not in sample:
            raise SystemExit(
                f'{args.config}: {type(model).__name__} predicts no segmentation map '
                f'(its samples carry {sorted(k for k in sample.keys() if k.startswith("pred"))}'
                f'); visualize_seg.py draws segmentors. For detections use '
                f'`python tools/demo.py IMAGES --config {args.config} --checkpoint '
                f'{args.checkpoint} --out-dir DIR` or `python tools/test.py {args.config} '
                f'{args.checkpoint} --show-dir DIR`')
        pred = sample.pred_sem_seg.data[0].cpu()
        name = sample.img_path.rsplit('/', 1)[-1]
        if pred.dim() == 3:  # a volume (D, H, W) in its original frame
            gt = sample.gt_sem_seg.data[0].cpu()  # padded with the batch: crop to the volume
            gt = gt[:pred.shape[0], :pred.shape[1], :pred.shape[2]]
            dice = dice_from_counts(dice_counts(pred, gt, len(classes))[None].numpy())[0]
            foreground = ((gt > 0) & (gt != IGNORE_INDEX)).flatten(1).sum(1)
            z = int(foreground.argmax())
            image = item['inputs'][0, z].float().numpy()
            image = (image - image.min()) / max(float(image.max() - image.min()), 1e-6)
            scores = ', '.join(f'{c} {d:.3f}' for c, d in zip(classes[1:], dice[1:]))
            panels = [(image, f'{name} slice {z}'), (colorize(gt[z].numpy(), palette),
                                                     'ground truth'),
                      (colorize(pred[z].numpy(), palette), f'prediction (Dice {scores})')]
        else:
            gt = sample.gt_sem_seg.data[0][:pred.shape[0], :pred.shape[1]].cpu()
            matrix = confusion_matrix(pred, gt, len(classes)).numpy()
            scores = metrics_from_confusion(matrix)
            image = cv2.cvtColor(cv2.imread(sample.img_path), cv2.COLOR_BGR2RGB)
            panels = [(image, name), (colorize(gt.numpy(), palette), 'ground truth'),
                      (colorize(pred.numpy(), palette),
                       f"prediction (pixel acc {scores['aAcc']:.1f}, mIoU {scores['mIoU']:.1f})")]
        for ax, (panel, title) in zip(axes[row], panels):
            ax.imshow(panel, cmap='gray' if panel.ndim == 2 else None)
            ax.set_title(title, fontsize=9)
            ax.axis('off')
    handles = [Patch(color=np.asarray(c) / 255, label=name) for name, c in zip(classes, palette)]
    fig.legend(handles=handles, loc='lower center', ncol=min(len(classes), 6), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(args.out, dpi=100)
    print(f'wrote {args.out} ({len(indices)} images: {indices})')


if __name__ == '__main__':
    main()
