"""Convert detection annotations to COCO json: Pascal VOC xml, labelme json or YOLO txt.

    python tools/dataset_converters/to_coco.py voc ROOT --out ann.json \
        [--split ImageSets/Main/train.txt] [--classes RBC WBC Platelets] [--difficult ignore]
    python tools/dataset_converters/to_coco.py labelme ANN_DIR --out ann.json [--img-root DIR]
    python tools/dataset_converters/to_coco.py yolo IMG_DIR --out ann.json \
        [--labels LABEL_DIR] [--classes-file classes.txt | data.yaml]

The conventions (category ids, file names, VOC's 1-based boxes, difficult objects, sizes read
from image headers) are those of ``toolbox.datasets.converters``. By default every problem
(missing image, unknown class, box outside its image, malformed line or field) is printed with
its file and line or field and nothing is written (exit status 1); ``--skip-invalid`` leaves
the offending annotations or images out and says how many. The result loads with
``CocoDataset(ann_file=OUT, data_prefix=dict(img=IMAGE_ROOT))``, IMAGE_ROOT being
``ROOT/JPEGImages`` (voc), ``--img-root`` (labelme) or IMG_DIR (yolo).
"""
import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Convert VOC xml, labelme json or YOLO txt '
                                                 'annotations to one COCO json.')
    sub = parser.add_subparsers(dest='format', required=True)
    voc = sub.add_parser('voc', help='Pascal VOC: ROOT/Annotations/*.xml, ROOT/JPEGImages')
    voc.add_argument('root', help='the VOC-style folder, e.g. data/VOCdevkit/VOC2007')
    voc.add_argument('--split', help='image-id list relative to ROOT (default: every xml)')
    voc.add_argument('--ann-dir', default='Annotations')
    voc.add_argument('--img-dir', default='JPEGImages')
    voc.add_argument('--difficult', choices=['ignore', 'keep', 'drop'], default='ignore',
                     help='ignore: iscrowd=1 (ignored in training and evaluation, like '
                          'VOCDataset); keep: ordinary boxes; drop: left out')
    labelme = sub.add_parser('labelme', help='labelme: one json per image in ANN_DIR')
    labelme.add_argument('ann_dir')
    labelme.add_argument('--img-root', help='file_name is relative to this (default ANN_DIR)')
    yolo = sub.add_parser('yolo', help='YOLO: IMG_DIR/*.jpg|png..., labels <stem>.txt')
    yolo.add_argument('img_dir')
    yolo.add_argument('--labels', help='folder of the .txt labels (default IMG_DIR)')
    for command in (voc, labelme, yolo):
        command.add_argument('--out', required=True, help='the COCO json to write')
        names = command.add_mutually_exclusive_group()
        names.add_argument('--classes', nargs='+', help='class names in category-id order '
                           '(default: voc/labelme sorted names found; yolo classes.txt)')
        names.add_argument('--classes-file', help='a file of class names, one per line, or a '
                           'yaml with names')
        command.add_argument('--skip-invalid', action='store_true',
                             help='leave out what has a problem (counted) instead of failing')
        command.add_argument('--box-tolerance', type=float, default=1.0,
                             help='pixels a box may reach beyond its image (default 1.0, the '
                                  'data check\'s)')
        command.add_argument('--limit', type=int, default=200, help='problems printed')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from toolbox.datasets.converters import (ConversionError, labelme_to_coco, voc_to_coco,
                                             write_coco, yolo_to_coco)
    options = dict(classes=args.classes or args.classes_file, skip_invalid=args.skip_invalid,
                   box_tolerance=args.box_tolerance)
    try:
        if args.format == 'voc':
            result = voc_to_coco(args.root, args.split, ann_dir=args.ann_dir,
                                 img_dir=args.img_dir, difficult=args.difficult, **options)
        elif args.format == 'labelme':
            result = labelme_to_coco(args.ann_dir, args.img_root, **options)
        else:
            result = yolo_to_coco(args.img_dir, args.labels, **options)
    except ConversionError as exc:
        for problem in exc.problems[:args.limit]:
            print(f'  {problem}')
        if len(exc.problems) > args.limit:
            print(f'  ... and {len(exc.problems) - args.limit} more')
        print(f'{len(exc.problems)} problem(s); nothing written. Fix them, or pass '
              f'--skip-invalid to leave them out (counted).')
        return 1
    for problem in result.problems[:args.limit]:
        print(f'  skipped: {problem}')
    write_coco(result.coco, args.out)
    print(f'{args.out}: {result.summary()}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
