"""Check a config's datasets before training: ``python tools/check_dataset.py CONFIG``.

Runs the data pre-flight check (``toolbox.datasets.checks``: images open, decode and are not
too large; declared sizes, boxes and labels agree with the images; class maps match) on every
dataset of the chosen splits, and compares the model's heads' ``num_classes`` with each
dataset's classes. Prints every problem with its file and field; exits with 1 if there is one.

``python tools/check_dataset.py ANN.json [--img-root DIR]`` validates one COCO json instead
(``toolbox.datasets.coco_validation.validate_coco``): every structural problem of the file (missing
or mistyped fields, duplicate ids, unknown image or category ids, empty or outside boxes,
malformed segmentations) in one report, and with ``--img-root`` every image's existence,
readability and declared size.
"""
import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Check a config's datasets (every image and "
                                                 'annotation) before training.')
    parser.add_argument('config', help='config file path, or a COCO json to validate')
    parser.add_argument('--img-root', default=None,
                        help='COCO json only: the folder file_name is relative to; given, '
                             'every image is opened and its size compared')
    parser.add_argument('--splits', nargs='+', default=['train', 'val', 'test'],
                        choices=['train', 'val', 'test'], help='dataloaders to check')
    parser.add_argument('--no-decode', action='store_true',
                        help='read image headers only (fast; truncated files are not found)')
    parser.add_argument('--max-image-pixels', type=int, default=None,
                        help='refuse larger images (default: the dataset\'s data_check value)')
    parser.add_argument('--limit', type=int, default=200, help='problems printed per dataset')
    return parser.parse_args(argv)


def _without_check(dataset_cfg):
    """The dataset config with ``data_check=False`` on every leaf dataset (the tool collects
    the problems instead of stopping at the first dataset that has some); the leaves'
    ``data_check`` options are returned in build order."""
    options = []

    def walk(node):
        if isinstance(node, dict):
            if 'ann_file' in node or 'data_root' in node or 'data_prefix' in node:
                options.append(node.get('data_check', True))
                node['data_check'] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(dataset_cfg)
    return dataset_cfg, options


def _leaves(dataset):
    if hasattr(dataset, 'datasets'):
        return [leaf for part in dataset.datasets for leaf in _leaves(part)]
    if hasattr(dataset, 'dataset'):
        return _leaves(dataset.dataset)
    return [dataset]


def _head_classes(model_cfg):
    heads = {}
    for name in ('bbox_head', 'roi_head', 'decode_head', 'auxiliary_head'):
        head = model_cfg.get(name)
        for k, part in enumerate(head if isinstance(head, list) else [head]):
            if isinstance(part, dict) and part.get('num_classes') is not None:
                heads[f'model.{name}' + (f'[{k}]' if isinstance(head, list) else '')] = \
                    part['num_classes']
    return heads


def check_coco_file(args) -> int:
    """Validate one COCO json (module docstring); prints the report, returns the exit code."""
    from toolbox.datasets.coco_validation import validate_coco
    problems = validate_coco(args.config, args.img_root, decode=not args.no_decode)
    for problem in problems[:args.limit]:
        print(f'  {problem}')
    if len(problems) > args.limit:
        print(f'  ... and {len(problems) - args.limit} more')
    print(f'{args.config}: {len(problems)} problem(s)')
    return 1 if problems else 0


def main(argv=None):
    args = parse_args(argv)
    if args.config.endswith('.json'):
        return check_coco_file(args)
    import copy

    import toolbox  # noqa: F401  (registers the core)
    from toolbox.datasets.checks import check_samples, resolve_data_check
    from toolbox.engine import load_config
    from toolbox.plugins import load_plugins
    from toolbox.registry import DATASETS
    from mmengine.registry import init_default_scope

    load_plugins()
    cfg = load_config(args.config)
    init_default_scope('toolbox')
    heads = _head_classes(cfg.model)
    total = 0
    for split in args.splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        dataset_cfg, options = _without_check(copy.deepcopy(dict(loader['dataset'])))
        dataset = DATASETS.build(dataset_cfg)
        leaf_options = iter(options)
        for leaf in _leaves(dataset):
            option = next(leaf_options, True)
            if hasattr(leaf, 'full_init'):
                leaf.full_init()
            data_list = [leaf.get_data_info(i) for i in range(len(leaf))]  # after serialising
            check = resolve_data_check(option) or resolve_data_check(True)
            if args.no_decode:
                check['decode'] = False
            if args.max_image_pixels is not None:
                check['max_image_pixels'] = args.max_image_pixels
            classes = tuple(leaf.metainfo.get('classes') or ())
            name = f'{split}: {type(leaf).__name__}({getattr(leaf, "ann_file", "")})'
            problems = check_samples(data_list, name, len(classes), check,
                                     getattr(leaf, 'ignore_index', 255))
            for head, num_classes in heads.items():
                if classes and num_classes != len(classes):
                    print(f'{name}: {head}.num_classes is {num_classes} but the dataset has '
                          f'{len(classes)} classes {classes}')
                    total += 1
            print(f'{name}: {len(data_list)} images, {len(classes)} classes, '
                  f'{len(problems)} problem(s)')
            for problem in problems[:args.limit]:
                print(f'  {problem}')
            if len(problems) > args.limit:
                print(f'  ... and {len(problems) - args.limit} more')
            total += len(problems)
    print(f'{total} problem(s) in total')
    return 1 if total else 0


if __name__ == '__main__':
    sys.exit(main())
