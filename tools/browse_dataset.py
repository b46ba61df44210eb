"""Draw ground truth as the model sees it in training:
``python tools/browse_dataset.py CONFIG --out-dir DIR --num N``.

Each of the first ``--num`` samples of ``train_dataloader.dataset`` (or ``--split``) goes
through the dataset's pipeline (augmentation included: each run draws new random
augmentations unless ``--seed`` is given) and the model's data preprocessor (normalisation,
padding to ``pad_size_divisor``); the network input is then denormalised back to RGB uint8
(``x * std + mean``, channels as the preprocessor outputs them) and its ground truth is drawn on
it: boxes with class names, or the class map with a legend (padding drawn as the
preprocessor's ``seg_pad_value``, i.e. ignored, left uncoloured). Pictures are
``DIR/<index>_<image name>.png``; 3D volumes are refused (use ``tools/visualize_seg.py``).
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Draw ground truth on the augmented, denormalised network input.')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--out-dir', required=True, help='folder for the pictures (PNG)')
    parser.add_argument('--num', type=int, default=8, help='number of samples drawn')
    parser.add_argument('--split', choices=['train', 'val', 'test'], default='train',
                        help='which <split>_dataloader.dataset to draw (default: train)')
    parser.add_argument('--seed', type=int, default=None,
                        help='seed of the random augmentation (default: not seeded)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries')
    return parser.parse_args(argv)


def denormalise(inputs, preprocessor):
    """(C, H, W) float network input -> (H, W, 3) RGB uint8, undoing the preprocessor's
    ``(x - mean) / std``; a BGR input (``bgr_to_rgb=False``) is turned to RGB."""
    import torch
    image = inputs.detach().float().cpu()
    if getattr(preprocessor, '_enable_normalize', False):
        image = image * preprocessor.std.cpu() + preprocessor.mean.cpu()
    image = image.clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if image.shape[2] == 1:
        return image.repeat(3, axis=2)
    return image if getattr(preprocessor, '_channel_conversion', False) else image[..., ::-1]


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope

    import toolbox  # noqa: F401  (registers the core)
    from toolbox.engine import load_config
    from toolbox.plugins import load_plugins
    from toolbox.registry import DATASETS, MODELS
    from toolbox.visualization import DetSegVisualizer

    load_plugins()
    cfg = load_config(args.config, args.cfg_options)
    if args.seed is not None:
        import random
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
    with DefaultScope.overwrite_default_scope('toolbox'):
        dataset = DATASETS.build(cfg[f'{args.split}_dataloader']['dataset'])
        preprocessor = MODELS.build(cfg.model.data_preprocessor)
    visualizer = DetSegVisualizer(name='browse_dataset')
    visualizer.dataset_meta = dict(dataset.metainfo)
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for index in range(min(args.num, len(dataset))):
        item = dataset[index]
        if item['inputs'].dim() != 3:
            raise ValueError(f'{args.config}: sample {index} is a volume '
                             f'{tuple(item["inputs"].shape)}; browse_dataset draws 2D images '
                             f'(use tools/visualize_seg.py for volumes)')
        batch = preprocessor(pseudo_collate([item]), training=True)
        sample = batch['data_samples'][0]
        image = denormalise(batch['inputs'][0], preprocessor)
        name = osp.splitext(osp.basename(sample.metainfo.get('img_path') or 'image'))[0]
        out_file = osp.join(args.out_dir, f'{index:04d}_{name}.png')
        visualizer.add_datasample(name, image, sample, draw_pred=False, out_file=out_file)
        texts = visualizer.drawn_texts.get('gt', [])
        print(f'{out_file}: {image.shape[1]}x{image.shape[0]} input, {len(texts)} '
              f'ground-truth {"classes" if "gt_sem_seg" in sample else "boxes"}')
        written.append(out_file)
    return written


if __name__ == '__main__':
    main()
