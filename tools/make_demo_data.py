"""Generate the embedded demo dataset (deterministic, no download):
``python tools/make_demo_data.py [--root data/demo]``."""
import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(description='Write the demo shapes dataset (COCO + VOC).')
    parser.add_argument('--root', default='data/demo', help='output folder')
    parser.add_argument('--num-train', type=int, default=240)
    parser.add_argument('--num-val', type=int, default=60)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    from toolbox.datasets import make_demo_dataset
    root = make_demo_dataset(args.root, args.num_train, args.num_val, seed=args.seed)
    print(f'demo dataset ready under {root}')


if __name__ == '__main__':
    main()
