"""Data checked before training (toolbox.datasets.checks, docs/reliability.md): every malformed
dataset gives a named error or a counted warning, never a raw traceback or a silent pass."""
import copy
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from toolbox.datasets import AnnotationError, CocoDataset, VOCDataset
from toolbox.datasets.checks import DataCheckError, check_samples, resolve_data_check
from toolbox.engine import build_runner, load_config
from toolbox.engine.setup import ConfigError

from .conftest import REPO_ROOT


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv('TOOLBOX_CACHE_DIR', str(tmp_path / 'cache'))


def _image(path, width, height, seed=0):
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _valid_coco(root):
    """Three real 40x30 JPEGs and a consistent COCO json (returned as a dict)."""
    (root / 'img').mkdir(exist_ok=True)
    for k in range(3):
        _image(root / 'img' / f'{k}.jpg', 40, 30, k)
    return dict(
        images=[dict(id=k, file_name=f'{k}.jpg', width=40, height=30) for k in range(3)],
        annotations=[dict(id=10 * k + j, image_id=k, bbox=[2 + j, 3, 10, 8],
                          category_id=1 + j % 2, iscrowd=0) for k in range(3) for j in range(2)],
        categories=[dict(id=1, name='a'), dict(id=2, name='b')])


def _build(root, coco=None, raw=None, **kwargs):
    ann = root / 'ann.json'
    ann.write_text(raw if raw is not None else json.dumps(coco))
    return CocoDataset(ann_file=str(ann), data_prefix=dict(img=str(root / 'img') + '/'),
                       pipeline=[], **kwargs)


def test_a_valid_dataset_passes_and_the_probe_is_cached(tmp_path):
    ds = _build(tmp_path, _valid_coco(tmp_path))
    assert len(ds) == 3 and not getattr(ds, 'data_check_problems', None)
    cache_files = list((tmp_path / 'cache' / 'data_check').glob('*.json'))
    assert len(cache_files) == 1 and len(json.loads(cache_files[0].read_text())) == 3


def test_declared_size_boxes_and_truncated_images_are_named(tmp_path):
    coco = _valid_coco(tmp_path)
    coco['images'][1]['width'] = 1000  # declared 1000x30, the image is 40x30
    coco['annotations'][2]['bbox'] = [30, 20, 50, 50]  # image 1: ends at (80, 70) > (40, 30)
    data = (tmp_path / 'img' / '0.jpg').read_bytes()
    (tmp_path / 'img' / '0.jpg').write_bytes(data[: len(data) // 2])  # truncated JPEG
    with pytest.raises(DataCheckError) as info:
        _build(tmp_path, coco)
    problems = {(p.field, p.file.rsplit('/', 1)[-1]) for p in info.value.problems}
    assert problems == {('image', '0.jpg'), ('images[1].width/height', 'ann.json'),
                        ('annotations[2].bbox', 'ann.json')}
    message = str(info.value)
    assert 'truncated or corrupt' in message and 'declares 1000x30' in message
    assert 'lies outside the 40x30 image' in message
    # on_error='skip': the two images are left out and counted
    ds = _build(tmp_path, coco, data_check=dict(on_error='skip'))
    assert len(ds) == 1 and len(ds.data_check_problems) == 3
    assert ds.get_data_info(0)['img_path'].endswith('2.jpg')
    # ... but a dataset with no image left is an error
    coco['images'][2]['width'] = 1
    with pytest.raises(DataCheckError, match='no image is left'):
        _build(tmp_path, coco, data_check=dict(on_error='skip'))


def test_too_large_images_are_refused_with_their_name(tmp_path):
    coco = _valid_coco(tmp_path)
    with pytest.raises(DataCheckError, match=r'2\.jpg: image: 40x30 = 1200 pixels is over '
                                             r'max_image_pixels 1000'):
        _build(tmp_path, coco, data_check=dict(max_image_pixels=1000))


def test_data_check_options_are_validated():
    assert resolve_data_check(False) is None
    assert resolve_data_check(dict(decode=False))['decode'] is False
    with pytest.raises(TypeError, match='unknown keys'):
        resolve_data_check(dict(decod=False))
    with pytest.raises(ValueError, match='on_error'):
        resolve_data_check(dict(on_error='ignore'))


def test_segmentation_maps_are_checked(tmp_path):
    _image(tmp_path / 'a.jpg', 8, 6)
    cv2.imwrite(str(tmp_path / 'a.png'), np.full((6, 8), 7, np.uint8))
    cv2.imwrite(str(tmp_path / 'b.png'), np.zeros((5, 8), np.uint8))
    samples = [dict(img_path=str(tmp_path / 'a.jpg'), seg_map_path=str(tmp_path / 'a.png')),
               dict(img_path=str(tmp_path / 'a.jpg'), seg_map_path=str(tmp_path / 'b.png'),
                    label_map={7: 255})]
    problems = check_samples(samples, 'seg', 3, resolve_data_check(True))
    assert [p.message for p in problems] == [
        'values [7] are neither classes 0..2 nor ignore_index 255',
        f"is 8x5, the image {tmp_path / 'a.jpg'} is 8x6"]


# --- fuzzing: >= 200 malformed datasets --------------------------------------------------------

def _mutations():
    """(name, expected outcome, function(coco dict, root, rng) -> raw json text or None).

    Outcomes: 'error' = AnnotationError / DataCheckError naming the file; 'warning' = loads,
    with the skipped annotations counted in ``skip_counts``."""
    def set_(path, value):
        def apply(coco, root, rng):
            node = coco
            for key in path[:-1]:
                node = node[key(rng) if callable(key) else key]
            last = path[-1]
            node[last(rng) if callable(last) else last] = value(rng) if callable(value) \
                else value
        return apply

    def delete(path):
        def apply(coco, root, rng):
            node = coco
            for key in path[:-1]:
                node = node[key(rng) if callable(key) else key]
            del node[path[-1]]
        return apply

    def image_file(kind):
        def apply(coco, root, rng):
            path = root / 'img' / f'{rng.integers(3)}.jpg'
            if kind == 'missing':
                path.unlink()
            elif kind == 'empty':
                path.write_bytes(b'')
            elif kind == 'text':
                path.write_text('not an image')
            elif kind == 'truncated':
                data = path.read_bytes()
                path.write_bytes(data[: int(len(data) * rng.uniform(0.2, 0.8))])
        return apply

    img = lambda rng: int(rng.integers(3))  # noqa: E731
    ann = lambda rng: int(rng.integers(6))  # noqa: E731
    bad_numbers = [[1, 2, 3], ['1', 2, 3, 4], [1, 2, 3, None], [float('nan'), 1, 2, 3],
                   [1, 2, 3, 4, 5], 'box', None, {}, [True, 1, 2, 3]]
    bad_bbox = lambda rng: bad_numbers[int(rng.integers(len(bad_numbers)))]  # noqa: E731
    return [
        ('no images', 'error', delete(['images'])),
        ('images not a list', 'error', set_(['images'], {'a': 1})),
        ('image without file_name', 'error', delete(['images', img, 'file_name'])),
        ('image width a string', 'error', set_(['images', img, 'width'], '40')),
        ('image height negative', 'error', set_(['images', img, 'height'], -3)),
        ('image width fractional', 'error', set_(['images', img, 'width'], 40.5)),
        ('image id a list', 'error', set_(['images', img, 'id'], [1])),
        ('duplicate image id', 'error', set_(['images', 1, 'id'], 0)),
        ('bbox malformed', 'error', set_(['annotations', ann, 'bbox'], bad_bbox)),
        ('bbox missing', 'error', delete(['annotations', ann, 'bbox'])),
        ('unknown image_id', 'error', set_(['annotations', ann, 'image_id'], 99)),
        ('category_id a list', 'error', set_(['annotations', ann, 'category_id'], [1])),
        ('category_id missing', 'error', delete(['annotations', ann, 'category_id'])),
        ('annotation not a dict', 'error', set_(['annotations', ann], [1, 2])),
        ('annotations not a list', 'error', set_(['annotations'], {'0': 1})),
        ('no categories', 'error', delete(['categories'])),
        ('category id a string', 'error', set_(['categories', 0, 'id'], 'one')),
        ('category without name', 'error', delete(['categories', 1, 'name'])),
        ('not json', 'error', lambda coco, root, rng: '{"images": [' + 'x' * int(rng.integers(9))),
        ('json is a list', 'error', lambda coco, root, rng: '[1, 2]'),
        ('declared size wrong', 'error', set_(['images', img, 'height'],
                                              lambda rng: int(rng.integers(31, 2000)))),
        ('box outside the image', 'error', set_(['annotations', ann, 'bbox'],
                                                lambda rng: [35, 25, 10 + int(rng.integers(5, 50)),
                                                             10])),
        ('box left of the image', 'error', set_(['annotations', ann, 'bbox'],
                                                [-20, 2, 10, 5])),
        ('image missing', 'error', image_file('missing')),
        ('image empty', 'error', image_file('empty')),
        ('image is text', 'error', image_file('text')),
        ('image truncated', 'error', image_file('truncated')),
        ('unknown category', 'warning', set_(['annotations', ann, 'category_id'], 7)),
        ('degenerate box', 'warning', set_(['annotations', ann, 'bbox'],
                                           lambda rng: [1, 1, 0, float(rng.integers(5))])),
    ]


MUTATIONS = _mutations()


@pytest.mark.parametrize('seed', range(8))
def test_fuzz_malformed_coco_datasets_give_named_errors_or_counted_warnings(tmp_path, seed):
    """8 seeds x 29 mutation kinds = 232 malformed datasets."""
    for k, (name, outcome, mutate) in enumerate(MUTATIONS):
        rng = np.random.default_rng(seed * 1000 + k)
        root = tmp_path / f'{k}'
        root.mkdir()
        coco = copy.deepcopy(_valid_coco(root))
        raw = mutate(coco, root, rng)
        where = f'{name} (seed {seed})'
        try:
            ds = _build(root, coco, raw=raw)
        except (AnnotationError, DataCheckError) as exc:
            assert outcome == 'error', f'{where}: unexpected error {exc}'
            message = str(exc)
            assert 'ann.json' in message or '.jpg' in message, f'{where}: unnamed: {message}'
            continue
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f'{where}: raw {type(exc).__name__}: {exc}')
        assert outcome == 'warning', f'{where}: passed silently'
        assert sum(ds.skip_counts.values()) >= 1, f'{where}: not counted'


def test_fuzz_malformed_voc_annotations(tmp_path):
    _image(tmp_path / 'x.jpg', 40, 30)
    cases = {
        'not xml': ('<annotation><size>', 'cannot parse annotation'),
        'no size': ('<annotation></annotation>', 'size/width'),
        'width not a number': ('<annotation><size><width>w</width><height>3</height></size>'
                               '</annotation>', 'not a number'),
        'bndbox missing': ('<annotation><size><width>40</width><height>30</height></size>'
                           '<object><name>a</name></object></annotation>', 'bndbox'),
        'bndbox nan': ('<annotation><size><width>40</width><height>30</height></size><object>'
                       '<name>a</name><bndbox><xmin>nan</xmin><ymin>1</ymin><xmax>3</xmax>'
                       '<ymax>3</ymax></bndbox></object></annotation>', 'non-finite'),
        'declared size wrong': ('<annotation><size><width>400</width><height>30</height></size>'
                                '</annotation>', 'declares 400x30'),
        'box outside': ('<annotation><size><width>40</width><height>30</height></size><object>'
                        '<name>a</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>90</xmax>'
                        '<ymax>3</ymax></bndbox></object></annotation>', r'object\[0\]\.bbox'),
    }
    for name, (xml, expected) in cases.items():
        root = tmp_path / name.replace(' ', '_')
        (root / 'Annotations').mkdir(parents=True)
        (root / 'JPEGImages').mkdir()
        (root / 'JPEGImages' / 'x.jpg').write_bytes((tmp_path / 'x.jpg').read_bytes())
        (root / 'Annotations' / 'x.xml').write_text(xml)
        (root / 'list.txt').write_text('x\n')
        with pytest.raises((AnnotationError, DataCheckError), match=expected) as info:
            VOCDataset(data_root=str(root), ann_file='list.txt', pipeline=[],
                       data_prefix=dict(img='JPEGImages', ann='Annotations'),
                       metainfo=dict(classes=('a',)))
        assert 'x.xml' in str(info.value), name


def test_check_dataset_tool_reports_every_problem(tmp_path):
    coco = _valid_coco(tmp_path)
    coco['images'][2]['height'] = 31
    coco['annotations'][0]['bbox'] = [38, 2, 10, 5]
    ann = tmp_path / 'ann.json'
    ann.write_text(json.dumps(coco))
    config = tmp_path / 'cfg.py'
    config.write_text(
        "_base_ = ['" + str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py') + "']\n"
        f"train_dataloader = dict(dataset=dict(data_root='', ann_file='{ann}', "
        f"data_prefix=dict(img='{tmp_path / 'img'}/')))\n")
    out = subprocess.run([sys.executable, str(REPO_ROOT / 'tools/check_dataset.py'),
                          str(config), '--splits', 'train'], capture_output=True, text=True,
                         env={'TOOLBOX_CACHE_DIR': str(tmp_path / 'c'), 'PATH': ''})
    assert out.returncode == 1, out.stderr
    assert 'images[2].width/height: declares 40x31' in out.stdout
    assert 'annotations[0].bbox: box [38.0, 2.0, 48.0, 7.0]' in out.stdout
    assert 'model.bbox_head.num_classes is 3 but the dataset has 2 classes' in out.stdout
    assert '3 problem(s) in total' in out.stdout


def test_head_and_dataset_class_counts_must_agree(tmp_path, demo_root):
    cfg = load_config(str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py'))
    cfg.work_dir = str(tmp_path)
    cfg.train_dataloader.dataset.data_root = f'{demo_root}/coco/'
    cfg.model.bbox_head.num_classes = 2
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    with pytest.raises(ValueError, match=r'model.bbox_head.num_classes is 2 but the training '
                                         r'dataset CocoDataset has 3 classes'):
        build_runner(cfg).train()


def test_a_longer_or_shorter_run_from_cfg_options_stretches_the_schedule():
    """12-epoch config: cosine ``T_max=12, end=12`` after a 100-iteration warm-up (by
    iteration). ``max_epochs=24`` makes the cosine span 24 epochs; the warm-up stays."""
    config = str(REPO_ROOT / 'configs/retinanet_r18_fpn_320_12e_bccd.py')
    warmup, cosine = load_config(config, {'train_cfg.max_epochs': 24}).param_scheduler
    assert (cosine.T_max, cosine.end, cosine.begin) == (24, 24, 0)
    assert (warmup.end, warmup.by_epoch) == (100, False)
    # iteration-based: the poly decay follows max_iters, its 10-iteration warm-up does not
    config = str(REPO_ROOT / 'configs/deeplabv3plus_r18-d16_600it_camvid.py')
    warmup, poly = load_config(config, {'train_cfg.max_iters': 300}).param_scheduler
    assert (warmup.end, poly.end) == (10, 300)
    # a schedule the user overrides too is left as written
    cfg = load_config(config, {'train_cfg.max_iters': 300, 'param_scheduler': []})
    assert cfg.param_scheduler == []


def test_cfg_option_typos_and_broken_configs_name_the_key_or_file(tmp_path):
    config = str(REPO_ROOT / 'configs/retinanet_r18_fpn_160_demo.py')
    with pytest.raises(ConfigError, match="'optim_wraper' is not a key of .*did you mean "
                                          "'optim_wrapper'"):
        load_config(config, {'optim_wraper.optimizer.lr': 0.1})
    assert load_config(config, {'per_sample_seeding': False}).per_sample_seeding is False
    broken = tmp_path / 'broken.py'
    broken.write_text("model = dict(type='x'\n")
    with pytest.raises(ConfigError, match=f'config file {broken}: syntax error'):
        load_config(str(broken))
    failing = tmp_path / 'failing.py'
    failing.write_text('x = 1 / 0\n')
    with pytest.raises(ConfigError, match=f'config file {failing}: cannot be read: '
                                          'ZeroDivisionError'):
        load_config(str(failing))
