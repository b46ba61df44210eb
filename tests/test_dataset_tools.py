"""Dataset tools: converters to COCO (toolbox.datasets.converters, tools/dataset_converters),
the COCO validator (tools/check_dataset.py ANN.json), box statistics (tools/dataset_stats.py)
and the configs index (docs/configs.md)."""
import importlib.util
import json
import re

import cv2
import numpy as np
import pytest

from toolbox.datasets import CocoDataset, VOCDataset
from toolbox.datasets.coco_validation import validate_coco
from toolbox.datasets.converters import (ConversionError, labelme_to_coco, voc_to_coco,
                                         write_coco, yolo_to_coco)

from .conftest import REPO_ROOT, shared_data


def _tool(relative):
    path = REPO_ROOT / 'tools' / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _image(path, width, height):
    cv2.imwrite(str(path), np.full((height, width, 3), 128, np.uint8))


def _coco_dataset(ann_file, img_root, **kwargs):
    return CocoDataset(ann_file=str(ann_file), data_prefix=dict(img=str(img_root) + '/'),
                       pipeline=[], data_check=False, test_mode=True, **kwargs)


def _read_back(dataset):
    """(file name, (w, h), xyxy boxes, labels, ignore flags) of every image."""
    rows = []
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        inst = info['instances']
        rows.append((info['img_path'].rsplit('/', 1)[-1], (info['width'], info['height']),
                     np.array([i['bbox'] for i in inst], np.float64).reshape(-1, 4),
                     [i['bbox_label'] for i in inst], [i['ignore_flag'] for i in inst]))
    return rows


def _problems(problems):
    return {(p.file.replace('\\', '/').rsplit('/', 1)[-1], p.field) for p in problems}


# ------------------------------------------------------------------------------------ VOC
def test_bccd_converted_to_coco_reads_back_as_the_voc_dataset_reads_it(tmp_path):
    root = shared_data('bccd')
    classes = ('RBC', 'WBC', 'Platelets')
    split = 'ImageSets/Main/trainval.txt'
    with pytest.raises(ConversionError) as info:
        voc_to_coco(str(root), split, classes)
    # the two degenerate BCCD boxes, both reported in one run with file and field
    assert _problems(info.value.problems) == {('BloodImage_00338.xml', 'object[12].bndbox'),
                                              ('BloodImage_00343.xml', 'object[3].bndbox')}
    result = voc_to_coco(str(root), split, classes, skip_invalid=True)
    assert (result.dropped_annotations, result.dropped_images) == (2, 0)
    assert len(result.coco['images']) == 292 and len(result.coco['annotations']) == 3941
    assert [c['name'] for c in result.coco['categories']] == list(classes)
    assert validate_coco(result.coco) == []
    ann = tmp_path / 'bccd.json'
    write_coco(result.coco, str(ann))
    coco = _coco_dataset(ann, root / 'JPEGImages')
    voc = VOCDataset(ann_file=str(root / split), metainfo=dict(classes=classes),
                     data_prefix=dict(img=str(root / 'JPEGImages'),
                                      ann=str(root / 'Annotations')),
                     pipeline=[], data_check=False, test_mode=True)
    assert coco.metainfo['classes'] == classes and len(coco) == len(voc) == 292
    for got, expected in zip(_read_back(coco), _read_back(voc)):
        assert got[:2] == expected[:2] and got[3:] == expected[3:]
        assert np.array_equal(got[2], expected[2])  # exact, every box
    assert sum(len(row[3]) for row in _read_back(coco)) == 3941


def _voc_sample(root):
    """a: 40x30, a difficult cat over the whole image and a dog at fractional VOC coordinates;
    b: no size in the xml (50x20 on disk), an unknown class, a box beyond the image, a box
    without xmax; c: its image is missing."""
    (root / 'Annotations').mkdir(parents=True)
    (root / 'JPEGImages').mkdir()
    _image(root / 'JPEGImages' / 'a.jpg', 40, 30)
    _image(root / 'JPEGImages' / 'b.jpg', 50, 20)

    def obj(name, box, difficult=0):
        coords = ''.join(f'<{t}>{v}</{t}>' for t, v in zip(('xmin', 'ymin', 'xmax', 'ymax'), box)
                         if v is not None)
        return (f'<object><name>{name}</name><difficult>{difficult}</difficult>'
                f'<bndbox>{coords}</bndbox></object>')
    xml = {'a': '<size><width>40</width><height>30</height></size>'
                + obj('cat', (1, 1, 40, 30), 1) + obj('dog', (2.5, 3, 10, 12)),
           'b': obj('bird', (1, 1, 5, 5)) + obj('cat', (1, 1, 60, 10)) +
                obj('dog', (1, 1, None, 10)),
           'c': '<filename>c.jpg</filename>' + obj('cat', (1, 1, 5, 5))}
    for name, body in xml.items():
        (root / 'Annotations' / f'{name}.xml').write_text(f'<annotation>{body}</annotation>')


def test_voc_problems_are_listed_together_and_difficult_boxes_stay_ignored(tmp_path):
    _voc_sample(tmp_path)
    with pytest.raises(ConversionError) as info:
        voc_to_coco(str(tmp_path), classes=('cat', 'dog'))
    assert _problems(info.value.problems) == {
        ('b.xml', 'object[0].bndbox'),  # class 'bird'
        ('b.xml', 'object[1].bndbox'),  # xmax 60 in a 50-wide image
        ('b.xml', 'object[2].bndbox'),  # no xmax
        ('c.xml', 'filename')}  # missing image
    message = str(info.value)
    assert "class 'bird' is not in classes" in message and 'outside the 50x20 image' in message
    assert 'c.jpg' in message and 'does not exist' in message

    result = voc_to_coco(str(tmp_path), classes=('cat', 'dog'), skip_invalid=True)
    assert (result.dropped_images, result.dropped_annotations) == (1, 4)
    images = result.coco['images']
    assert [(i['file_name'], i['width'], i['height']) for i in images] == \
        [('a.jpg', 40, 30), ('b.jpg', 50, 20)]  # b's size read from the image header
    anns = result.coco['annotations']
    assert [a['bbox'] for a in anns] == [[0.0, 0.0, 40.0, 30.0], [1.5, 2.0, 8.5, 10.0]]
    assert [(a['iscrowd'], a['difficult'], a['area']) for a in anns] == \
        [(1, 1, 1200.0), (0, 0, 85.0)]
    ann = tmp_path / 'ann.json'
    write_coco(result.coco, str(ann))
    (tmp_path / 'a.txt').write_text('a\n')
    coco = _read_back(_coco_dataset(ann, tmp_path / 'JPEGImages'))
    voc = _read_back(VOCDataset(ann_file=str(tmp_path / 'a.txt'),
                                metainfo=dict(classes=('cat', 'dog')),
                                data_prefix=dict(img=str(tmp_path / 'JPEGImages'),
                                                 ann=str(tmp_path / 'Annotations')),
                                pipeline=[], data_check=False, test_mode=True))
    assert np.array_equal(coco[0][2], voc[0][2]) and coco[0][3:] == voc[0][3:] == \
        ([0, 1], [1, 0])
    kept = voc_to_coco(str(tmp_path), 'a.txt', ('cat', 'dog'), difficult='keep')
    assert [a['iscrowd'] for a in kept.coco['annotations']] == [0, 0]
    dropped = voc_to_coco(str(tmp_path), 'a.txt', ('cat', 'dog'), difficult='drop')
    assert [a['category_id'] for a in dropped.coco['annotations']] == [2]
    # without classes: the sorted names found, so 'bird' becomes a category
    found = voc_to_coco(str(tmp_path), skip_invalid=True)
    assert [c['name'] for c in found.coco['categories']] == ['bird', 'cat', 'dog']


def test_the_converter_command_fails_listing_problems_then_skips_them(tmp_path, capsys):
    _voc_sample(tmp_path)
    tool = _tool('dataset_converters/to_coco.py')
    out = tmp_path / 'out.json'
    args = ['voc', str(tmp_path), '--classes', 'cat', 'dog', '--out', str(out)]
    assert tool.main(args) == 1 and not out.exists()
    printed = capsys.readouterr().out
    assert '4 problem(s); nothing written' in printed and 'b.xml: object[2].bndbox' in printed
    assert tool.main(args + ['--skip-invalid']) == 0
    printed = capsys.readouterr().out
    assert '2 images, 2 annotations, 2 categories; 4 problem(s): dropped 4 annotations and ' \
        '1 images' in printed
    assert len(json.loads(out.read_text())['annotations']) == 2


# -------------------------------------------------------------------------------- labelme
def _labelme(path, image, shapes, size=(64, 48)):
    doc = dict(version='5.4.1', imagePath=image, shapes=shapes, imageData=None)
    if size is not None:
        doc.update(imageWidth=size[0], imageHeight=size[1])
    path.write_text(json.dumps(doc))


def test_labelme_rectangles_and_polygons(tmp_path):
    ann_dir, img_dir = tmp_path / 'ann', tmp_path / 'img'
    ann_dir.mkdir()
    img_dir.mkdir()
    _image(img_dir / 'one.png', 64, 48)
    _image(img_dir / 'two.png', 32, 16)
    _labelme(ann_dir / 'one.json', '../img/one.png', [
        dict(label='person', shape_type='rectangle', points=[[40, 36], [8, 12]]),
        dict(label='car', shape_type='polygon', points=[[0, 0], [20, 0], [0, 10]])])
    _labelme(ann_dir / 'two.json', '../img/two.png', [
        dict(label='car', shape_type='circle', points=[[5, 5], [8, 8]]),
        dict(label='car', shape_type='rectangle', points=[[1, 1], [2, 2], [3, 3]]),
        dict(label='car', shape_type='rectangle', points=[[4, 2], [40, 8]]),  # beyond x = 32
        dict(label='car', shape_type='polygon', points=[[1, 1], [9, 1], [9, 5]])], size=None)
    _labelme(ann_dir / 'three.json', '../img/three.png', [])
    (ann_dir / 'four.json').write_text('{"shapes": [')
    with pytest.raises(ConversionError) as info:
        labelme_to_coco(str(ann_dir), str(img_dir))
    assert _problems(info.value.problems) == {
        ('two.json', 'shapes[0].shape_type'), ('two.json', 'shapes[1].points'),
        ('two.json', 'shapes[2].points'), ('three.json', 'imagePath'), ('four.json', 'json')}
    result = labelme_to_coco(str(ann_dir), str(img_dir), skip_invalid=True)
    assert (result.dropped_images, result.dropped_annotations) == (2, 3)  # three, four
    coco = result.coco
    assert [c['name'] for c in coco['categories']] == ['car', 'person']  # sorted
    assert [(i['file_name'], i['width'], i['height']) for i in coco['images']] == \
        [('one.png', 64, 48), ('two.png', 32, 16)]  # two's size from its header
    anns = coco['annotations']
    assert [a['bbox'] for a in anns] == [[8.0, 12.0, 32.0, 24.0], [0.0, 0.0, 20.0, 10.0],
                                         [1.0, 1.0, 8.0, 4.0]]
    assert [a['area'] for a in anns] == [768.0, 100.0, 16.0]  # triangle areas by shoelace
    assert anns[1]['segmentation'] == [[0.0, 0.0, 20.0, 0.0, 0.0, 10.0]]
    assert 'segmentation' not in anns[0] and validate_coco(coco) == []
    ann = tmp_path / 'coco.json'
    write_coco(coco, str(ann))
    rows = _read_back(_coco_dataset(ann, img_dir))
    assert rows[0][2].tolist() == [[8, 12, 40, 36], [0, 0, 20, 10]] and rows[0][3] == [1, 0]
    assert rows[1][2].tolist() == [[1, 1, 9, 5]]


# ----------------------------------------------------------------------------------- YOLO
def _yolo_sample(root):
    """a.png 64x48 with a dog [8, 12, 40, 36] and a cat over the whole image, then five bad
    lines; b.png without labels; orphan.txt without an image."""
    root.mkdir(exist_ok=True)
    _image(root / 'a.png', 64, 48)
    _image(root / 'b.png', 32, 32)
    (root / 'classes.txt').write_text('cat\ndog\n')
    (root / 'a.txt').write_text('1 0.375 0.5 0.5 0.5\n0 0.5 0.5 1 1\n\n'
                                '2 0.5 0.5 0.1 0.1\n'  # line 4: no class 2
                                '0 0.5 0.5\n'  # line 5: three fields
                                '0 0.9 0.5 0.5 0.5\n'  # line 6: reaches x = 73.6 > 64
                                '0 abc 0.5 0.1 0.1\n'  # line 7: not a number
                                '1 0.5 0.5 0 0.2\n')  # line 8: zero width
    (root / 'orphan.txt').write_text('0 0.5 0.5 0.2 0.2\n')


def test_yolo_labels_with_known_boxes(tmp_path):
    root = tmp_path / 'yolo'
    _yolo_sample(root)
    with pytest.raises(ConversionError) as info:
        yolo_to_coco(str(root))
    assert _problems(info.value.problems) == {('a.txt', f'line {n}') for n in range(4, 9)} | \
        {('orphan.txt', 'image')}
    assert 'class 2 is not an index into the 2 names' in str(info.value)
    result = yolo_to_coco(str(root), skip_invalid=True)
    assert (result.dropped_images, result.dropped_annotations) == (0, 6)
    coco = result.coco
    assert [c['name'] for c in coco['categories']] == ['cat', 'dog']
    assert [(i['file_name'], i['width'], i['height']) for i in coco['images']] == \
        [('a.png', 64, 48), ('b.png', 32, 32)]
    ann = tmp_path / 'coco.json'
    write_coco(coco, str(ann))
    rows = _read_back(_coco_dataset(ann, root))
    assert rows[0][2].tolist() == [[8, 12, 40, 36], [0, 0, 64, 48]] and rows[0][3] == [1, 0]
    assert rows[1][2].shape == (0, 4)
    # names given explicitly (a yaml with an index -> name mapping) give the same result
    (tmp_path / 'data.yaml').write_text('names:\n  0: cat\n  1: dog\n')
    again = yolo_to_coco(str(root), classes=str(tmp_path / 'data.yaml'), skip_invalid=True)
    assert again.coco == coco


# ------------------------------------------------------------------------------ validator
def test_the_coco_validator_reports_every_problem_of_a_file_in_one_run(tmp_path, capsys):
    img = tmp_path / 'img'
    img.mkdir()
    _image(img / 'a.jpg', 40, 30)
    _image(img / 'b.jpg', 20, 20)
    coco = dict(
        images=[dict(id=1, file_name='a.jpg', width=40, height=30),
                dict(id=2, file_name='b.jpg', width=25, height=20),  # b.jpg is 20x20
                dict(id=1, file_name='c.jpg', width=10, height=10),  # duplicate id, no file
                dict(id=4, file_name='d.jpg', height=10)],  # no width, no file
        annotations=[dict(id=1, image_id=1, category_id=1, bbox=[1, 1, 5, 5]),  # valid
                     dict(id=1, image_id=1, category_id=1, bbox=[1, 1, 5, 5]),  # id again
                     dict(id=3, image_id=9, category_id=1, bbox=[1, 1, 5, 5]),
                     dict(id=4, image_id=1, category_id=7, bbox=[1, 1, 5, 5]),
                     dict(id=5, image_id=1, category_id=1, bbox=[1, 1, -5, 5]),
                     dict(id=6, image_id=1, category_id=1, bbox=[30, 20, 20, 5]),
                     dict(id=7, image_id=1, category_id=1, bbox=[1, 1, 5], iscrowd=2),
                     dict(id=8, image_id=1, category_id=1, bbox=[1, 1, 5, 5],
                          segmentation=[[1, 2, 3]], area=-1)],
        categories=[dict(id=1, name='a'), dict(id=2)])
    ann = tmp_path / 'broken.json'
    ann.write_text(json.dumps(coco))
    expected = {'images[2].id', 'images[3].width', 'images[1].width/height',
                'images[2].file_name', 'images[3].file_name', 'annotations[1].id',
                'annotations[2].image_id', 'annotations[3].category_id', 'annotations[4].bbox',
                'annotations[5].bbox', 'annotations[6].bbox', 'annotations[6].iscrowd',
                'annotations[7].segmentation', 'annotations[7].area', 'categories[1].name'}
    problems = validate_coco(str(ann), str(img), decode=True)
    assert {p.field for p in problems} == expected and len(problems) == len(expected)
    assert {p.field for p in validate_coco(coco)} == expected - {
        'images[1].width/height', 'images[2].file_name', 'images[3].file_name'}
    assert [p.field for p in validate_coco(str(tmp_path / 'missing.json'))] == ['json']
    tool = _tool('check_dataset.py')
    assert tool.main([str(ann), '--img-root', str(img)]) == 1
    printed = capsys.readouterr().out
    assert f'{ann}: 15 problem(s)' in printed
    assert 'annotations[5].bbox: box [30.0, 20.0, 20.0, 5.0] (xywh) lies outside the 40x30 ' \
        'image' in printed
    assert 'images[1].width/height: declares 25x20' in printed


# ------------------------------------------------------------------------- box statistics
def test_box_statistics_per_class_from_hand_made_boxes():
    tool = _tool('dataset_stats.py')
    boxes = [[0, 0, 10, 10], [0, 0, 20, 10], [0, 0, 30, 10], [0, 0, 40, 10],  # class 0
             [0, 0, 40, 40], [5, 5, 105, 105], [0, 0, 5, 5]]  # class 1, the last ignored
    labels = [0, 0, 0, 0, 1, 1, 1]
    ignored = [0, 0, 0, 0, 0, 0, 1]
    rows = tool.box_table(boxes, labels, ('a', 'b', 'c'), ignored)
    a, b, c, total = rows
    assert (a['count'], a['ignored'], a['small'], a['medium'], a['large']) == (4, 0, 4, 0, 0)
    # linear percentiles of widths 10, 20, 30, 40: 10 + 0.05 * 3 * 10 = 11.5, 25, 38.5
    assert (a['width_p5'], a['width_p50'], a['width_p95']) == pytest.approx((11.5, 25, 38.5))
    assert (a['height_p5'], a['height_p95'], a['area_p50'], a['aspect_p50']) == \
        pytest.approx((10, 10, 250, 2.5))
    # 40 x 40 = 1600 is medium (>= 32^2), 100 x 100 = 10000 large (>= 96^2)
    assert (b['count'], b['ignored'], b['small'], b['medium'], b['large']) == (2, 1, 0, 1, 1)
    assert b['width_p50'] == pytest.approx(70) and b['aspect_p50'] == pytest.approx(1)
    assert (c['count'], c['width_p50'], c['small']) == (0, None, 0)
    assert total['name'] == 'all' and total['index'] is None
    assert (total['count'], total['ignored'], total['small'], total['medium'],
            total['large']) == (6, 1, 4, 1, 1)
    assert total['width_p50'] == pytest.approx(35)  # median of 10 20 30 40 40 100
    # the COCO limits: 1023 px small, 32^2 medium, 96^2 large
    edges = tool.box_table([[0, 0, 31, 33], [0, 0, 32, 32], [0, 0, 96, 96]], [0, 0, 0], ('a',))
    assert [edges[0][k] for k in ('small', 'medium', 'large')] == [1, 1, 1]


def test_dataset_stats_json_has_box_statistics(tmp_path, capsys):
    root = tmp_path / 'yolo'
    _yolo_sample(root)
    ann = tmp_path / 'coco.json'
    write_coco(yolo_to_coco(str(root), skip_invalid=True).coco, str(ann))
    config = tmp_path / 'stats_config.py'
    config.write_text(f'train_dataloader = dict(dataset=dict(type="CocoDataset", '
                      f'ann_file="{ann}", data_prefix=dict(img="{root}/"), pipeline=[], '
                      f'data_check=False))\n')
    tool = _tool('dataset_stats.py')
    tool.main([str(config), '--json', '--percentiles', '50'])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    boxes = {row['name']: row for row in result['boxes']}
    # dog 32 x 24 (768 px, small), cat 64 x 48 (3072 px, medium)
    assert (boxes['dog']['count'], boxes['dog']['width_p50'], boxes['dog']['height_p50'],
            boxes['dog']['small']) == (1, 32.0, 24.0, 1)
    assert (boxes['cat']['area_p50'], boxes['cat']['medium']) == (3072.0, 1)
    assert boxes['all']['count'] == 2 and result['num_images'] == 2


# -------------------------------------------------------------------------- configs index
def _section(text, start, stop=None):
    begin = text.index(start)
    end = text.index(stop, begin + len(start)) if stop and stop in text[begin + len(start):] \
        else len(text)
    return text[begin:end]


def _has_number(text, number):
    """``number`` (e.g. '42.8') occurs in ``text`` as a whole number, not inside '42.87'."""
    return re.search(rf'(?<![\d.]){re.escape(number)}(?!\d)', text) is not None


def _index_rows():
    """``{config file name: (reference cell, ours cell)}`` from docs/configs.md's tables."""
    rows = {}
    for line in (REPO_ROOT / 'docs' / 'configs.md').read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        match = re.fullmatch(r'`([\w.\-]+\.py)`', cells[0]) if line.startswith('|') else None
        if match:
            rows[match.group(1)] = (cells[-2], cells[-1])
    return rows


def test_every_config_is_in_the_index_with_numbers_from_readme():
    configs = sorted(p.name for p in (REPO_ROOT / 'configs').glob('*.py'))
    rows = _index_rows()
    missing = [name for name in configs if name not in rows]
    assert not missing, f'docs/configs.md does not list {missing}'
    assert not set(rows) - set(configs), 'docs/configs.md lists configs that do not exist'
    results = _section((REPO_ROOT / 'README.md').read_text(), '## Results', '## Benchmarks')
    for name, (_, ours) in rows.items():
        assert ours == 'not run' or re.findall(r'\d+\.\d+', ours), (name, ours)
        for number in re.findall(r'\d+\.\d+', ours):
            assert _has_number(results, number), \
                f'{name}: {number} is not in the README Results section'


def test_reference_numbers_in_the_index_are_in_the_cited_anchors_section():
    anchors_path = REPO_ROOT.parent / 'shared' / 'reference' / 'ANCHORS.md'
    if not anchors_path.exists():
        pytest.skip(f'{anchors_path} is not available on this machine')
    anchors = anchors_path.read_text()
    cited = 0
    for name, (reference, _) in _index_rows().items():
        sections = re.findall(r'§(\d+(?:\.\d+)?)', reference)
        numbers = re.findall(r'\d+\.\d+', re.sub(r'§\d+(?:\.\d+)?', '', reference))
        if reference.startswith('—'):
            assert not numbers, (name, reference)  # no reference: no number either
            continue
        assert sections, f'{name}: a reference number must cite its ANCHORS.md section'
        bodies = ''
        for section in sections:
            heading = re.search(rf'^#+ {re.escape(section)}[ .]', anchors, re.M)
            assert heading, f'{name}: ANCHORS.md has no section {section}'
            following = re.compile(r'^#{2,3} \d', re.M).search(anchors, heading.end())
            bodies += anchors[heading.start():following.start() if following else None]
        for number in numbers:
            assert _has_number(bodies, number), \
                f'{name}: {number} is not in ANCHORS.md §{sections}'
        cited += 1
    assert cited == 20
