"""Draw a checkpoint's predictions on images:
``python tools/demo.py IMAGES... --config CONFIG --checkpoint CKPT --out-dir DIR``.

IMAGES are image files or folders (their ``.jpg``, ``.jpeg``, ``.png``, ``.bmp`` files).
Each picture ``DIR/<image name>.png`` shows the detections (boxes with class names and scores
of at least ``--score-thr``) or the segmentation (the class map blended over the image, with a
legend of the classes present), drawn by :class:`toolbox.visualization.DetSegVisualizer`
(mmengine's ``Visualizer``, headless). Class names come from the checkpoint's
``meta.dataset_meta`` (saved by the Runner), else from the config's test dataset. Images go
through the config's test pipeline in batches of ``--batch-size`` (:func:`toolbox.apis.inference`).
The checkpoint is loaded with ``weights_only=True``.
"""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Draw a checkpoint's predictions on images.")
    parser.add_argument('images', nargs='+', help='image files or folders of images')
    parser.add_argument('--config', required=True, help='config file path')
    parser.add_argument('--checkpoint', required=True,
                        help='checkpoint file (weights are loaded weights_only)')
    parser.add_argument('--out-dir', required=True, help='folder for the pictures (PNG)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw detections scoring at least this')
    parser.add_argument('--batch-size', type=int, default=4, help='images per forward pass')
    parser.add_argument('--device', default='cpu', help="torch device, e.g. 'cpu', 'cuda:0'")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries')
    return parser.parse_args(argv)


def image_files(paths) -> list:
    """The files named, and the image files (sorted) of the folders named."""
    files = []
    for path in paths:
        if osp.isdir(path):
            found = sorted(osp.join(path, name) for name in os.listdir(path)
                           if name.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise FileNotFoundError(f'folder {path!r} has no {"/".join(IMAGE_SUFFIXES)} '
                                        f'images')
            files += found
        elif osp.isfile(path):
            files.append(path)
        else:
            raise FileNotFoundError(f'image {path!r} does not exist')
    return files


def main(argv=None):
    args = parse_args(argv)
    from toolbox.apis import inference, init_model
    from toolbox.engine import load_config
    from toolbox.visualization import DetSegVisualizer, read_rgb

    files = image_files(args.images)
    model = init_model(load_config(args.config, args.cfg_options), args.checkpoint,
                       device=args.device)
    visualizer = DetSegVisualizer(name='demo', score_thr=args.score_thr)
    visualizer.dataset_meta = model.dataset_meta
    os.makedirs(args.out_dir, exist_ok=True)
    written = []
    for start in range(0, len(files), args.batch_size):
        batch = files[start:start + args.batch_size]
        for path, sample in zip(batch, inference(model, batch)):
            out_file = osp.join(args.out_dir, osp.splitext(osp.basename(path))[0] + '.png')
            visualizer.add_datasample(osp.basename(path), read_rgb(path), sample,
                                      draw_gt=False, out_file=out_file)
            texts = visualizer.drawn_texts.get('pred', [])
            what = 'classes' if 'pred_sem_seg' in sample else 'detections'
            print(f'{out_file}: {len(texts)} {what}'
                  + (f' ({", ".join(texts[:6])}{", ..." if len(texts) > 6 else ""})'
                     if texts else ''))
            written.append(out_file)
    return written


if __name__ == '__main__':
    main()
